"""COCO evaluation with pycocotools: the numbers reported are COCOeval's own ``stats``.

:class:`COCOEvaluator` collects detections (data-set labels), turns them into COCO results (``bbox`` as
``[x, y, w, h]``, ``segmentation`` as RLE of the masks thresholded at 0.5, ``category_id`` through the data set's
``label_to_cat_id``), gathers them from every rank, and runs ``COCOeval`` (``evaluate``, ``accumulate``,
``summarize``) on the ground truth. The twelve ``stats`` of each IoU type come back under stable names
(:data:`STAT_NAMES`; masks prefixed ``mask_``), together with the precision array for PR curves and the results
(COCO results-json format) for writing to disk.

Example:
    >>> ev = COCOEvaluator(dataset.coco, iou_types=("bbox",), label_to_cat_id=dataset.label_to_cat_id)
    >>> for images, targets in loader:
    ...     ev.update(model.predict(images), [t["image_id"] for t in targets])   # data-set labels
    >>> metrics = ev.evaluate()       # {"map": COCOeval.stats[0], "map50": stats[1], ...}
"""

from __future__ import annotations

import contextlib
import copy
import io
from collections.abc import Iterable, Mapping, Sequence
from typing import Any

import numpy as np
import torch
from torch import Tensor

__all__ = ["STAT_NAMES", "COCOEvaluator", "coco_from_dataset", "coco_results", "run_cocoeval"]

#: names of ``COCOeval.stats[0..11]`` (bbox / segm), in order
STAT_NAMES = (
    "map",
    "map50",
    "map75",
    "map_small",
    "map_medium",
    "map_large",
    "mar_1",
    "mar_10",
    "mar_100",
    "mar_small",
    "mar_medium",
    "mar_large",
)
_PREFIX = {"bbox": "", "segm": "mask_"}


def coco_results(
    detections: Sequence[Mapping[str, Tensor]],
    image_ids: Sequence[int],
    label_to_cat_id: Mapping[int, int] | None = None,
    *,
    masks: bool = False,
    mask_threshold: float = 0.5,
) -> list[dict[str, Any]]:
    """Detections (data-set labels, boxes xyxy pixels) -> COCO results (``image_id, category_id, bbox [x, y, w, h],
    score`` and with ``masks=True`` ``segmentation`` RLE of ``mask > mask_threshold``)."""
    from pycocotools import mask as mask_utils

    out: list[dict[str, Any]] = []
    for det, image_id in zip(detections, image_ids):
        boxes = det["boxes"].detach().float().cpu()
        if boxes.numel() == 0:
            continue
        xywh = torch.cat([boxes[:, :2], boxes[:, 2:] - boxes[:, :2]], 1).tolist()
        scores = det["scores"].detach().float().cpu().tolist()
        labels = det["labels"].detach().cpu().tolist()
        rles: list[Any] = [None] * len(labels)
        if masks:
            m = det["masks"].detach()
            m = (m[:, 0] if m.dim() == 4 else m) > mask_threshold
            array = np.asfortranarray(m.permute(1, 2, 0).cpu().numpy().astype(np.uint8))
            rles = mask_utils.encode(array)
            for r in rles:
                r["counts"] = r["counts"].decode("ascii")
        for box, score, label, rle in zip(xywh, scores, labels, rles):
            cat = label_to_cat_id[int(label)] if label_to_cat_id is not None else int(label)
            item: dict[str, Any] = {"image_id": int(image_id), "category_id": int(cat), "bbox": box, "score": score}
            if masks:
                item["segmentation"] = rle
            out.append(item)
    return out


def _quiet() -> contextlib.AbstractContextManager:
    return contextlib.redirect_stdout(io.StringIO())


def coco_from_dataset(dataset: Any) -> Any:
    """The COCO ground truth (``pycocotools.coco.COCO``) of a detection data set.

    Uses ``dataset.coco`` (:class:`~vision.data.CocoDetection`), else ``dataset.to_coco()``
    (:class:`~vision.data.SyntheticShapes`), else reads every target once (boxes only; categories ``label + 1``).
    """
    from pycocotools.coco import COCO

    if getattr(dataset, "coco", None) is not None:
        return dataset.coco
    if hasattr(dataset, "to_coco"):
        data = dataset.to_coco()
    else:
        images, anns = [], []
        labels_seen: set[int] = set()
        for i in range(len(dataset)):
            image, target = dataset[i]
            h, w = image.shape[-2:]
            image_id = int(target.get("image_id", i))
            images.append({"id": image_id, "width": int(w), "height": int(h)})
            for box, label in zip(target["boxes"].tolist(), target["labels"].tolist()):
                x0, y0, x1, y1 = box
                labels_seen.add(int(label))
                ann = {"id": len(anns) + 1, "image_id": image_id, "category_id": int(label) + 1, "iscrowd": 0}
                anns.append({**ann, "bbox": [x0, y0, x1 - x0, y1 - y0], "area": (x1 - x0) * (y1 - y0)})
        names = getattr(dataset, "classes", None) or [str(k) for k in range(max(labels_seen, default=-1) + 1)]
        data = {"images": images, "annotations": anns,
                "categories": [{"id": k + 1, "name": n} for k, n in enumerate(names)]}  # fmt: skip
    coco = COCO()
    coco.dataset = data
    with _quiet():
        coco.createIndex()
    return coco


