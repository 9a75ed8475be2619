"""Machinery shared by the detection datasets: per-image records, box sanitising, the sample contract."""

from __future__ import annotations

import os
from collections.abc import Callable
from concurrent.futures import ThreadPoolExecutor
from dataclasses import dataclass, field
from typing import Any

import numpy as np
import torch
from torch import Tensor
from torch.utils.data import Dataset

from vision.data._bad import REASONS, BadSampleLog, BadSampleMixin, DataError
from vision.io import hwc_to_chw, read_image

__all__ = [
    "DetectionTransformFn",
    "FileDetectionDataset",
    "ImageRecord",
    "file_problem",
    "finish_sample",
    "image_size",
    "sanitize_boxes",
]

#: ``transform(image uint8 [H, W, 3] numpy, target dict of numpy arrays) -> (image, target)``
DetectionTransformFn = Callable[[np.ndarray, dict[str, Any]], tuple[Any, dict[str, Any]]]


@dataclass
class ImageRecord:
    """One image of a file-based detection dataset, with its sanitised annotations."""

    file: str
    image_id: int
    width: int
    height: int
    boxes: np.ndarray  # float32 [N, 4] xyxy pixels, clipped, non-degenerate
    labels: np.ndarray  # int64 [N]
    iscrowd: np.ndarray  # uint8 [N]
    extra: dict[str, Any] = field(default_factory=dict)  # dataset-specific (e.g. COCO annotations for masks)


def sanitize_boxes(
    log: BadSampleLog,
    file: str,
    boxes: np.ndarray,
    width: int | None,
    height: int | None,
    names: list[str] | None = None,
) -> tuple[np.ndarray, np.ndarray]:
    """Apply the box rules to ``boxes [N, 4]`` xyxy: drop non-finite/degenerate boxes, clip to the image, drop boxes
    with nothing left. Returns ``(keep bool [N], boxes clipped float32 [N, 4])``; each problem is reported once
    (``names[i]``, e.g. ``"annotation 17"``, identifies box ``i`` in the report)."""
    boxes = np.asarray(boxes, np.float32).reshape(-1, 4)
    keep = np.ones(len(boxes), bool)
    out = boxes.copy()
    for i, b in enumerate(boxes):
        who = f"{names[i]}: " if names is not None else f"box {i}: "
        if not np.isfinite(b).all() or b[2] <= b[0] or b[3] <= b[1]:
            log.add(file, "box_degenerate", f"{who}{b.tolist()}")
            keep[i] = False
            continue
        if width is None or height is None:
            continue
        c = np.array([min(max(b[0], 0), width), min(max(b[1], 0), height),
                      min(max(b[2], 0), width), min(max(b[3], 0), height)], np.float32)  # fmt: skip
        if c[2] <= c[0] or c[3] <= c[1]:
            log.add(file, "box_outside", f"{who}{b.tolist()} in a {width}x{height} image")
            keep[i] = False
        elif not np.array_equal(c, b):
            log.add(file, "box_clipped", f"{who}{b.tolist()} -> {c.tolist()}")
            out[i] = c
    return keep, out


def _as_tensor(value: Any, dtype: torch.dtype) -> Tensor:
    if isinstance(value, Tensor):
        return value.to(dtype)
    return torch.as_tensor(np.ascontiguousarray(value)).to(dtype)


def finish_sample(
    image: np.ndarray, target: dict[str, Any], transform: DetectionTransformFn | None
) -> tuple[Any, dict[str, Any]]:
    """Apply ``transform`` (or convert the image to ``uint8 [3, H, W]``) and make the target entries tensors."""
    if transform is not None:
        image, target = transform(image, target)
    else:
        image = hwc_to_chw(image)
    out = dict(target)
    out["boxes"] = _as_tensor(target["boxes"], torch.float32).reshape(-1, 4)
    out["labels"] = _as_tensor(target["labels"], torch.int64)
    if "masks" in target:
        out["masks"] = _as_tensor(target["masks"], torch.uint8)
    for key in ("iscrowd", "difficult"):
        if key in target:
            out[key] = _as_tensor(target[key], torch.uint8)
    return image, out


