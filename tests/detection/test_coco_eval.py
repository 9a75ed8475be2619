"""Our COCO evaluator prints COCOeval's own numbers: compared with pycocotools run by hand on the same detections."""

from __future__ import annotations

import contextlib
import io

import numpy as np
import pytest
import torch
from pycocotools.coco import COCO
from pycocotools.cocoeval import COCOeval

from vision.data import SyntheticShapes
from vision.tasks.detection.coco_eval import STAT_NAMES, COCOEvaluator, coco_from_dataset, coco_results, run_cocoeval


def _noisy_detections(ds: SyntheticShapes, seed: int) -> tuple[list[dict[str, torch.Tensor]], list[int]]:
    """Ground truth jittered, with wrong labels, misses and false positives: a realistic mix of scores."""
    g = torch.Generator().manual_seed(seed)
    dets, ids = [], []
    for i in range(len(ds)):
        _, t = ds[i]
        n = len(t["boxes"])
        boxes = t["boxes"] + torch.randn(n, 4, generator=g) * 3
        labels = t["labels"].clone()
        flip = torch.rand(n, generator=g) < 0.2
        labels[flip] = (labels[flip] + 1) % len(ds.classes)
        fp = torch.rand(3, 2, generator=g) * 100
        boxes = torch.cat([boxes, torch.cat([fp, fp + 20], 1)])
        labels = torch.cat([labels, torch.randint(0, len(ds.classes), (3,), generator=g)])
        scores = torch.rand(len(boxes), generator=g)
        order = scores.argsort(descending=True)
        masks = torch.cat([t["masks"].float(), torch.zeros(3, *t["masks"].shape[1:])])[:, None] * 0.9
        dets.append({"boxes": boxes[order], "scores": scores[order], "labels": labels[order], "masks": masks[order]})
        ids.append(int(t["image_id"]))
    return dets, ids


def _coco_ground_truth_by_hand(ds: SyntheticShapes) -> dict:
    """The COCO instances dict of ``ds``, written from its targets and the COCO format: ``bbox`` ``[x, y, w, h]``,
    ``area`` the object's pixel count (the mask's, as in COCO), RLE masks, ``iscrowd`` 0, categories by their ids."""
    from pycocotools import mask as mask_utils

    images, anns = [], []
    for i in range(len(ds)):
        image, t = ds[i]
        image_id = int(t["image_id"])
        images.append({"id": image_id, "height": image.shape[-2], "width": image.shape[-1]})
        for box, label, mask in zip(t["boxes"].tolist(), t["labels"].tolist(), t["masks"]):
            x0, y0, x1, y1 = box
            rle = mask_utils.encode(np.asfortranarray(mask.numpy().astype(np.uint8)))
            anns.append({"id": len(anns) + 1, "image_id": image_id, "category_id": ds.label_to_cat_id[label],
                         "bbox": [x0, y0, x1 - x0, y1 - y0], "area": float(mask.sum()), "iscrowd": 0,
                         "segmentation": rle})  # fmt: skip
    categories = [{"id": ds.label_to_cat_id[k], "name": name} for k, name in enumerate(ds.classes)]
    return {"images": images, "annotations": anns, "categories": categories}


@pytest.mark.parametrize("iou_type", ["bbox", "segm"])
def test_evaluator_numbers_are_cocoevals(iou_type):
    ds = SyntheticShapes(6, size=96, seed=3)
    gt = coco_from_dataset(ds)
    dets, ids = _noisy_detections(ds, seed=0)
    evaluator = COCOEvaluator(gt, iou_types=("bbox", "segm"), label_to_cat_id=ds.label_to_cat_id)
    evaluator.update(dets[:3], ids[:3])
    evaluator.update(dets[3:], ids[3:])
    ours = evaluator.evaluate()

    # pycocotools by hand, on the same detections
    by_hand = []
    for det, image_id in zip(dets, ids):
        for k in range(len(det["boxes"])):
            x0, y0, x1, y1 = det["boxes"][k].tolist()
            item = {"image_id": image_id, "category_id": ds.label_to_cat_id[int(det["labels"][k])],
                    "bbox": [x0, y0, x1 - x0, y1 - y0], "score": float(det["scores"][k])}  # fmt: skip
            if iou_type == "segm":
                from pycocotools import mask as mask_utils

                m = np.asfortranarray((det["masks"][k, 0] > 0.5).numpy().astype(np.uint8))
                item["segmentation"] = mask_utils.encode(m)
            by_hand.append(item)
    gt_hand = COCO()
    gt_hand.dataset = _coco_ground_truth_by_hand(ds)
    with contextlib.redirect_stdout(io.StringIO()):
        gt_hand.createIndex()
        E = COCOeval(gt_hand, gt_hand.loadRes(by_hand), iou_type)
        E.evaluate()
        E.accumulate()
        E.summarize()
    prefix = "mask_" if iou_type == "segm" else ""
    assert [ours[prefix + k] for k in STAT_NAMES] == [float(v) for v in E.stats]
    assert 0.05 < ours[prefix + "map"] < 0.95
    np.testing.assert_array_equal(ours[prefix + "precision"], E.eval["precision"])
    assert "Average Precision" in evaluator.summary()