def _load_results(coco_gt: Any, results: list[dict[str, Any]]) -> Any:
    """``coco_gt.loadRes(results)``; an empty list gives an empty result set (``loadRes`` cannot take one)."""
    from pycocotools.coco import COCO

    if results:
        with _quiet():
            return coco_gt.loadRes(copy.deepcopy(results))
    empty = COCO()
    empty.dataset = {"images": list(coco_gt.dataset.get("images", [])), "annotations": [],
                     "categories": copy.deepcopy(coco_gt.dataset.get("categories", []))}  # fmt: skip
    with _quiet():
        empty.createIndex()
    return empty


def run_cocoeval(
    coco_gt: Any,
    results: list[dict[str, Any]],
    iou_type: str = "bbox",
    *,
    image_ids: Iterable[int] | None = None,
) -> tuple[dict[str, float], Any, str]:
    """Run ``COCOeval`` (evaluate, accumulate, summarize) and return ``(stats by name, the COCOeval, summary text)``.

    ``image_ids``: restrict the evaluation to these images (default: every ground-truth image).
    """
    from pycocotools.cocoeval import COCOeval

    dt = _load_results(coco_gt, results)
    E = COCOeval(coco_gt, dt, iou_type)
    if image_ids is not None:
        E.params.imgIds = sorted({int(i) for i in image_ids})
    text = io.StringIO()
    with contextlib.redirect_stdout(text):
        E.evaluate()
        E.accumulate()
        E.summarize()
    stats = {name: float(v) for name, v in zip(STAT_NAMES, E.stats)}
    return stats, E, text.getvalue()


class COCOEvaluator:
    """Accumulate detections over a data set (and ranks) and evaluate them with ``COCOeval``.

    Args:
        coco_gt: the ground truth (``pycocotools.coco.COCO``, e.g. :func:`coco_from_dataset`).
        iou_types: ``("bbox",)`` or ``("bbox", "segm")``.
        label_to_cat_id: data-set label -> COCO ``category_id`` (default: the data set's labels are the ids).
        mask_threshold: masks are binarised at ``mask > mask_threshold`` for ``segm``.
    """

    def __init__(
        self,
        coco_gt: Any,
        *,
        iou_types: Sequence[str] = ("bbox",),
        label_to_cat_id: Mapping[int, int] | None = None,
        mask_threshold: float = 0.5,
    ) -> None:
        unknown = [t for t in iou_types if t not in _PREFIX]
        if unknown:
            raise ValueError(f"iou_types must be among {tuple(_PREFIX)}, got {unknown}")
        self.coco_gt = coco_gt
        self.iou_types = tuple(iou_types)
        self.label_to_cat_id = dict(label_to_cat_id) if label_to_cat_id is not None else None
        self.mask_threshold = mask_threshold
        self.results: dict[str, list[dict[str, Any]]] = {t: [] for t in self.iou_types}
        self.image_ids: list[int] = []
        self.summaries: dict[str, str] = {}

    def update(self, detections: Sequence[Mapping[str, Tensor]], image_ids: Sequence[int]) -> None:
        """Add one batch: detections with **data-set** labels and the ``image_id`` of each image."""
        ids = [int(i) for i in image_ids]
        self.image_ids.extend(ids)
        for iou_type in self.iou_types:
            segm = iou_type == "segm"
            found = coco_results(detections, ids, self.label_to_cat_id, masks=segm, mask_threshold=self.mask_threshold)
            self.results[iou_type].extend(found)

    def synchronize(self) -> None:
        """Merge the results and image ids of every rank (a no-op without DDP)."""
        from vision.engine.distributed import all_gather_objects

        parts = all_gather_objects((self.results, self.image_ids))
        if len(parts) > 1:
            self.results = {t: [r for p in parts for r in p[0][t]] for t in self.iou_types}
            self.image_ids = [i for p in parts for i in p[1]]

    def evaluate(self, *, synchronize: bool = True) -> dict[str, Any]:
        """COCOeval on everything collected: ``{"map": ..., "map50": ..., ..., "mask_map": ...}`` (COCOeval's
        ``stats``) plus ``"precision"`` / ``"mask_precision"`` (COCOeval's ``eval["precision"]``, ``[T, R, K, A, M]``),
        ``"recall_thresholds"``, ``"category_ids"`` and ``"num_images"``. Every rank gets the same dict."""
        if synchronize:
            self.synchronize()
        out: dict[str, Any] = {"num_images": len(set(self.image_ids))}
        for iou_type in self.iou_types:
            stats, E, text = run_cocoeval(self.coco_gt, self.results[iou_type], iou_type, image_ids=self.image_ids)
            prefix = _PREFIX[iou_type]
            out.update({prefix + k: v for k, v in stats.items()})
            out[prefix + "precision"] = E.eval["precision"]
            out["recall_thresholds"] = np.asarray(E.params.recThrs)
            out["category_ids"] = list(E.params.catIds)
            self.summaries[iou_type] = text
        return out

    def summary(self) -> str:
        """COCOeval's own printed summary of the last :meth:`evaluate`, per IoU type."""
        return "\n".join(f"IoU type {t}:\n{text}" for t, text in self.summaries.items())