class FileDetectionDataset(BadSampleMixin, Dataset):
    """Base of file-based detection datasets: subclasses fill ``self.records`` and may override ``_masks``."""

    records: list[ImageRecord]
    transform: DetectionTransformFn | None
    masks: bool = False
    include_crowd: bool = False
    flag_key: str = "iscrowd"  # name of the per-box flag kept in ImageRecord.iscrowd ("difficult" for VOC)
    classes: list[str]

    def __len__(self) -> int:
        return len(self.records)

    def _files(self) -> list[str]:
        return [r.file for r in self.records]

    num_empty: int = 0  # images without (usable) annotations, kept or dropped
    drop_empty: bool = False
    images_dropped: int = 0  # image records dropped at construction for a problem (not for drop_empty)
    boxes_dropped: int = 0  # annotations dropped at construction for a problem (with their image or alone)
    boxes_excluded: int = 0  # crowd / difficult annotations left out by choice (include_crowd=False)
    group_category: str | None = None  # a category that only groups the others (COCO supercategory), not a class

    def summary(self) -> str:
        """The split's summary line: images and boxes kept and dropped at construction (see :mod:`vision.data._bad`;
        unreadable images are found later, at load time, and listed by :meth:`report`)."""
        kept_boxes = sum(len(r.boxes) for r in self.records)
        line = (
            f"{len(self.records)} image(s) kept, {self.images_dropped} dropped; "
            f"{kept_boxes} box(es) kept, {self.boxes_dropped} dropped"
        )
        if self.boxes_excluded:
            line += f", {self.boxes_excluded} {self.flag_key} excluded"
        if self.group_category is not None:
            line += f"; category {self.group_category!r} (no box, the supercategory of all others) is not a class"
        if self.num_empty:
            line += f"; {self.num_empty} image(s) without boxes " + (
                "dropped (drop_empty=True)" if self.drop_empty else "kept as background"
            )
        return line

    def _finish(self, source: str, *, require_boxes: bool, hint: str = "") -> None:
        """End of construction: size the load-failure table, emit the summary line when anything was dropped, and
        raise :class:`DataError` naming ``source`` when nothing usable is left (no image, or no box while
        ``require_boxes``)."""
        self._log.resize(len(self.records))
        dropped = self.images_dropped or self.boxes_dropped or self.group_category is not None
        self._log.summarize(self.summary(), dropped=bool(dropped))
        if self.records and (not require_boxes or any(len(r.boxes) for r in self.records)):
            return
        counts = self._log.counts()
        problems = ", ".join(f"{n} {reason}" for reason, n in counts.items() if reason in REASONS)
        raise DataError(
            f"{source}: nothing usable is left ({self.summary()})"
            + (f"; {hint}" if hint else "")
            + (f"; problems: {problems} ({self._log.warned_about()})" if problems else "")
        )

    def _masks(self, record: ImageRecord, keep: np.ndarray, height: int, width: int) -> np.ndarray:
        raise NotImplementedError

    def report(self) -> str:
        """Bad samples (see :mod:`vision.data._bad`), the number of images without annotations (not an error:
        they are kept as background-only images, or dropped with ``drop_empty=True``) and the summary line."""
        action = "dropped (drop_empty=True)" if self.drop_empty else "kept with empty targets"
        return (
            f"{super().report()}\n  images without annotations: {self.num_empty} ({action})\n"
            f"  summary: {self.summary()}"
        )

    @property
    def image_ids(self) -> list[int]:
        return [r.image_id for r in self.records]

    def aspect_ratios(self) -> list[float]:
        """``width / height`` of every image (from the annotations; no image is read)."""
        return [r.width / r.height if r.height else 1.0 for r in self.records]

    _cache: list[np.ndarray | None] | None = None

    def cache_images(self, *, threads: int = 4, max_fraction: float = 0.5) -> int:
        """Decode every image once and keep it in RAM (``uint8 [H, W, 3]``), so that later epochs skip the file
        read and the JPEG decode; loader workers forked afterwards share the memory.

        Args:
            threads: decoding threads (OpenCV releases the GIL while decoding).
            max_fraction: refuse to cache (``MemoryError``, nothing decoded) when the images' estimated size
                (from the annotated sizes) exceeds this fraction of the memory available now.

        Returns:
            Bytes held. An image that cannot be decoded is not cached: loading it later reports it as usual.
        """
        check_cache_fits(sum(max(r.width, 1) * max(r.height, 1) * 3 for r in self.records), len(self.records),
                         max_fraction)  # fmt: skip

        def decode(record: ImageRecord) -> np.ndarray | None:
            try:
                return read_image(record.file, layout="hwc")  # type: ignore[return-value]
            except OSError:
                return None

        with ThreadPoolExecutor(max(1, threads)) as pool:
            self._cache = list(pool.map(decode, self.records))
        return sum(im.nbytes for im in self._cache if im is not None)

    def _load(self, i: int) -> tuple[Any, dict[str, Any]]:
        record = self.records[i]
        cached = self._cache[i] if self._cache is not None else None
        # a copy: a transform that works in place must not change the cached image
        image = cached.copy() if cached is not None else read_image(record.file, layout="hwc")
        h, w = image.shape[:2]
        boxes, keep = record.boxes, np.ones(len(record.boxes), bool)
        if (h, w) != (record.height, record.width):  # unknown (0) or wrong size in the annotation: clip now
            if record.height and record.width:
                detail = f"annotation {record.width}x{record.height}, image {w}x{h}"
                self._log.add(record.file, "size_mismatch", detail)
            keep, boxes = sanitize_boxes(self._log, record.file, boxes, w, h)
            boxes = boxes[keep]
        target: dict[str, Any] = {"boxes": boxes, "labels": record.labels[keep], "image_id": record.image_id}
        if self.include_crowd:
            target[self.flag_key] = record.iscrowd[keep]
        for key, value in record.extra.items():
            if key.startswith("box:"):
                target[key[4:]] = value[keep]
        if self.masks:
            target["masks"] = self._masks(record, keep, h, w)
        return finish_sample(image, target, self.transform)

    def __getitem__(self, index: int) -> tuple[Tensor | Any, dict[str, Any]]:
        """``(image uint8 [3, H, W], target)``; see the class docstring for the target and the transform."""
        return self._load_replacing(index, self._load)


