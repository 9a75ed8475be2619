"""Issue 13, class 4 (data): every bad record is reported with its file and id and skipped, the data kept is right,
and a split with nothing usable left stops before training with one error naming the file."""

from __future__ import annotations

import json
import math
import warnings
from pathlib import Path
from typing import Any

import cv2
import numpy as np
import pytest

from vision.data import (
    BadSampleWarning,
    CocoDetection,
    DataError,
    DataSummaryWarning,
    ImageFolder,
    VOCDetection,
)

H, W = 20, 30


def _png(path: Path, seed: int = 0) -> None:
    path.parent.mkdir(parents=True, exist_ok=True)
    rgb = np.random.default_rng(seed).integers(0, 256, size=(H, W, 3), dtype=np.uint8)
    assert cv2.imwrite(str(path), rgb)


def _ann(ann_id: int, image_id: Any, bbox: Any, category_id: Any = 1) -> dict[str, Any]:
    return {"id": ann_id, "image_id": image_id, "category_id": category_id, "bbox": bbox, "iscrowd": 0, "area": 1.0}


def _coco(tmp_path: Path, images: list[tuple[int, str]], anns: list[dict[str, Any]]) -> tuple[Path, Path]:
    """Write the PNGs named in ``images`` and a COCO json with one category (id 1); returns (images_dir, json)."""
    images_dir = tmp_path / "images"
    for seed, name in enumerate(sorted({n for _, n in images})):
        _png(images_dir / name, seed)
    data = {
        "images": [{"id": i, "file_name": n, "width": W, "height": H} for i, n in images],
        "annotations": anns,
        "categories": [{"id": 1, "name": "thing"}],
    }
    ann_file = tmp_path / "train.json"
    ann_file.write_text(json.dumps(data))  # NaN / Infinity are written as JSON extensions, as other tools do
    return images_dir, ann_file


def _build(*args: Any, cls: type = CocoDetection, **kwargs: Any) -> tuple[Any, list[str], list[str]]:
    """The data set, its problem warnings and its summary warnings."""
    with warnings.catch_warnings(record=True) as caught:
        warnings.simplefilter("always")
        ds = cls(*args, **kwargs)
    problems = [str(w.message) for w in caught if issubclass(w.category, BadSampleWarning)]
    summaries = [str(w.message) for w in caught if issubclass(w.category, DataSummaryWarning)]
    return ds, problems, summaries


def _boxes(ds: CocoDetection) -> dict[str, list[list[float]]]:
    """File name -> boxes of the targets the data set yields."""
    out = {}
    for i in range(len(ds)):
        _, target = ds[i]
        out[Path(ds.records[i].file).name] = target["boxes"].tolist()
    return out


def test_duplicate_image_id_is_reported_and_never_gets_the_other_files_boxes(tmp_path: Path) -> None:
    images = [(1, "a.png"), (1, "b.png"), (2, "c.png"), (3, "d.png"), (3, "d.png")]
    anns = [_ann(10, 1, [1, 1, 5, 5]), _ann(11, 1, [10, 2, 8, 8]), _ann(12, 2, [2, 2, 4, 4]), _ann(13, 3, [3, 3, 6, 6])]
    ds, problems, _ = _build(*_coco(tmp_path, images, anns))
    ann_file = str(tmp_path / "train.json")
    clash = [m for m in problems if "image id 1 " in m]
    assert len(clash) == 1 and ann_file in clash[0] and "'a.png'" in clash[0] and "'b.png'" in clash[0]
    repeat = [m for m in problems if "image id 3 " in m]
    assert len(repeat) == 1 and ann_file in repeat[0] and "'d.png'" in repeat[0] and "2 times" in repeat[0]
    # neither file of id 1 is used, so annotations 10 and 11 reach no image; the exact repeat of d.png is kept once
    assert _boxes(ds) == {"c.png": [[2.0, 2.0, 6.0, 6.0]], "d.png": [[3.0, 3.0, 9.0, 9.0]]}
    assert sorted(ds.coco.imgs) == [2, 3] and sorted(ds.coco.anns) == [12, 13]  # evaluation sees the same
    assert [e.reason for e in ds.bad_samples["duplicate_id"]] == ["duplicate_id"] * 2


