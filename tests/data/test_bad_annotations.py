"""A user's mistake in a COCO file or a data YAML: one clear error naming the thing at fault, or one report per
skipped record; never a traceback or a silently wrong result. Evaluation ground truth = what training keeps."""

from __future__ import annotations

import json
import warnings
from pathlib import Path
from typing import Any

import pytest
import torch

from vision.data import BadSampleWarning, CocoDetection, DataError
from vision.tasks.detection.coco_eval import coco_results, run_cocoeval
from vision.tasks.detection.data import load_data_spec

from .conftest import write_image

H, W = 30, 40


def _ann(ann_id: int, image_id: int, bbox: list[float], category_id: int = 1) -> dict[str, Any]:
    return {"id": ann_id, "image_id": image_id, "category_id": category_id, "bbox": bbox, "iscrowd": 0, "area": 9.0}


def _coco(tmp_path: Path, anns: list[dict[str, Any]], **top: Any) -> tuple[Path, Path]:
    """Two 40x30 PNGs (ids 1, 2) and a COCO json with the given annotations (``top`` replaces top-level keys)."""
    images_dir = tmp_path / "images"
    for i in (1, 2):
        write_image(images_dir / f"im{i}.png", H, W, seed=i)
    data = {
        "images": [{"id": i, "file_name": f"im{i}.png", "width": W, "height": H} for i in (1, 2)],
        "annotations": anns,
        "categories": [{"id": 1, "name": "cell"}, {"id": 2, "name": "blob"}],
        **top,
    }
    ann_file = tmp_path / "train.json"
    ann_file.write_text(json.dumps(data))  # inf / nan are written as the JSON extensions Infinity / NaN
    return images_dir, ann_file


def _build(*args: Any, **kwargs: Any) -> tuple[CocoDetection, list[str]]:
    with warnings.catch_warnings(record=True) as caught:
        warnings.simplefilter("always")
        ds = CocoDetection(*args, **kwargs)
    return ds, [str(w.message) for w in caught if issubclass(w.category, BadSampleWarning)]


def _no_warnings_raises(*args: Any) -> DataError:
    """The :class:`DataError` of ``CocoDetection(*args)``, checking that nothing was warned about before it."""
    with warnings.catch_warnings(record=True) as caught:
        warnings.simplefilter("always")
        with pytest.raises(DataError) as err:
            CocoDetection(*args)
    assert [str(w.message) for w in caught] == []
    return err.value


ANNS = [_ann(1, 1, [2, 2, 10, 10]), _ann(2, 1, [20, 5, 8, 8], 2), _ann(3, 2, [5, 5, 6, 6])]


@pytest.mark.parametrize("width", [float("inf"), float("nan"), "40", 40.5, -1, None, True])
def test_image_size_that_is_not_a_whole_number_skips_the_image_with_one_report(tmp_path: Path, width: Any) -> None:
    images_dir, ann_file = _coco(tmp_path, ANNS)
    data = json.loads(ann_file.read_text())
    data["images"][0]["width"] = width
    ann_file.write_text(json.dumps(data))
    ds, problems = _build(images_dir, ann_file)
    assert len(problems) == 1, problems  # the image record only: its annotations go with it, unreported one by one
    assert str(ann_file) in problems[0] and "images[0] (id 1, 'im1.png')" in problems[0]
    assert f"'width' {width!r} is not a whole number >= 0" in problems[0]
    assert ds.image_ids == [2] and sorted(ds.coco.imgs) == [2] and sorted(ds.coco.anns) == [3]
    assert ds.summary() == "1 image(s) kept, 1 dropped; 1 box(es) kept, 2 dropped"


def test_float_sizes_with_whole_values_are_accepted(tmp_path: Path) -> None:
    images_dir, ann_file = _coco(tmp_path, ANNS)
    ann_file.write_text(ann_file.read_text().replace(f'"width": {W}', f'"width": {W}.0'))
    ds, problems = _build(images_dir, ann_file)
    assert problems == [] and ds.image_ids == [1, 2] and ds.records[0].width == W


