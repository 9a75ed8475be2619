"""Procedurally generated shapes with exact boxes and instance masks: the built-in detection data (no download).

Each image has a textured background (smooth colour blobs plus pixel noise) and ``min_objects..max_objects`` filled
shapes of random colour, size, rotation and optional stripe texture, drawn in order so later shapes occlude earlier
ones. Masks are the *visible* pixels of each shape after occlusion; each box is the tight box of its mask. A shape left
with less than ``min_visibility`` of its own area visible is erased from the image and not annotated, so every visible
shape is labelled. Shape placement avoids heavy overlap (a few candidate positions per shape), which keeps the set
learnable: a small detector reaches a high mAP on it.

Image ``i`` depends only on ``(seed, i)`` (its own ``numpy`` generator), so it is the same whatever the access order,
worker or process. Drawing uses OpenCV: about a millisecond per 256x256 image.

Same sample contract as :class:`vision.data.CocoDetection`.
"""

from __future__ import annotations

import math
from collections.abc import Sequence
from typing import Any

import cv2
import numpy as np
from torch import Tensor
from torch.utils.data import Dataset

from vision.data._bad import BadSampleLog, BadSampleMixin
from vision.data._detection import DetectionTransformFn, finish_sample
from vision.registry import DATASETS

__all__ = ["SHAPES", "SyntheticShapes", "synthetic"]

#: every shape the generator can draw
SHAPES = ("circle", "rectangle", "triangle", "ellipse", "square", "star", "hexagon", "cross")


def _polygon(kind: str, cx: float, cy: float, r: float, aspect: float, angle: float) -> np.ndarray:
    if kind == "rectangle":
        pts = np.array([[-1, -aspect], [1, -aspect], [1, aspect], [-1, aspect]], np.float64) * r
    elif kind == "square":
        pts = np.array([[-1, -1], [1, -1], [1, 1], [-1, 1]], np.float64) * (r * 0.75)
    elif kind in ("triangle", "hexagon"):
        k = 3 if kind == "triangle" else 6
        t = np.arange(k) * (2 * math.pi / k)
        pts = np.stack([np.cos(t), np.sin(t)], 1) * r
    elif kind == "star":
        t = np.arange(10) * (math.pi / 5)
        rad = np.where(np.arange(10) % 2 == 0, r, 0.45 * r)
        pts = np.stack([np.cos(t) * rad, np.sin(t) * rad], 1)
    elif kind == "cross":
        a = 0.33
        pts = np.array([[-a, -1], [a, -1], [a, -a], [1, -a], [1, a], [a, a], [a, 1], [-a, 1], [-a, a], [-1, a],
                        [-1, -a], [-a, -a]], np.float64) * r  # fmt: skip
    else:  # pragma: no cover - guarded by the constructor
        raise ValueError(kind)
    c, s = math.cos(angle), math.sin(angle)
    rot = pts @ np.array([[c, s], [-s, c]])
    return np.rint(rot + np.array([cx, cy])).astype(np.int32)


def _extent(kind: str, aspect: float) -> float:
    """Radius of the disc that contains the shape, in units of ``r``."""
    return {"rectangle": math.hypot(1.0, aspect), "square": 0.75 * math.sqrt(2.0), "cross": math.hypot(1.0, 0.33)}.get(
        kind, 1.0
    )


def _draw(canvas: np.ndarray, kind: str, geom: tuple[float, ...], value: int, offset: tuple[int, int]) -> None:
    """Rasterise one shape into ``canvas`` (LINE_8, integer geometry: identical wherever it is drawn)."""
    cx, cy, r, aspect, angle = geom
    ox, oy = offset
    if kind in ("circle", "ellipse"):
        axes = (round(r), round(r if kind == "circle" else r * aspect))
        cv2.ellipse(canvas, (round(cx) - ox, round(cy) - oy), axes, math.degrees(angle) if kind == "ellipse" else 0,
                    0, 360, value, -1, cv2.LINE_8)  # fmt: skip
    else:
        pts = _polygon(kind, cx, cy, r, aspect, angle) - np.array([ox, oy], np.int32)
        cv2.fillPoly(canvas, [pts], value, cv2.LINE_8)


