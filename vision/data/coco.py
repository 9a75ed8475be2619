"""COCO-format detection and instance segmentation (pycocotools), and the BCCD blood-cell set in that format.

Sample contract (shared by every detection dataset of :mod:`vision.data`)::

    image  : uint8 [3, H, W] RGB tensor (without a transform)
    target : {"boxes": float32 [N, 4] xyxy pixels, "labels": int64 [N] in [0, num_classes),
              "image_id": int, "masks": uint8 [N, H, W] (masks=True only), "iscrowd": uint8 [N] (include_crowd only)}

With a transform, ``transform(image, target)`` receives the image as ``uint8 [H, W, 3]`` RGB numpy and the target
with numpy arrays, and returns ``(image, target)``; the target's boxes/labels/masks are then made tensors.
:func:`vision.data.build_transform` detection recipes follow this contract.

Bad samples follow the rules of :mod:`vision.data._bad` (missing/empty files dropped at construction, unreadable
images replaced at load, boxes clipped or dropped), each reported once and listed by ``report()``.
"""

from __future__ import annotations

import contextlib
import io
import json
import os
from pathlib import Path
from typing import Any

import numpy as np

from vision.data._bad import BadSampleLog
from vision.data._detection import DetectionTransformFn, FileDetectionDataset, ImageRecord, file_problem, sanitize_boxes
from vision.registry import DATASETS

__all__ = ["CocoDetection", "bccd", "find_bccd"]


def _valid_segmentation(segm: Any, height: int, width: int) -> str | None:
    """``None`` when ``segm`` is a usable polygon list or RLE, else what is wrong with it."""
    if isinstance(segm, list):
        if not segm:
            return "empty polygon list"
        for ring in segm:
            if not isinstance(ring, list) or len(ring) < 6 or len(ring) % 2:
                return "a polygon needs an even number (>= 6) of coordinates"
        return None
    if isinstance(segm, dict):
        if "counts" not in segm or "size" not in segm:
            return "RLE without 'counts' and 'size'"
        if [int(v) for v in segm["size"]] != [height, width]:
            return f"RLE size {segm['size']} differs from the image size {[height, width]}"
        return None
    return f"unknown segmentation type {type(segm).__name__}"