def test_duplicate_category_id_with_two_names_is_fatal_and_names_both(tmp_path: Path) -> None:
    cats = [{"id": 1, "name": "cell"}, {"id": 2, "name": "blob"}, {"id": 1, "name": "dup"}]
    err = _no_warnings_raises(*_coco(tmp_path, ANNS, categories=cats))
    assert str(tmp_path / "train.json") in str(err)
    assert "category id 1 is given to both 'cell' and 'dup' (categories[2])" in str(err)


def test_the_same_category_twice_is_kept_once(tmp_path: Path) -> None:
    cats = [{"id": 1, "name": "cell"}, {"id": 2, "name": "blob"}, {"id": 1, "name": "cell"}]
    ds, problems = _build(*_coco(tmp_path, ANNS, categories=cats))
    assert ds.classes == ["cell", "blob"]
    assert len(problems) == 1 and "category id 1 ('cell') is listed twice" in problems[0]


@pytest.mark.parametrize(
    ("categories", "what"),
    [(None, "has no 'categories' list"), ([], "has an empty 'categories' list")],
    ids=["absent", "empty"],
)
def test_annotations_without_categories_are_one_error(tmp_path: Path, categories: Any, what: str) -> None:
    images_dir, ann_file = _coco(tmp_path, ANNS)
    data = json.loads(ann_file.read_text())
    if categories is None:
        del data["categories"]
    else:
        data["categories"] = categories
    ann_file.write_text(json.dumps(data))
    err = _no_warnings_raises(images_dir, ann_file)  # not one 'unknown category id' report per annotation
    assert str(err).startswith(f"{ann_file}: the file {what}, so the classes of its 3 annotation(s) are unknown")


def test_missing_images_folder_is_one_error_naming_it(tmp_path: Path) -> None:
    _, ann_file = _coco(tmp_path, ANNS)
    err = _no_warnings_raises(tmp_path / "nope", ann_file)  # not one 'file does not exist' report per image
    assert str(err) == f"images folder '{tmp_path / 'nope'}' of {ann_file} does not exist"
    err = _no_warnings_raises(ann_file, ann_file)
    assert str(err) == f"images folder '{ann_file}' of {ann_file} is a file, not a folder"


def test_annotation_path_that_is_a_folder_or_missing_names_it(tmp_path: Path) -> None:
    images_dir, _ = _coco(tmp_path, ANNS)
    with pytest.raises(DataError, match=r"'.*images' is a folder, not a COCO JSON file"):
        CocoDetection(images_dir, images_dir)
    with pytest.raises(FileNotFoundError, match=r"annotation file '.*nothere\.json' does not exist"):
        CocoDetection(images_dir, tmp_path / "nothere.json")


def _yaml(tmp_path: Path, text: str) -> Path:
    _coco(tmp_path, ANNS)
    path = tmp_path / "data.yaml"
    path.write_text(text)
    return path


def test_data_yaml_syntax_error_is_one_line_with_line_and_column(tmp_path: Path) -> None:
    path = _yaml(tmp_path, "train: {images: images, annotations: train.json\nval: [\n")
    with pytest.raises(DataError) as err:
        load_data_spec(path)
    assert str(err.value) == (
        f"{path}: not valid YAML (line 2, column 4): expected ',' or '}}', but got ':' "
        "(while parsing a flow mapping from line 1)"
    )
    path.write_bytes(b"train: \xff\xfe\n")
    with pytest.raises(DataError, match="not valid YAML: not UTF-8 text"):
        load_data_spec(path)


@pytest.mark.parametrize(
    ("text", "message"),
    [
        ("train: [images, train.json]\nvalid: [images, train.json]\n",
         "{path}: unknown key 'valid' (did you mean 'val'?); known keys: path, train, val"),
        ("train: [images, train.json]\nnames: [cell, blob]\n",
         "{path}: unknown key 'names' (class names and their number come from the COCO JSON's 'categories'); known "
         "keys: path, train, val"),
        ("train: {imgs: images, annotations: train.json}\n",
         "{path}: train: unknown key 'imgs' (did you mean 'images'?); known keys: images, annotations"),
        ("path: 3\ntrain: [images, train.json]\n", "{path}: 'path' must be a folder name, got 3"),
    ],
    ids=["valid", "names", "imgs", "path-number"],
)  # fmt: skip
def test_unknown_data_yaml_key_is_refused_not_ignored(tmp_path: Path, text: str, message: str) -> None:
    path = _yaml(tmp_path, text)
    with pytest.raises(DataError) as err:
        load_data_spec(path)
    assert str(err.value) == message.format(path=path)


