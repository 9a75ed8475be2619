"""COCO (hand-written json, BCCD), VOC xml and synthetic shapes: labels, boxes and masks round-trip."""

from __future__ import annotations

import contextlib
import io
import json
from pathlib import Path

import numpy as np
import pytest
import torch
from torch.utils.data import DataLoader

from vision.data import (
    SHAPES,
    CocoDetection,
    SyntheticShapes,
    VOCDetection,
    bccd,
    detection_collate,
    masks_to_boxes,
)
from vision.data._bad import DataSummaryWarning
from vision.registry import DATASETS


def _pycocotools(ann_file: Path):
    from pycocotools.coco import COCO

    with contextlib.redirect_stdout(io.StringIO()):
        return COCO(str(ann_file))


def test_tiny_coco_labels_boxes_masks_match_pycocotools(tiny_coco: tuple[Path, Path]) -> None:
    images_dir, ann_file = tiny_coco
    ds = CocoDetection(images_dir, ann_file, masks=True)
    ref = _pycocotools(ann_file)
    assert ds.cat_ids == [1, 5, 9] and ds.classes == ["one", "five", "nine"]
    assert ds.label_to_cat_id == {0: 1, 1: 5, 2: 9}
    assert len(ds) == 3  # the image without annotations is kept
    for i in range(len(ds)):
        image, target = ds[i]
        assert image.dtype == torch.uint8 and image.shape == (3, 40, 50)
        assert target["boxes"].dtype == torch.float32 and target["labels"].dtype == torch.int64
        assert target["masks"].dtype == torch.uint8 and target["masks"].shape[1:] == (40, 50)
        anns = [a for a in ref.imgToAnns[target["image_id"]] if not a["iscrowd"]]
        assert len(anns) == len(target["boxes"]) == len(target["masks"])
        for k, a in enumerate(anns):
            x, y, w, h = a["bbox"]
            assert target["boxes"][k].tolist() == [x, y, x + w, y + h]
            assert ds.label_to_cat_id[int(target["labels"][k])] == a["category_id"]
            assert np.array_equal(target["masks"][k].numpy(), ref.annToMask(a))  # polygon, multi-part, RLE
    assert ds[2][1]["boxes"].shape == (0, 4) and ds[2][1]["masks"].shape == (0, 40, 50)
    assert "no bad samples" in ds.report() and "images without annotations: 1 (kept" in ds.report()


def test_tiny_coco_crowd_and_empty_options(tiny_coco: tuple[Path, Path]) -> None:
    images_dir, ann_file = tiny_coco
    ref = _pycocotools(ann_file)
    with_crowd = CocoDetection(images_dir, ann_file, masks=True, include_crowd=True)
    _, target = with_crowd[1]
    assert target["iscrowd"].tolist() == [0, 1]
    crowd_ann = ref.anns[4]
    assert np.array_equal(target["masks"][1].numpy(), ref.annToMask(crowd_ann))  # uncompressed RLE
    assert "iscrowd" not in CocoDetection(images_dir, ann_file)[1][1]
    assert len(CocoDetection(images_dir, ann_file, drop_empty=True)) == 2
    raw = json.loads(ann_file.read_text())
    from_dict = CocoDetection(images_dir, raw)
    assert torch.equal(from_dict[0][1]["boxes"], CocoDetection(images_dir, ann_file)[0][1]["boxes"])


def test_coco_through_a_dataloader(tiny_coco: tuple[Path, Path]) -> None:
    ds = CocoDetection(*tiny_coco, masks=True)
    images, targets = next(iter(DataLoader(ds, batch_size=3, collate_fn=detection_collate, num_workers=2)))
    assert images.shape == (3, 3, 40, 50) and [len(t["boxes"]) for t in targets] == [2, 1, 0]


def test_bccd_loads_as_is(bccd_dir: Path) -> None:
    train, val = bccd(split="train", root=bccd_dir), bccd(split="val", root=bccd_dir)
    assert (len(train), len(val)) == (292, 72)
    assert train.classes == ["RBC", "WBC", "Platelets"]
    assert sum(len(r.boxes) for r in train.records) == 3922
    assert sum(len(r.boxes) for r in val.records) == 964
    assert not train.bad_samples and not val.bad_samples
    image, target = val[0]
    assert image.shape == (3, 480, 640) and image.dtype == torch.uint8
    ref = _pycocotools(bccd_dir / "annotations" / "val.json")
    anns = ref.imgToAnns[target["image_id"]]
    expected = torch.tensor([[a["bbox"][0], a["bbox"][1], a["bbox"][0] + a["bbox"][2], a["bbox"][1] + a["bbox"][3]]
                             for a in anns])  # fmt: skip
    assert torch.allclose(target["boxes"], expected.float())
    assert target["labels"].tolist() == [a["category_id"] - 1 for a in anns]
    assert DATASETS.get("bccd").task == "detection"


