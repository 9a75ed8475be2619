"""Downscale-only resizing for batched augmentation: the CPU half of :class:`vision.data.GpuAugment`."""

from __future__ import annotations

from collections.abc import Mapping
from typing import Any

import cv2
import numpy as np
import torch
from torch import Tensor

from vision.data.transforms import _as_hwc, _check_size, _interp, _np, _to_chw

__all__ = ["ShrinkTransform"]


class ShrinkTransform:
    """Downscale (never upscale) an image so that its longer side is at most ``size``; boxes and masks follow.

    The CPU half of batched augmentation (:class:`vision.data.GpuAugment`): the loader workers decode and shrink each
    image with OpenCV on ``uint8`` (area interpolation: no aliasing), so the batch augmenter warps 4x fewer pixels at
    ``imgsz=320`` from 640 px photos, and less crosses the worker pipe or the PCIe bus. Nothing else changes: the
    augmenter letterboxes whatever size it gets to its output size. Output ``uint8 [3, h, w]`` and the target with
    ``boxes`` scaled by ``(w / W, h / H)`` and ``masks`` resized (nearest), as tensors.
    """

    def __init__(self, size: int, interpolation: str = "area") -> None:
        self.size, self.interpolation = _check_size(size), _interp(interpolation)
        self.name, self.kwargs = "detection_shrink", {"size": size, "interpolation": interpolation}

    def __repr__(self) -> str:
        return f"build_transform('detection_shrink', size={self.size})"

    def __call__(self, image: np.ndarray | Tensor, target: Mapping[str, Any]) -> tuple[Tensor, dict[str, Any]]:
        img = _as_hwc(image)
        H, W = img.shape[:2]
        result = dict(target)
        r = self.size / max(H, W)
        if r < 1.0:
            h, w = max(1, round(H * r)), max(1, round(W * r))
            img = cv2.resize(img, (w, h), interpolation=self.interpolation)
            if "boxes" in target:
                boxes = torch.as_tensor(_np(target["boxes"], np.float32).reshape(-1, 4))
                result["boxes"] = boxes * torch.tensor([w / W, h / H, w / W, h / H])
            if target.get("masks") is not None:
                masks = _np(target["masks"], np.uint8).reshape(-1, H, W)
                small = [cv2.resize(m, (w, h), interpolation=cv2.INTER_NEAREST) for m in masks]
                result["masks"] = torch.from_numpy(np.stack(small) if small else np.zeros((0, h, w), np.uint8))
        for key, value in result.items():
            if isinstance(value, np.ndarray):
                result[key] = torch.from_numpy(np.ascontiguousarray(value))
        return _to_chw(img), result