def test_annotation_with_unknown_image_or_category_id_is_reported_and_skipped(tmp_path: Path) -> None:
    anns = [_ann(20, 1, [1, 1, 5, 5]), _ann(21, 99, [1, 1, 5, 5]), _ann(22, 1, [2, 2, 5, 5], category_id=42)]
    ds, problems, _ = _build(*_coco(tmp_path, [(1, "a.png")], anns))
    unknown_image = [m for m in problems if "annotation 21" in m]
    assert len(unknown_image) == 1 and str(tmp_path / "train.json") in unknown_image[0]
    assert "unknown image id 99" in unknown_image[0]
    unknown_cat = [m for m in problems if "annotation 22" in m]
    assert len(unknown_cat) == 1 and "unknown category id 42" in unknown_cat[0]
    assert str(tmp_path / "train.json") in unknown_cat[0] and "a.png" in unknown_cat[0]
    assert _boxes(ds) == {"a.png": [[1.0, 1.0, 6.0, 6.0]]}
    assert ds[0][1]["labels"].tolist() == [0] and sorted(ds.coco.anns) == [20]


@pytest.mark.parametrize(
    "bbox",
    [
        ["x", 1, 2, 3],
        [1, 2, "3", 4],
        [float("nan"), 1, 2, 3],
        [1, 1, float("inf"), 3],
        [1, 2, 3],
        [1, 2, 3, 4, 5],
        [4, 4, -3, 5],
        [4, 4, 5, 0],
        None,
        "1,2,3,4",
        [True, 1, 2, 3],
    ],
    ids=["string", "numeric-string", "nan", "inf", "three", "five", "neg-width", "zero-height", "none", "str", "bool"],
)
def test_bad_bbox_value_is_reported_with_file_id_and_value_and_skipped(tmp_path: Path, bbox: Any) -> None:
    anns = [_ann(7, 1, bbox), _ann(8, 1, [2, 3, 4, 5])]
    ds, problems, summaries = _build(*_coco(tmp_path, [(1, "a.png")], anns))
    about = [m for m in problems if "annotation 7" in m]
    assert len(about) == 1, problems
    assert str(tmp_path / "train.json") in about[0] and "a.png" in about[0] and repr(bbox) in about[0]
    assert _boxes(ds) == {"a.png": [[2.0, 3.0, 6.0, 8.0]]}  # the good box of the same image is kept
    assert sorted(ds.coco.anns) == [8]
    assert len(summaries) == 1 and "1 box(es) kept, 1 dropped" in summaries[0]


def test_non_finite_json_literals_are_caught(tmp_path: Path) -> None:
    images_dir, ann_file = _coco(tmp_path, [(1, "a.png")], [_ann(8, 1, [2, 3, 4, 5])])
    text = ann_file.read_text().replace('"annotations": [', '"annotations": [{"id": 9, "image_id": 1, '
                                        '"category_id": 1, "bbox": [1, NaN, Infinity, -Infinity]}, ')  # fmt: skip
    ann_file.write_text(text)
    ds, problems, _ = _build(images_dir, ann_file)
    assert any("annotation 9" in m and "nan" in m for m in problems) and sorted(ds.coco.anns) == [8]
    assert math.isfinite(sum(sum(b) for b in _boxes(ds)["a.png"]))


def test_malformed_json_names_path_line_and_column(tmp_path: Path) -> None:
    images_dir, ann_file = _coco(tmp_path, [(1, "a.png")], [])
    ann_file.write_text('{"images": [\n  {"id": 1, "file_name": "a.png",}\n]}')
    with pytest.raises(DataError, match=r"line 2, column 34") as err:
        CocoDetection(images_dir, ann_file)
    assert str(ann_file) in str(err.value) and "not valid JSON" in str(err.value)
    assert isinstance(err.value, ValueError)  # the CLI prints it as one `error:` line
    (tmp_path / "top.json").write_text("[1, 2]")
    with pytest.raises(DataError, match=r"top\.json: not a COCO annotation file"):
        CocoDetection(images_dir, tmp_path / "top.json")