def _voc_xml(name: str, width: int, height: int, objects: list[tuple[str, list[int], int]]) -> str:
    objs = "".join(
        f"<object><name>{n}</name><difficult>{d}</difficult><bndbox><xmin>{b[0]}</xmin><ymin>{b[1]}</ymin>"
        f"<xmax>{b[2]}</xmax><ymax>{b[3]}</ymax></bndbox></object>"
        for n, b, d in objects
    )
    return (f"<annotation><filename>{name}</filename><size><width>{width}</width><height>{height}</height>"
            f"<depth>3</depth></size>{objs}</annotation>")  # fmt: skip


def test_voc_detection(tmp_path: Path, image_writer) -> None:
    write_image = image_writer
    root = tmp_path / "VOC"
    write_image(root / "JPEGImages" / "a.jpg", 30, 40)
    write_image(root / "JPEGImages" / "b.jpg", 30, 40)
    (root / "Annotations").mkdir()
    (root / "Annotations" / "a.xml").write_text(
        _voc_xml("a.jpg", 40, 30, [("dog", [1, 1, 10, 20], 0), ("cat", [5, 5, 40, 30], 0), ("cat", [2, 2, 8, 8], 1)])
    )
    (root / "Annotations" / "b.xml").write_text(_voc_xml("b.jpg", 40, 30, [("cat", [11, 3, 20, 9], 0)]))
    (root / "Annotations" / "broken.xml").write_text("<annotation><filename>")
    (root / "ImageSets" / "Main").mkdir(parents=True)
    (root / "ImageSets" / "Main" / "train.txt").write_text("a\nb\n")
    with pytest.warns(UserWarning, match="broken.xml"):
        ds = VOCDetection(root)
    assert ds.classes == ["cat", "dog"] and len(ds) == 2
    image, target = ds[0]
    assert image.shape == (3, 30, 40)
    assert target["boxes"].tolist() == [[0.0, 0.0, 10.0, 20.0], [4.0, 4.0, 40.0, 30.0]]  # 1-based -> pixel edges
    assert target["labels"].tolist() == [1, 0]
    with pytest.warns(UserWarning, match="broken.xml"):
        with_difficult = VOCDetection((root / "JPEGImages", root / "Annotations"), include_difficult=True,
                                      classes=["dog", "cat"])  # fmt: skip
    _, target = with_difficult[0]
    assert target["labels"].tolist() == [0, 1, 1] and target["difficult"].tolist() == [0, 0, 1]
    assert len(VOCDetection(root, split="train")) == 2


def test_synthetic_contract_and_exact_masks() -> None:
    ds = SyntheticShapes(24, size=(96, 128), seed=3, classes=SHAPES, max_objects=8)
    assert ds.classes == list(SHAPES) and len(ds) == 24
    total = 0
    for i in range(len(ds)):
        image, target = ds[i]
        assert image.shape == (3, 96, 128) and image.dtype == torch.uint8
        masks = target["masks"]
        assert masks.shape == (len(target["boxes"]), 96, 128) and masks.dtype == torch.uint8
        assert target["labels"].dtype == torch.int64 and target["image_id"] == i
        assert np.array_equal(masks_to_boxes(masks.numpy()), target["boxes"].numpy())  # box = tight box of mask
        assert int((masks.sum(0) > 1).sum()) == 0  # visible parts: no pixel belongs to two instances
        assert bool((masks.flatten(1).sum(1) > 0).all())
        total += len(masks)
    assert total > 24  # several objects per image on average


def test_synthetic_is_deterministic_per_index() -> None:
    a = SyntheticShapes(10, size=64, seed=7)
    forward = [a[i] for i in range(10)]
    b = SyntheticShapes(10, size=64, seed=7)
    for i in reversed(range(10)):
        img, t = b[i]
        assert torch.equal(img, forward[i][0]) and torch.equal(t["boxes"], forward[i][1]["boxes"])
    loader = DataLoader(b, batch_size=5, num_workers=2, collate_fn=detection_collate)
    images = torch.cat([x for x, _ in loader])
    assert torch.equal(images, torch.stack([f[0] for f in forward]))
    assert not torch.equal(SyntheticShapes(10, size=64, seed=8)[0][0], forward[0][0])
    assert "masks" not in SyntheticShapes(2, size=64, masks=False)[0][1]


