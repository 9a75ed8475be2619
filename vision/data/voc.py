"""Pascal VOC xml detection datasets, with the same sample contract as :class:`vision.data.CocoDetection`."""

from __future__ import annotations

import os
import xml.etree.ElementTree as ET
from collections import Counter
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


def _coords(box: ET.Element) -> list[float] | str:
    """``[xmin, ymin, xmax, ymax]`` of a ``<bndbox>``, or what is wrong with it (quoting the values)."""
    texts = [box.findtext(k) for k in ("xmin", "ymin", "xmax", "ymax")]
    try:
        return [float(t) for t in texts]  # type: ignore[arg-type]
    except (TypeError, ValueError):
        shown = dict(zip(("xmin", "ymin", "xmax", "ymax"), texts, strict=True))
        return f"bndbox {shown} is not four numbers"


def _parse(path: Path) -> dict[str, Any]:
    root = ET.parse(path).getroot()
    size = root.find("size")
    width = int(float(size.findtext("width", "0"))) if size is not None else 0
    height = int(float(size.findtext("height", "0"))) if size is not None else 0
    objects = []
    for obj in root.iter("object"):
        box = obj.find("bndbox")
        coords = _coords(box) if box is not None else "an <object> without <bndbox>"
        difficult = int(float(obj.findtext("difficult", "0") or 0))
        objects.append((obj.findtext("name", "").strip(), coords, difficult))
    return {"filename": root.findtext("filename"), "width": width, "height": height, "objects": objects}


@DATASETS.register("voc_detection", tags={"detection"}, task="detection")
class VOCDetection(FileDetectionDataset):
    """Pascal VOC layout: one xml per image (``<filename>``, ``<size>``, ``<object>`` with ``<bndbox>``).

    VOC boxes are 1-based inclusive pixel indices; they become xyxy pixel edges as ``(xmin - 1, ymin - 1, xmax,
    ymax)``. Objects marked ``difficult`` are excluded by default, like COCO crowds (``include_difficult=True`` keeps
    them and adds ``target["difficult"]``). A malformed xml drops its image; an unknown class name or a ``<bndbox>``
    that is not four numbers drops its object (reported with the xml file, the object's index and the value); an
    image annotated by two xml files is dropped (which one is right cannot be told); each problem is reported once
    (see :mod:`vision.data._bad`), and a split with no usable box left raises :class:`~vision.data.DataError`.

    Args:
        root_or_dirs: a VOC root (``JPEGImages/``, ``Annotations/``, ``ImageSets/Main/<split>.txt``) or a pair
            ``(images_dir, annotations_dir)``.
        split: image-set name under ``ImageSets/Main`` (default: every xml, sorted).
        classes: class names in label order (default: the sorted names found in the xml files; pass
            :data:`VOC_CLASSES` for the VOC label map).
        transform: detection transform (see :mod:`vision.data.coco`).
        include_difficult: keep ``difficult`` objects (with ``target["difficult"]``).
        drop_empty: drop images without objects (default: kept with empty targets).
        check_files: stat every image at construction so missing/empty files are dropped and reported up front.
        require_boxes: raise :class:`~vision.data.DataError` when no usable box is left (default).

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
        require_boxes: bool = True,
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
        self.images_dropped = self.boxes_dropped = self.boxes_excluded = 0
        source = str(ann_dir)
        if split is not None:
            split_file = root / "ImageSets" / "Main" / f"{split}.txt"
            source = f"{split_file} ({ann_dir})"
            xmls = [ann_dir / f"{i}.xml" for i in split_file.read_text().split()]
        else:
            xmls = sorted(ann_dir.glob("*.xml"))
        self._log = BadSampleLog(f"VOCDetection({source})", 1)
        parsed = []
        for xml in self._unique(xmls, source):
            try:
                parsed.append((xml, _parse(xml)))
            except (OSError, ET.ParseError, ValueError) as err:
                self._log.add(str(xml), "bad_annotation", f"{type(err).__name__}: {err}; image dropped")
                self.images_dropped += 1
        parsed = self._one_xml_per_image(parsed)
        if classes is None:
            classes = sorted({o[0] for _, p in parsed for o in p["objects"] if not isinstance(o[1], str)})
        self.classes = list(classes)
        self.class_to_idx = {c: i for i, c in enumerate(self.classes)}
        self.records = []
        for image_id, (xml, info) in enumerate(parsed):
            path = str(images_dir / (info["filename"] or f"{xml.stem}.jpg"))
            problem = file_problem(path) if check_files else None
            if problem is not None:
                self._log.add(path, problem)
                self.images_dropped += 1
                self.boxes_dropped += len(info["objects"])
                continue
            boxes, labels, difficult, names = [], [], [], []
            for k, (name, coords, diff) in enumerate(info["objects"]):
                if diff and not include_difficult:
                    self.boxes_excluded += 1
                    continue
                problem = coords if isinstance(coords, str) else None
                if problem is None and name not in self.class_to_idx:
                    problem = f"unknown class {name!r}"
                if problem is not None:
                    self._log.add(str(xml), "bad_annotation", f"object {k} ({name!r}): {problem}; object skipped")
                    self.boxes_dropped += 1
                    continue
                x0, y0, x1, y1 = coords
                boxes.append([x0 - 1.0, y0 - 1.0, x1, y1])
                labels.append(self.class_to_idx[name])
                difficult.append(diff)
                names.append(f"object {k} ({name!r})")
            w, h = info["width"] or None, info["height"] or None
            keep, clipped = sanitize_boxes(self._log, str(xml), np.asarray(boxes, np.float32), w, h, names)
            self.boxes_dropped += int((~keep).sum())
            if not keep.any():
                self.num_empty += 1
                if drop_empty:
                    continue
            self.records.append(ImageRecord(
                file=path, image_id=image_id, width=info["width"], height=info["height"], boxes=clipped[keep],
                labels=np.asarray(labels, np.int64).reshape(-1)[keep],
                iscrowd=np.asarray(difficult, np.uint8).reshape(-1)[keep],
            ))  # fmt: skip
        hint = "no annotation xml found" if not xmls else ""
        self._finish(source, require_boxes=require_boxes, hint=hint)

    def _unique(self, xmls: list[Path], source: str) -> list[Path]:
        """``xmls`` without repeats (a split file listing an id twice); each repeat is reported and skipped."""
        counts = Counter(xmls)
        for xml, n in counts.items():
            if n > 1:
                self._log.add(source, "duplicate_id", f"{xml.stem!r} is listed {n} times; repeats skipped")
                self.images_dropped += n - 1
        return list(counts)

    def _one_xml_per_image(self, parsed: list[tuple[Path, dict[str, Any]]]) -> list[tuple[Path, dict[str, Any]]]:
        """Drop images that two different xml files annotate (which one is right cannot be told), reporting them."""
        by_file: dict[str, list[Path]] = {}
        for xml, info in parsed:
            by_file.setdefault(info["filename"] or f"{xml.stem}.jpg", []).append(xml)
        out = []
        for xml, info in parsed:
            claims = by_file[info["filename"] or f"{xml.stem}.jpg"]
            if len(claims) == 1:
                out.append((xml, info))
                continue
            self.images_dropped += 1
            self.boxes_dropped += len(info["objects"])
            if xml == claims[0]:
                detail = (
                    f"image {info['filename']!r} is annotated by {' and '.join(str(c) for c in claims)}: which is "
                    "right cannot be told, so the image is skipped with all of their objects"
                )
                self._log.add(str(xml), "duplicate_id", detail)
        return out

    def __repr__(self) -> str:
        return f"VOCDetection(images={len(self)}, classes={len(self.classes)})"