def test_empty_annotation_set_stops_before_training_naming_the_file(tmp_path: Path) -> None:
    images_dir, ann_file = _coco(tmp_path, [(1, "a.png"), (2, "b.png")], [])
    with pytest.raises(DataError, match="nothing usable is left") as err:
        CocoDetection(images_dir, ann_file)
    assert str(ann_file) in str(err.value) and "has no annotations" in str(err.value)
    assert len(CocoDetection(images_dir, ann_file, require_boxes=False)) == 2  # an image-only file, on request

    _coco(tmp_path, [(1, "a.png"), (2, "b.png")], [_ann(5, 1, ["x", 0, 1, 1]), _ann(6, 7, [1, 1, 2, 2])])
    with warnings.catch_warnings():
        warnings.simplefilter("ignore")
        with pytest.raises(DataError, match="nothing usable is left") as err:
            CocoDetection(images_dir, ann_file)
    assert str(ann_file) in str(err.value) and "0 box(es) kept, 2 dropped" in str(err.value)
    assert "2 bad_annotation" in str(err.value)


def test_images_without_boxes_are_background_not_an_error(tmp_path: Path) -> None:
    ds, problems, summaries = _build(*_coco(tmp_path, [(1, "a.png"), (2, "b.png")], [_ann(1, 1, [1, 1, 4, 4])]))
    assert problems == [] and summaries == []  # nothing dropped: no summary warning
    assert _boxes(ds) == {"a.png": [[1.0, 1.0, 5.0, 5.0]], "b.png": []}
    background = "1 image(s) without boxes kept as background"
    assert ds.summary() == f"2 image(s) kept, 0 dropped; 1 box(es) kept, 0 dropped; {background}"
    assert "summary: 2 image(s) kept" in ds.report()


def test_summary_line_counts_images_and_boxes_kept_and_dropped(tmp_path: Path) -> None:
    images = [(1, "a.png"), (2, "b.png"), (3, "missing.png")]
    anns = [_ann(1, 1, [1, 1, 4, 4]), _ann(2, 1, ["x", 1, 4, 4]), _ann(3, 2, [0, 0, 3, 3]), _ann(4, 3, [0, 0, 3, 3])]
    images_dir, ann_file = _coco(tmp_path, images[:2], anns)
    data = json.loads(ann_file.read_text())
    data["images"].append({"id": 3, "file_name": "missing.png", "width": W, "height": H})
    ann_file.write_text(json.dumps(data))
    ds, _, summaries = _build(images_dir, ann_file)
    assert summaries == [
        f"CocoDetection({ann_file}): 2 image(s) kept, 1 dropped; 2 box(es) kept, 2 dropped (see dataset.report())"
    ]
    assert _boxes(ds) == {"a.png": [[1.0, 1.0, 5.0, 5.0]], "b.png": [[0.0, 0.0, 3.0, 3.0]]}
    assert "missing.png" in ds.report() and "summary: 2 image(s) kept, 1 dropped" in ds.report()


def test_empty_image_folder_class_is_reported_and_not_a_class(tmp_path: Path) -> None:
    root = tmp_path / "folder"
    _png(root / "cat" / "a.png", 1)
    (root / "dog").mkdir()
    (root / "dog" / "notes.txt").write_text("no images here")
    _png(root / "fish" / "a.png", 2)
    ds, problems, summaries = _build(root, cls=ImageFolder)
    assert ds.classes == ["cat", "fish"] and ds.empty_classes == ["dog"]
    assert ds.targets == [0, 1] and [Path(p).parent.name for p, _ in ds.samples] == ["cat", "fish"]
    assert len(problems) == 1 and str(root / "dog") in problems[0] and "not made a class" in problems[0]
    assert (
        len(summaries) == 1 and "2 image(s) in 2 class(es) kept; 1 empty class folder(s) skipped: dog" in (summaries[0])
    )
    assert [e.file for e in ds.bad_samples["empty_class"]] == [str(root / "dog")]