def test_synthetic_occlusion_visibility() -> None:
    ds = SyntheticShapes(30, size=64, seed=0, min_objects=6, max_objects=6, min_scale=0.25, max_scale=0.3,
                         min_visibility=0.5)  # fmt: skip
    kept = [len(ds[i][1]["boxes"]) for i in range(len(ds))]
    assert min(kept) >= 1 and max(kept) <= 6 and sum(kept) < 6 * len(ds)  # crowded: some shapes were dropped


def test_synthetic_to_coco_round_trip() -> None:
    from pycocotools.coco import COCO
    from pycocotools.cocoeval import COCOeval

    ds = SyntheticShapes(5, size=64, seed=1)
    gt = ds.to_coco()
    coco = COCO()
    coco.dataset = gt
    with contextlib.redirect_stdout(io.StringIO()):
        coco.createIndex()
        dets = coco.loadRes([{**a, "score": 1.0} for a in gt["annotations"]])
        ev = COCOeval(coco, dets, "segm")
        ev.evaluate()
        ev.accumulate()
        ev.summarize()
    assert ev.stats[0] == pytest.approx(1.0)
    _, target = ds[2]
    for k, a in enumerate(coco.imgToAnns[2]):
        assert np.array_equal(coco.annToMask(a), target["masks"][k].numpy())


def _roboflow(group_used: bool = False, group_super: str = "none") -> dict:
    """A Roboflow-style COCO export: its project as category 0, the supercategory of every real class."""
    cats = [{"id": 0, "name": "cells", "supercategory": group_super}] + [
        {"id": i, "name": n, "supercategory": "cells"} for i, n in enumerate(["RBC", "WBC", "Platelets"], 1)
    ]
    anns = [{"id": k + 1, "image_id": 0, "category_id": c, "bbox": [4 * k, 4, 8, 8], "area": 64, "iscrowd": 0}
            for k, c in enumerate([1, 2, 3, 1] + ([0] if group_used else []))]  # fmt: skip
    return {"images": [{"id": 0, "file_name": "a.jpg", "width": 64, "height": 64}], "annotations": anns,
            "categories": cats}  # fmt: skip


def test_roboflow_group_category_is_not_a_class(tmp_path: Path) -> None:
    with pytest.warns(DataSummaryWarning, match="category 'cells' .* is not a class"):
        ds = CocoDetection(tmp_path, _roboflow(), check_files=False)
    assert ds.classes == ["RBC", "WBC", "Platelets"] and ds.label_to_cat_id == {0: 1, 1: 2, 2: 3}
    assert sorted(set(ds.records[0].labels.tolist())) == [0, 1, 2] and ds.group_category == "cells"
    assert [c["id"] for c in ds.coco.dataset["categories"]] == [1, 2, 3]  # the evaluation ground truth too
    # a category that boxes use, or one that is not every other's supercategory, stays a class
    assert CocoDetection(tmp_path, _roboflow(group_used=True), check_files=False).classes[0] == "cells"
    other = _roboflow()
    other["categories"][3]["supercategory"] = "platelets"
    assert CocoDetection(tmp_path, other, check_files=False).classes == ["cells", "RBC", "WBC", "Platelets"]


def test_an_annotation_with_a_segmentation_but_no_bbox_gets_its_box(tmp_path: Path) -> None:
    """Some exporters write the segmentation only: the box is the polygon's extent, or pycocotools' ``toBbox`` of the
    RLE (it was dropped as "bbox None is not a list of four numbers", and its mask with it)."""
    from pycocotools import mask as mask_utils

    m = np.zeros((64, 64), np.uint8, order="F")
    m[10:20, 5:30] = 1
    rle = mask_utils.encode(m)
    rle["counts"] = rle["counts"].decode()
    poly = [[4, 6, 30, 6, 30, 40, 4, 40]]
    data = {"images": [{"id": 1, "file_name": "a.jpg", "width": 64, "height": 64}],
            "annotations": [{"id": 1, "image_id": 1, "category_id": 1, "segmentation": poly, "iscrowd": 0},
                            {"id": 2, "image_id": 1, "category_id": 1, "segmentation": rle, "iscrowd": 0}],
            "categories": [{"id": 1, "name": "c"}]}  # fmt: skip
    ds = CocoDetection(tmp_path, data, check_files=False)
    assert ds.boxes_dropped == 0
    assert ds.records[0].boxes.tolist() == [[4, 6, 30, 40], [5, 10, 30, 20]]  # xyxy
    assert [a["bbox"] for a in ds.coco.dataset["annotations"]] == [[4, 6, 26, 34], mask_utils.toBbox(rle).tolist()]