def test_coco_annotation_file_given_as_data_says_what_data_takes(tmp_path: Path) -> None:
    _, ann_file = _coco(tmp_path, ANNS)
    with pytest.raises(DataError) as err:
        load_data_spec(ann_file)
    message = str(err.value)
    assert message.startswith(f"{ann_file} is a COCO annotation file; data= takes a data YAML")
    assert f"annotations: {ann_file.name}" in message and "unknown key" not in message


def test_data_mapping_key_and_folder_paths_are_checked(tmp_path: Path) -> None:
    images_dir, ann_file = _coco(tmp_path, ANNS)
    with pytest.raises(DataError, match=r"^data: unknown key 'validation' \(did you mean 'val'\?\)"):
        load_data_spec({"train": [str(images_dir), str(ann_file)], "validation": [str(images_dir), str(ann_file)]})
    with pytest.raises(DataError) as err:
        load_data_spec({"train": {"images": str(images_dir), "annotations": str(images_dir)}})
    assert str(err.value) == f"data train annotations '{images_dir}' is a folder, not a COCO JSON file"
    with pytest.raises(DataError) as err:
        load_data_spec({"train": [str(ann_file), str(ann_file)]})
    assert str(err.value) == f"data train images '{ann_file}' is a file, not a folder of images"


def _own_targets_map(ds: CocoDetection) -> float:
    """COCO mAP of the data set's own targets scored as detections against its :attr:`coco` ground truth."""
    detections, ids = [], []
    for i in range(len(ds)):
        _, target = ds[i]
        detections.append({**target, "scores": torch.ones(len(target["labels"]))})
        ids.append(target["image_id"])
    stats, _, _ = run_cocoeval(ds.coco, coco_results(detections, ids, ds.label_to_cat_id), image_ids=ids)
    return stats["map"]


def test_evaluation_ground_truth_is_what_training_keeps(tmp_path: Path) -> None:
    anns = [*ANNS, _ann(4, 1, [30, 20, 20, 20]), _ann(5, 2, [50, 40, 5, 5])]  # partly / entirely outside 40x30
    ds, problems = _build(*_coco(tmp_path, anns))
    assert sum("clipped" in m and "annotation 4" in m for m in problems) == 1
    assert sum("entirely outside" in m and "annotation 5" in m for m in problems) == 1
    # the ground truth holds the clipped box (its area too, as it has no segmentation), not the dropped one
    assert ds.coco.anns[4]["bbox"] == [30.0, 20.0, 10.0, 10.0] and ds.coco.anns[4]["area"] == 100.0
    assert 5 not in ds.coco.anns and ds.coco.anns[1] == ANNS[0]  # untouched annotations are as given
    assert _own_targets_map(ds) == pytest.approx(1.0)


def test_wrong_annotated_size_blames_the_size_and_keeps_the_boxes(tmp_path: Path) -> None:
    images_dir, ann_file = _coco(tmp_path, [*ANNS, _ann(4, 1, [25, 18, 10, 10])])
    data = json.loads(ann_file.read_text())
    data["images"][0].update(width=W // 2, height=H // 2)  # says 20x15; the image is 40x30
    ann_file.write_text(json.dumps(data))
    ds, problems = _build(images_dir, ann_file)
    assert len(problems) == 1 and f"{images_dir / 'im1.png'}: image size differs from the annotation" in problems[0]
    assert problems[0].endswith("(annotation 20x15, image 40x30)")  # the size is blamed, no box clipped or dropped
    assert (ds.records[0].width, ds.records[0].height) == (W, H)
    assert (ds.coco.imgs[1]["width"], ds.coco.imgs[1]["height"]) == (W, H)
    _, target = ds[0]
    assert target["boxes"].tolist() == [[2.0, 2.0, 12.0, 12.0], [20.0, 5.0, 28.0, 13.0], [25.0, 18.0, 35.0, 28.0]]
    assert _own_targets_map(ds) == pytest.approx(1.0)