def test_image_folder_without_usable_images_names_the_root(tmp_path: Path) -> None:
    root = tmp_path / "folder"
    (root / "cat").mkdir(parents=True)
    (root / "dog").mkdir()
    with warnings.catch_warnings():
        warnings.simplefilter("ignore")
        with pytest.raises(DataError, match="nothing usable is left") as err:
            ImageFolder(root)
    assert str(root) in str(err.value) and "cat, dog" in str(err.value)


def _voc(root: Path, name: str, image: str, objects: str) -> None:
    (root / "Annotations").mkdir(parents=True, exist_ok=True)
    (root / "Annotations" / f"{name}.xml").write_text(
        f"<annotation><filename>{image}</filename><size><width>{W}</width><height>{H}</height></size>"
        f"{objects}</annotation>"
    )


def _obj(name: str, xmin: str, ymin: str = "2", xmax: str = "9", ymax: str = "9") -> str:
    return (f"<object><name>{name}</name><bndbox><xmin>{xmin}</xmin><ymin>{ymin}</ymin><xmax>{xmax}</xmax>"
            f"<ymax>{ymax}</ymax></bndbox></object>")  # fmt: skip


def test_voc_bad_box_drops_only_its_object_and_a_shared_image_is_skipped(tmp_path: Path) -> None:
    root = tmp_path / "VOC"
    for i, image in enumerate(["a.png", "b.png"]):
        _png(root / "JPEGImages" / image, i)
    _voc(root, "a", "a.png", _obj("cat", "x") + _obj("cat", "2") + _obj("dog", "3", xmax="nan"))
    _voc(root, "b1", "b.png", _obj("dog", "2"))
    _voc(root, "b2", "b.png", _obj("cat", "3"))  # a second xml for b.png: which one is right is unknown
    ds, problems, summaries = _build(root, cls=VOCDetection)
    bad = [m for m in problems if "object 0" in m and "a.xml" in m]
    assert len(bad) == 1 and "'xmin': 'x'" in bad[0]
    assert any("object 2" in m and "a.xml" in m and "nan" in m for m in problems)
    shared = [m for m in problems if "b1.xml" in m and "b2.xml" in m]
    assert len(shared) == 1 and "'b.png'" in shared[0]
    assert [Path(r.file).name for r in ds.records] == ["a.png"]
    assert ds[0][1]["boxes"].tolist() == [[1.0, 1.0, 9.0, 9.0]]
    assert len(summaries) == 1 and "1 image(s) kept, 2 dropped; 1 box(es) kept, 4 dropped" in summaries[0]

    _voc(root, "b1", "b.png", _obj("dog", "x"))
    (root / "Annotations" / "a.xml").unlink()
    (root / "Annotations" / "b2.xml").unlink()
    with warnings.catch_warnings():
        warnings.simplefilter("ignore")
        with pytest.raises(DataError, match="nothing usable is left") as err:
            VOCDetection(root)
    assert str(root / "Annotations") in str(err.value)


def test_cli_prints_one_error_line_for_malformed_json(tmp_path: Path, capsys: pytest.CaptureFixture[str]) -> None:
    from vision.cli.train import main

    images_dir, ann_file = _coco(tmp_path, [(1, "a.png")], [_ann(1, 1, [1, 1, 4, 4])])
    ann_file.write_text('{"images": [\n  {"id": 1, "file_name": "a.png",}\n]}')
    spec = tmp_path / "data.yaml"
    spec.write_text(f"train: [{images_dir}, {ann_file}]\n")
    argv = ["task=detection", f"data={spec}", "epochs=1", "device=cpu", f"project={tmp_path / 'runs'}"]
    with pytest.raises(SystemExit) as exit_info:
        main(argv)
    assert exit_info.value.code == 2
    err = capsys.readouterr().err.strip().splitlines()
    assert err == [f"error: {ann_file}: not valid JSON: Expecting property name enclosed in double quotes at line 2, "
                   "column 34"]  # fmt: skip