def available_memory() -> int | None:
    """Bytes of memory available to new allocations now (Linux ``MemAvailable``; ``None`` where unknown)."""
    try:
        with open("/proc/meminfo", encoding="ascii") as f:
            for line in f:
                if line.startswith("MemAvailable:"):
                    return int(line.split()[1]) * 1024
    except (OSError, ValueError, IndexError):
        pass
    return None


def check_cache_fits(need: int, count: int, max_fraction: float) -> None:
    """Refuse with ``MemoryError`` a ``cache=ram`` of ``count`` images taking ``need`` bytes when that exceeds
    ``max_fraction`` of :func:`available_memory` (nothing is refused where it is unknown)."""
    free = available_memory()
    if free is not None and need > max_fraction * free:
        raise MemoryError(
            f"cache=ram: the {count} images need ~{need / 2**20:.0f} MiB, more than "
            f"{max_fraction:.0%} of the {free / 2**20:.0f} MiB available"
        )


def file_problem(path: str) -> str | None:
    """``"missing_file"``, ``"empty_file"`` or ``None`` for a file that exists and has bytes."""
    try:
        size = os.stat(path).st_size
    except FileNotFoundError:
        return "missing_file"
    except OSError:
        return "missing_file"
    return "empty_file" if size == 0 else None


def image_size(path: str) -> tuple[int, int] | None:
    """``(width, height)`` of an image file as stored (EXIF orientation ignored, like :func:`vision.io.read_image`),
    from its header without decoding the pixels; ``None`` when the header cannot be read (the image is then reported
    when it is loaded)."""
    try:
        from PIL import Image

        with Image.open(path) as image:
            width, height = image.size
    except Exception:  # any unreadable header (PIL raises several types): the load-time checks report the file
        return None
    return int(width), int(height)
