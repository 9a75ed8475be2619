"""Pascal VOC xml detection datasets, with the same sample contract as :class:`vision.data.CocoDetection`."""

from __future__ import annotations

import os
import xml.etree.ElementTree as ET
from collections.abc import Sequence
from pathlib import Path
from typing import Any

import numpy as np

from vision.data._bad import BadSampleLog
from vision.data._detection import DetectionTransformFn, FileDetectionDataset, ImageRecord, file_problem, sanitize_boxes
from vision.registry import DATASETS

__all__ = ["VOC_CLASSES", "VOCDetection"]

VOC_CLASSES = (
    "aeroplane", "bicycle", "bird", "boat", "bottle", "bus", "car", "cat", "chair", "cow", "diningtable", "dog",
    "horse", "motorbike", "person", "pottedplant", "sheep", "sofa", "train", "tvmonitor",
)  # fmt: skip


def _parse(path: Path) -> dict[str, Any]:
    root = ET.parse(path).getroot()
    size = root.find("size")
    width = int(float(size.findtext("width", "0"))) if size is not None else 0
    height = int(float(size.findtext("height", "0"))) if size is not None else 0
    objects = []
    for obj in root.iter("object"):
        box = obj.find("bndbox")
        if box is None:
            raise ValueError("an <object> without <bndbox>")
        coords = [float(box.findtext(k, "nan")) for k in ("xmin", "ymin", "xmax", "ymax")]
        difficult = int(float(obj.findtext("difficult", "0") or 0))
        objects.append((obj.findtext("name", "").strip(), coords, difficult))
    return {"filename": root.findtext("filename"), "width": width, "height": height, "objects": objects}


@DATASETS.register("voc_detection", tags={"detection"}, task="detection")
class VOCDetection(FileDetectionDataset):
    """Pascal VOC layout: one xml per image (``<filename>``, ``<size>``, ``<object>`` with ``<bndbox>``).

    VOC boxes are 1-based inclusive pixel indices; they become xyxy pixel edges as ``(xmin - 1, ymin - 1, xmax,
    ymax)``. Objects marked ``difficult`` are excluded by default, like COCO crowds (``include_difficult=True`` keeps
    them and adds ``target["difficult"]``). A malformed xml drops its image; an unknown class name drops its object;
    each is reported once (see :mod:`vision.data._bad`).

    Args:
        root_or_dirs: a VOC root (``JPEGImages/``, ``Annotations/``, ``ImageSets/Main/<split>.txt``) or a pair
            ``(images_dir, annotations_dir)``.
        split: image-set name under ``ImageSets/Main`` (default: every xml, sorted).
        classes: class names in label order (default: the sorted names found in the xml files; pass
            :data:`VOC_CLASSES` for the VOC label map).
        transform: detection transform (see :mod:`vision.data.coco`).
        include_difficult: keep ``difficult`` objects (with ``target["difficult"]``).
        drop_empty: drop images without objects (default: kept with empty targets).

    Example:
        >>> ds = VOCDetection("data/VOC2012", split="val", classes=VOC_CLASSES)
    """

    flag_key = "difficult"

    def __init__(
        self,
        root_or_dirs: str | os.PathLike | tuple[str | os.PathLike, str | os.PathLike],
        *,
        split: str | None = None,
        classes: Sequence[str] | None = None,
        transform: DetectionTransformFn | None = None,
        include_difficult: bool = False,
        drop_empty: bool = False,
        check_files: bool = True,
    ) -> None:
        if isinstance(root_or_dirs, tuple | list):
            images_dir, ann_dir = (Path(p) for p in root_or_dirs)
            root = ann_dir.parent
        else:
            root = Path(root_or_dirs)
            images_dir, ann_dir = root / "JPEGImages", root / "Annotations"
        if not ann_dir.is_dir():
            raise FileNotFoundError(f"VOC annotations folder {str(ann_dir)!r} does not exist")
        self.images_dir, self.ann_dir = images_dir, ann_dir
        self.transform, self.include_crowd, self.masks = transform, include_difficult, False
        self.drop_empty, self.num_empty = drop_empty, 0
        self._log = BadSampleLog(f"VOCDetection({root.name}{'/' + split if split else ''})", 1)
        if split is not None:
            ids = (root / "ImageSets" / "Main" / f"{split}.txt").read_text().split()
            xmls = [ann_dir / f"{i}.xml" for i in ids]
        else:
            xmls = sorted(ann_dir.glob("*.xml"))
        parsed = []
        for xml in xmls:
            try:
                parsed.append((xml, _parse(xml)))
            except (OSError, ET.ParseError, ValueError) as err:
                self._log.add(str(xml), "bad_annotation", f"{type(err).__name__}: {err}; image dropped")
        names = sorted({o[0] for _, p in parsed for o in p["objects"]}) if classes is None else list(classes)
        self.classes = names
        self.class_to_idx = {c: i for i, c in enumerate(names)}
        self.records = []
        for image_id, (xml, info) in enumerate(parsed):
            path = str(images_dir / (info["filename"] or f"{xml.stem}.jpg"))
            problem = file_problem(path) if check_files else None
            if problem is not None:
                self._log.add(path, problem)
                continue
            boxes, labels, difficult = [], [], []
            for name, (x0, y0, x1, y1), diff in info["objects"]:
                if diff and not include_difficult:
                    continue
                if name not in self.class_to_idx:
                    self._log.add(path, "bad_annotation", f"unknown class {name!r}")
                    continue
                boxes.append([x0 - 1.0, y0 - 1.0, x1, y1])
                labels.append(self.class_to_idx[name])
                difficult.append(diff)
            w, h = info["width"] or None, info["height"] or None
            keep, clipped = sanitize_boxes(self._log, path, np.asarray(boxes, np.float32), w, h)
            if not keep.any():
                self.num_empty += 1
                if drop_empty:
                    continue
            self.records.append(ImageRecord(
                file=path, image_id=image_id, width=info["width"], height=info["height"], boxes=clipped[keep],
                labels=np.asarray(labels, np.int64).reshape(-1)[keep],
                iscrowd=np.asarray(difficult, np.uint8).reshape(-1)[keep],
            ))  # fmt: skip
        self._log.resize(len(self.records))

    def __repr__(self) -> str:
        return f"VOCDetection(images={len(self)}, classes={len(self.classes)})"