@DATASETS.register("coco_detection", tags={"detection", "segmentation"}, task="detection")
class CocoDetection(FileDetectionDataset):
    """A COCO instances file (boxes, polygons, RLE) read with pycocotools.

    Boxes go from COCO ``[x, y, w, h]`` to ``xyxy`` pixels; category ids become contiguous labels ``0..K-1`` in
    increasing id order (``cat_ids[label]`` / ``label_to_cat_id`` map back, ``classes`` has the names). Masks (polygon,
    compressed or uncompressed RLE) are decoded with pycocotools ``annToMask``.

    Crowd annotations (``iscrowd=1``) are excluded from the targets by default, as training on them would teach the
    model to fit crowd regions; ``include_crowd=True`` keeps them and adds ``target["iscrowd"]``. Evaluation uses the
    annotation file itself (:attr:`coco` for ``COCOeval``), where crowds are handled by pycocotools.

    Args:
        images_dir: folder the ``file_name`` entries are relative to.
        ann_file: path of the json (or the already-loaded dict).
        masks: decode instance masks into ``target["masks"]``.
        transform: detection transform (see the module docstring).
        include_crowd: keep crowd annotations (with ``target["iscrowd"]``).
        drop_empty: drop images left without annotations (default: kept with empty targets).
        check_files: stat every image at construction so missing/empty files are dropped and reported up front.

    Example:
        >>> ds = CocoDetection("data/coco/val2017", "data/coco/annotations/instances_val2017.json", masks=True)
        >>> image, target = ds[0]  # uint8 [3, H, W]; target["boxes"] float32 [N, 4], target["masks"] uint8 [N, H, W]
    """

    def __init__(
        self,
        images_dir: str | os.PathLike,
        ann_file: str | os.PathLike | dict[str, Any],
        *,
        masks: bool = False,
        transform: DetectionTransformFn | None = None,
        include_crowd: bool = False,
        drop_empty: bool = False,
        check_files: bool = True,
    ) -> None:
        from pycocotools.coco import COCO

        self.images_dir = Path(images_dir)
        self.masks, self.transform, self.include_crowd = masks, transform, include_crowd
        self.drop_empty, self.num_empty = drop_empty, 0
        name = ann_file.name if isinstance(ann_file, os.PathLike) else os.path.basename(str(ann_file))
        self._log = BadSampleLog(f"CocoDetection({name if not isinstance(ann_file, dict) else 'dict'})", 1)
        with contextlib.redirect_stdout(io.StringIO()):  # pycocotools prints progress
            if isinstance(ann_file, dict):
                coco = COCO()
                coco.dataset = ann_file
                coco.createIndex()
            else:
                with open(ann_file) as f:
                    data = json.load(f)
                coco = COCO()
                coco.dataset = data
                coco.createIndex()
        self.coco = coco
        self.cat_ids = sorted(coco.cats)
        self.cat_id_to_label = {c: i for i, c in enumerate(self.cat_ids)}
        self.label_to_cat_id = dict(enumerate(self.cat_ids))
        self.classes = [coco.cats[c].get("name", str(c)) for c in self.cat_ids]
        self.records = []
        for image_id in sorted(coco.imgs):
            info = coco.imgs[image_id]
            path = str(self.images_dir / info["file_name"])
            problem = file_problem(path) if check_files else None
            if problem is not None:
                self._log.add(path, problem)
                continue
            record = self._record(path, image_id, info, coco.imgToAnns.get(image_id, []))
            if len(record.boxes) == 0:
                self.num_empty += 1
                if drop_empty:
                    continue
            self.records.append(record)
        self._log.resize(len(self.records))

    def _record(self, path: str, image_id: int, info: dict[str, Any], anns: list[dict[str, Any]]) -> ImageRecord:
        width, height = int(info.get("width", 0)) or None, int(info.get("height", 0)) or None
        boxes, labels, crowd, kept = [], [], [], []
        for ann in anns:
            is_crowd = int(ann.get("iscrowd", 0))
            if is_crowd and not self.include_crowd:
                continue
            if ann.get("category_id") not in self.cat_id_to_label:
                self._log.add(path, "bad_annotation", f"annotation {ann.get('id')}: unknown category")
                continue
            bbox = ann.get("bbox")
            if not isinstance(bbox, list | tuple) or len(bbox) != 4:
                self._log.add(path, "bad_annotation", f"annotation {ann.get('id')}: bbox {bbox!r}")
                continue
            if self.masks and "segmentation" in ann and width and height:
                problem = _valid_segmentation(ann["segmentation"], height, width)
                if problem is not None:
                    self._log.add(path, "bad_annotation", f"annotation {ann.get('id')}: {problem}")
                    continue
            x, y, w, h = (float(v) for v in bbox)
            boxes.append([x, y, x + w, y + h])
            labels.append(self.cat_id_to_label[ann["category_id"]])
            crowd.append(is_crowd)
            kept.append(ann)
        names = [f"annotation {a.get('id')}" for a in kept]
        keep, clipped = sanitize_boxes(self._log, path, np.asarray(boxes, np.float32), width, height, names)
        return ImageRecord(
            file=path,
            image_id=int(image_id),
            width=width or 0,
            height=height or 0,
            boxes=clipped[keep],
            labels=np.asarray(labels, np.int64).reshape(-1)[keep],
            iscrowd=np.asarray(crowd, np.uint8).reshape(-1)[keep],
            extra={"anns": [a for a, k in zip(kept, keep) if k]},
        )

    def _masks(self, record: ImageRecord, keep: np.ndarray, height: int, width: int) -> np.ndarray:
        index = np.flatnonzero(keep)
        out = np.zeros((len(index), height, width), np.uint8)
        missing = 0
        for i, j in enumerate(index):
            ann = record.extra["anns"][j]
            if not ann.get("segmentation"):
                missing += 1
                x0, y0, x1, y1 = record.boxes[j]
                out[i, int(np.floor(y0)) : int(np.ceil(y1)), int(np.floor(x0)) : int(np.ceil(x1))] = 1
                continue
            m = self.coco.annToMask(ann)
            h, w = min(height, m.shape[0]), min(width, m.shape[1])
            out[i, :h, :w] = m[:h, :w]
        if missing:
            self._log.add(record.file, "no_segmentation", f"{missing} of {len(index)} annotation(s)")
        return out

    def __repr__(self) -> str:
        return f"CocoDetection(images={len(self)}, classes={len(self.classes)}, masks={self.masks})"


def find_bccd(root: str | os.PathLike | None = None) -> Path:
    """The BCCD folder: ``root``, ``$VISION_BCCD``, ``$VISION_DATA/bccd``, or ``../shared/data/bccd`` from the current
    folder or the source checkout. Raises ``FileNotFoundError`` listing where it looked."""
    candidates = [Path(root)] if root is not None else []
    if root is None:
        if os.environ.get("VISION_BCCD"):
            candidates.append(Path(os.environ["VISION_BCCD"]))
        if os.environ.get("VISION_DATA"):
            candidates.append(Path(os.environ["VISION_DATA"]) / "bccd")
        candidates += [Path.cwd().parent / "shared" / "data" / "bccd",
                       Path(__file__).resolve().parents[3] / "shared" / "data" / "bccd"]  # fmt: skip
    for c in candidates:
        if (c / "annotations" / "train.json").is_file():
            return c
    raise FileNotFoundError(
        "BCCD not found (looked in " + ", ".join(str(c) for c in candidates) + "); pass root= or set VISION_BCCD"
    )


@DATASETS.register("bccd", tags={"detection"}, task="detection")
def bccd(
    *,
    split: str = "train",
    root: str | os.PathLike | None = None,
    masks: bool = False,
    transform: DetectionTransformFn | None = None,
) -> CocoDetection:
    """BCCD blood cells (3 classes: RBC, WBC, Platelets; 640x480) as a :class:`CocoDetection` (``split``: train/val).

    With ``masks=True`` each box is its own mask (the set has no segmentation; reported once per file)."""
    if split not in ("train", "val"):
        raise ValueError(f"BCCD split must be 'train' or 'val', got {split!r}")
    folder = find_bccd(root)
    return CocoDetection(folder / "images", folder / "annotations" / f"{split}.json", masks=masks, transform=transform)