def test_results_format_and_empty_detections():
    ds = SyntheticShapes(2, size=64, seed=1, masks=False)
    gt = coco_from_dataset(ds)
    det = {"boxes": torch.tensor([[1.0, 2.0, 11.0, 22.0]]), "scores": torch.tensor([0.5]), "labels": torch.tensor([2])}
    (item,) = coco_results([det], [7], {2: 30})
    assert item == {"image_id": 7, "category_id": 30, "bbox": [1.0, 2.0, 10.0, 20.0], "score": 0.5}
    empty = {"boxes": torch.zeros(0, 4), "scores": torch.zeros(0), "labels": torch.zeros(0, dtype=torch.int64)}
    stats, _, text = run_cocoeval(gt, coco_results([empty, empty], [0, 1]), "bbox")
    # ground truth but no detections: 0 precision and 0 recall (-1 would mean COCOeval found no ground truth)
    assert stats["map"] == 0.0 and stats["mar_100"] == 0.0 and "Average Precision" in text


class _PlainDataset:
    """A detection data set with neither ``coco`` nor ``to_coco``: ``coco_from_dataset`` reads its targets."""

    def __init__(self, classes: list[str] | None) -> None:
        if classes is not None:
            self.classes = classes
        self.items = [
            (torch.zeros(3, 40, 60, dtype=torch.uint8),
             {"boxes": torch.tensor([[1.0, 2.0, 11.0, 22.0], [5.0, 5.0, 25.0, 15.0]]), "labels": torch.tensor([1, 0]),
              "image_id": 7}),
            (torch.zeros(3, 30, 50, dtype=torch.uint8),  # no image_id: its index
             {"boxes": torch.tensor([[0.0, 0.0, 10.0, 10.0]]), "labels": torch.tensor([1])}),
        ]  # fmt: skip

    def __len__(self) -> int:
        return len(self.items)

    def __getitem__(self, i: int):
        return self.items[i]


def test_ground_truth_of_a_data_set_without_coco():
    coco = coco_from_dataset(_PlainDataset(["cat", "dog"]))
    assert coco.dataset["images"] == [{"id": 7, "width": 60, "height": 40}, {"id": 1, "width": 50, "height": 30}]
    ann = {"iscrowd": 0}
    assert coco.dataset["annotations"] == [
        {**ann, "id": 1, "image_id": 7, "category_id": 2, "bbox": [1, 2, 10, 20], "area": 200},
        {**ann, "id": 2, "image_id": 7, "category_id": 1, "bbox": [5, 5, 20, 10], "area": 200},
        {**ann, "id": 3, "image_id": 1, "category_id": 2, "bbox": [0, 0, 10, 10], "area": 100},
    ]  # labels + 1, boxes as [x, y, w, h]
    assert coco.dataset["categories"] == [{"id": 1, "name": "cat"}, {"id": 2, "name": "dog"}]
    assert sorted(coco.getImgIds()) == [1, 7] and coco.getAnnIds(imgIds=[7]) == [1, 2]  # indexed
    # usable by COCOeval: the ground truth itself as detections is perfect
    perfect = [{"image_id": a["image_id"], "category_id": a["category_id"], "bbox": a["bbox"], "score": 1.0}
               for a in coco.dataset["annotations"]]  # fmt: skip
    stats, _, _ = run_cocoeval(coco, perfect, "bbox")
    assert stats["map"] == 1.0 and stats["mar_100"] == 1.0
    # without class names: the labels seen, as strings
    unnamed = coco_from_dataset(_PlainDataset(None))
    assert unnamed.dataset["categories"] == [{"id": 1, "name": "0"}, {"id": 2, "name": "1"}]
