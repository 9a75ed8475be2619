"""Data of the generation task: in-memory image tensors, resized/cropped folders, flat folders without classes."""

from __future__ import annotations

from collections.abc import Callable
from pathlib import Path
from typing import Any

import numpy as np
import torch
from torch import Tensor
from torch.utils.data import Dataset

__all__ = ["REF_MAX", "FlatFolder", "ImageTensors", "RepeatDataset", "ResizeCrop", "stack_images"]

REF_MAX = 10000  # at most this many images of a folder dataset serve as metric references


class ImageTensors(Dataset):
    """``(uint8 [C, S, S], label)`` from an in-memory uint8 tensor, ``repeat`` times per epoch, optional h-flip."""

    def __init__(self, images: Tensor, labels: Tensor, *, repeat: int = 1, hflip: float = 0.0) -> None:
        self.images, self.labels = images, labels
        self.repeat, self.hflip = max(1, int(repeat)), float(hflip)

    def __len__(self) -> int:
        return len(self.images) * self.repeat

    def __getitem__(self, index: int) -> tuple[Tensor, int]:
        i = index % len(self.images)
        image = self.images[i]
        if self.hflip > 0 and float(torch.rand(())) < self.hflip:
            image = image.flip(-1)
        return image, int(self.labels[i])


class RepeatDataset(Dataset):
    def __init__(self, dataset: Dataset, repeat: int) -> None:
        self.dataset, self.repeat = dataset, max(1, int(repeat))
        self.transform = getattr(dataset, "transform", None)

    def __len__(self) -> int:
        return len(self.dataset) * self.repeat  # type: ignore[arg-type]

    def __getitem__(self, index: int) -> Any:
        return self.dataset[index % len(self.dataset)]  # type: ignore[arg-type]


class ResizeCrop:
    """``uint8 [H, W, 3]`` numpy -> ``uint8 [C, S, S]`` tensor: shorter side to ``S`` (area), centre crop, grey for C=1,
    random horizontal flip with probability ``hflip``."""

    def __init__(self, size: int, channels: int, hflip: float = 0.0) -> None:
        self.size, self.channels, self.hflip = size, channels, hflip

    def __call__(self, image: np.ndarray) -> Tensor:
        import cv2

        h, w = image.shape[:2]
        scale = self.size / min(h, w)
        nh, nw = max(self.size, round(h * scale)), max(self.size, round(w * scale))
        image = cv2.resize(image, (nw, nh), interpolation=cv2.INTER_AREA if scale < 1 else cv2.INTER_LINEAR)
        y0, x0 = (nh - self.size) // 2, (nw - self.size) // 2
        image = image[y0 : y0 + self.size, x0 : x0 + self.size]
        out = torch.from_numpy(np.ascontiguousarray(image)).permute(2, 0, 1)
        if self.channels == 1:
            out = out.float().mean(dim=0, keepdim=True).round().to(torch.uint8)
        if self.hflip > 0 and float(torch.rand(())) < self.hflip:
            out = out.flip(-1)
        return out


class FlatFolder(Dataset):
    """Every image of a folder (no classes): ``(transform(uint8 [H, W, 3]), 0)``."""

    def __init__(self, root: Path, *, transform: Callable[[np.ndarray], Any]) -> None:
        from vision.io import expand_source

        self.files = expand_source(root)
        self.transform = transform
        self.classes: list[str] = []

    def __len__(self) -> int:
        return len(self.files)

    def __getitem__(self, index: int) -> tuple[Any, int]:
        from vision.io import read_image

        return self.transform(read_image(self.files[index], layout="hwc")), 0


def stack_images(dataset: Dataset, limit: int, seed: int) -> Tensor:
    n = len(dataset)  # type: ignore[arg-type]
    order = np.random.default_rng(seed).permutation(n)[:limit] if n > limit else np.arange(n)
    return torch.stack([dataset[int(i)][0] for i in sorted(order)])