@DATASETS.register("synthetic_shapes", tags={"detection", "segmentation"}, task="detection")
class SyntheticShapes(BadSampleMixin, Dataset):
    """Seeded random shapes with boxes and exact visible-part instance masks.

    Args:
        num_images: dataset length.
        size: ``H`` (square) or ``(H, W)``.
        seed: dataset seed; image ``i`` is generated from ``(seed, i)``.
        masks: add ``target["masks"]`` (``uint8 [N, H, W]``).
        classes: shape names (a subset of :data:`SHAPES`, in label order).
        min_objects, max_objects: number of shapes drawn per image (before visibility filtering).
        min_scale, max_scale: shape radius as a fraction of ``min(H, W)``.
        min_visibility: a shape keeping less than this fraction of its own area visible is erased and not annotated.
        max_overlap: candidate positions whose bounding circles overlap an earlier shape by more than this (IoU) are
            avoided when possible.
        noise: standard deviation (grey levels) of the background pixel noise.
        transform: detection transform (see :mod:`vision.data.coco`).

    Example:
        >>> ds = SyntheticShapes(1000, size=256, seed=0)
        >>> image, target = ds[0]  # uint8 [3, 256, 256]; boxes float32 [N, 4]; masks uint8 [N, 256, 256]
    """

    def __init__(
        self,
        num_images: int = 1000,
        *,
        size: int | tuple[int, int] = 256,
        seed: int = 0,
        masks: bool = True,
        classes: Sequence[str] = ("circle", "rectangle", "triangle"),
        min_objects: int = 1,
        max_objects: int = 6,
        min_scale: float = 0.06,
        max_scale: float = 0.22,
        min_visibility: float = 0.4,
        max_overlap: float = 0.25,
        noise: float = 8.0,
        transform: DetectionTransformFn | None = None,
    ) -> None:
        unknown = [c for c in classes if c not in SHAPES]
        if unknown or not classes:
            raise ValueError(f"unknown shape(s) {unknown}; choose classes from {SHAPES}")
        if not 1 <= max_objects < 128 or not 0 <= min_objects <= max_objects:
            raise ValueError(f"need 0 <= min_objects <= max_objects < 128, got {min_objects}, {max_objects}")
        self.num_images = int(num_images)
        self.size = (int(size), int(size)) if isinstance(size, int) else (int(size[0]), int(size[1]))
        self.seed, self.masks, self.classes = int(seed), masks, list(classes)
        self.min_objects, self.max_objects = int(min_objects), int(max_objects)
        self.min_scale, self.max_scale = float(min_scale), float(max_scale)
        self.min_visibility, self.max_overlap, self.noise = float(min_visibility), float(max_overlap), float(noise)
        self.transform = transform
        self.cat_ids = list(range(1, len(self.classes) + 1))
        self.label_to_cat_id = dict(enumerate(self.cat_ids))
        self._log = BadSampleLog(f"SyntheticShapes({self.num_images})", 1)

    def __len__(self) -> int:
        return self.num_images

    def _files(self) -> list[str]:
        return []

    def aspect_ratios(self) -> list[float]:
        return [self.size[1] / self.size[0]] * self.num_images

    @property
    def image_ids(self) -> list[int]:
        return list(range(self.num_images))

    def generate(self, index: int) -> tuple[np.ndarray, np.ndarray, np.ndarray, np.ndarray]:
        """Image ``index`` as ``(image uint8 [H, W, 3], id_map uint8 [H, W], boxes float32 [N, 4], labels int64
        [N])``; ``id_map == k + 1`` is the visible mask of object ``k``."""
        if not 0 <= index < self.num_images:
            raise IndexError(f"index {index} out of range for {self.num_images} images")
        rng = np.random.default_rng([self.seed, index])
        H, W = self.size
        # background: smooth colour blobs (a few random colours upsampled) + pixel noise, all uint8 (saturating)
        gh, gw = rng.integers(2, 6, size=2)
        coarse = rng.integers(0, 256, size=(gh, gw, 3), dtype=np.uint8)
        image = cv2.resize(coarse, (W, H), interpolation=cv2.INTER_CUBIC)
        if self.noise > 0:
            a = min(round(self.noise * math.sqrt(3.0)), 127)  # uniform noise with std ~ self.noise
            to_range = (np.arange(256) * (2 * a + 1) // 256).astype(np.uint8)  # uniform bytes -> 0..2a
            raw = np.frombuffer(rng.bytes(H * W), np.uint8).reshape(H, W)
            noise = cv2.cvtColor(cv2.LUT(raw, to_range), cv2.COLOR_GRAY2RGB)
            image = cv2.subtract(cv2.add(image, noise), np.full(3, a, np.float64))
        n = int(rng.integers(self.min_objects, self.max_objects + 1))
        side = min(H, W)
        ids = np.zeros((H, W), np.uint8)
        geoms, kinds, labels, colours, full, rects = [], [], [], [], [], []
        placed: list[tuple[float, float, float]] = []
        background = coarse.reshape(-1, 3).astype(np.float32)
        for k in range(n):
            label = int(rng.integers(len(self.classes)))
            kind = self.classes[label]
            r = max(float(rng.uniform(self.min_scale, self.max_scale)) * side, 3.0)
            aspect = float(rng.uniform(0.4, 0.65))
            angle = float(rng.uniform(0, 2 * math.pi))
            R = r * _extent(kind, aspect)  # the shape lies in the disc of radius R around its centre
            lo_x, hi_x = R + 1, max(R + 1, W - R - 2)
            lo_y, hi_y = R + 1, max(R + 1, H - R - 2)
            best, best_ov = (lo_x, lo_y), 2.0
            for _ in range(8):  # a few candidate positions: keep the least overlapping one
                cx, cy = float(rng.uniform(lo_x, hi_x)), float(rng.uniform(lo_y, hi_y))
                ov = max((_circle_iou(cx, cy, R, *p) for p in placed), default=0.0)
                if ov < best_ov:
                    best, best_ov = (cx, cy), ov
                if ov <= self.max_overlap:
                    break
            cx, cy = best
            placed.append((cx, cy, R))
            geom = (cx, cy, r, aspect, angle)
            x0, y0 = max(int(cx - R) - 2, 0), max(int(cy - R) - 2, 0)
            x1, y1 = min(int(cx + R) + 3, W), min(int(cy + R) + 3, H)
            local = np.zeros((y1 - y0, x1 - x0), np.uint8)
            _draw(local, kind, geom, 1, (x0, y0))
            _draw(ids, kind, geom, k + 1, (0, 0))
            geoms.append(geom)
            kinds.append(kind)
            labels.append(label)
            full.append(int(np.count_nonzero(local)))
            rects.append((x0, y0, x1, y1))
            colours.append(_contrasting_colour(rng, background))
        visible = [int(np.count_nonzero(ids[y0:y1, x0:x1] == k + 1)) for k, (x0, y0, x1, y1) in enumerate(rects)]
        keep = [k for k in range(n) if full[k] > 0 and visible[k] >= max(4, self.min_visibility * full[k])]
        # relabel: kept objects 1..len(keep) in drawing order, dropped ones erased (back to the background)
        relabel = np.zeros(256, np.uint8)
        relabel[np.asarray(keep, np.int64) + 1] = np.arange(1, len(keep) + 1)
        ids = cv2.LUT(ids, relabel)
        if keep:
            # colour look-up: entry j is object j's colour, entry 128 + j its colour on the light stripes
            amp = np.where(rng.random(len(keep)) < 0.5, rng.uniform(15, 45, len(keep)), 0.0)
            lut = np.zeros((256, 3), np.float64)
            cols = np.asarray([colours[k] for k in keep], np.float64)
            lut[1 : len(keep) + 1] = cols - amp[:, None]
            lut[129 : 129 + len(keep)] = cols + amp[:, None]
            lut = np.clip(lut, 0, 255).astype(np.uint8).reshape(256, 1, 3)
            index = ids
            if amp.any():
                freq, theta = rng.uniform(0.1, 0.3), rng.uniform(0, math.pi)
                phase = (np.arange(W, dtype=np.float32) * (math.cos(theta) * freq))[None, :] + (
                    np.arange(H, dtype=np.float32) * (math.sin(theta) * freq)
                )[:, None]
                light = (phase.astype(np.int32) & 1).astype(np.uint8) << 7
                index = cv2.bitwise_or(ids, light)
            painted = cv2.LUT(cv2.cvtColor(index, cv2.COLOR_GRAY2RGB), lut)
            cv2.copyTo(painted, ids, image)  # where ids != 0
        boxes = np.zeros((len(keep), 4), np.float32)
        for j, k in enumerate(keep):
            x0, y0, x1, y1 = rects[k]
            region = ids[y0:y1, x0:x1] == j + 1
            rows, cols = np.flatnonzero(region.any(1)), np.flatnonzero(region.any(0))
            boxes[j] = (x0 + cols[0], y0 + rows[0], x0 + cols[-1] + 1, y0 + rows[-1] + 1)
        return image, ids, boxes, np.asarray([labels[k] for k in keep], np.int64)

    def __getitem__(self, index: int) -> tuple[Tensor | Any, dict[str, Any]]:
        """``(image uint8 [3, H, W], {"boxes", "labels", "image_id", "masks"})`` (see the class docstring)."""
        n = self.num_images
        if not -n <= index < n:
            raise IndexError(f"index {index} out of range for {n} images")
        index %= n
        image, ids, boxes, labels = self.generate(index)
        target: dict[str, Any] = {"boxes": boxes, "labels": labels, "image_id": index}
        if self.masks:
            target["masks"] = (ids[None] == np.arange(1, len(boxes) + 1, dtype=np.uint8)[:, None, None]).view(np.uint8)
        return finish_sample(image, target, self.transform)

    def to_coco(self) -> dict[str, Any]:
        """The ground truth as a COCO instances dict (RLE masks), e.g. for ``pycocotools`` ``COCOeval``."""
        from pycocotools import mask as mask_utils

        H, W = self.size
        images, anns = [], []
        for i in range(self.num_images):
            _, ids, boxes, labels = self.generate(i)
            images.append({"id": i, "width": W, "height": H, "file_name": f"{i:06d}.png"})
            for k, (box, label) in enumerate(zip(boxes, labels)):
                rle = mask_utils.encode(np.asfortranarray(ids == k + 1).astype(np.uint8))
                rle["counts"] = rle["counts"].decode("ascii")
                x0, y0, x1, y1 = (float(v) for v in box)
                anns.append({"id": len(anns) + 1, "image_id": i, "category_id": self.cat_ids[int(label)],
                             "bbox": [x0, y0, x1 - x0, y1 - y0], "area": float(mask_utils.area(rle)), "iscrowd": 0,
                             "segmentation": rle})  # fmt: skip
        cats = [{"id": c, "name": n} for c, n in zip(self.cat_ids, self.classes)]
        return {"images": images, "annotations": anns, "categories": cats}

    def __repr__(self) -> str:
        return f"SyntheticShapes(num_images={self.num_images}, size={self.size}, classes={self.classes})"


def _circle_iou(x: float, y: float, r: float, x2: float, y2: float, r2: float) -> float:
    """IoU of two discs (used to spread shapes out)."""
    d = math.hypot(x - x2, y - y2)
    if d >= r + r2:
        return 0.0
    a1, a2 = math.pi * r * r, math.pi * r2 * r2
    if d <= abs(r - r2):
        inter = min(a1, a2)
    else:
        c1 = math.acos(max(-1.0, min(1.0, (d * d + r * r - r2 * r2) / (2 * d * r))))
        c2 = math.acos(max(-1.0, min(1.0, (d * d + r2 * r2 - r * r) / (2 * d * r2))))
        inter = r * r * (c1 - math.sin(2 * c1) / 2) + r2 * r2 * (c2 - math.sin(2 * c2) / 2)
    return inter / (a1 + a2 - inter)


def _contrasting_colour(rng: np.random.Generator, background: np.ndarray) -> np.ndarray:
    """A random colour far (in RGB) from every background blob colour: the best of 6 draws."""
    cands = rng.integers(0, 256, size=(6, 3)).astype(np.float32)
    dist = np.sqrt(((cands[:, None, :] - background[None]) ** 2).sum(-1)).min(1)
    return cands[int(dist.argmax())]


@DATASETS.register("synthetic", tags={"detection", "segmentation"}, task="detection")
def synthetic(
    *,
    split: str = "train",
    train: int = 512,
    val: int = 128,
    size: int = 256,
    seed: int = 0,
    max_objects: int = 6,
    masks: bool = True,
    transform: Any = None,
) -> SyntheticShapes:
    """The built-in detection data (``data=synthetic``): ``train`` and ``val`` images of :class:`SyntheticShapes`
    from two unrelated seeds, so the splits never share an image."""
    if split not in ("train", "val"):
        raise ValueError(f"synthetic split must be 'train' or 'val', got {split!r}")
    count = int(train if split == "train" else val)
    return SyntheticShapes(
        count,
        size=int(size),
        seed=int(seed) + (1_000_003 if split == "val" else 0),
        masks=masks,
        max_objects=int(max_objects),
        transform=transform,
    )
