"""Bookkeeping of :class:`vision.data.GpuAugment`: padding batches and masks, boxes and areas from instance maps,
and padded targets back to one dict per image."""

from __future__ import annotations

from collections.abc import Sequence
from typing import Any

import torch
from torch import Tensor

from vision.data.transforms import BOX_FIELDS


def _pad_masks(masks: Tensor, H: int, W: int) -> Tensor:
    if masks.shape[-2:] == (H, W):
        return masks
    out = masks.new_zeros(masks.shape[0], H, W)
    out[:, : masks.shape[1], : masks.shape[2]] = masks
    return out


def _pad_images(images: list[Tensor], fill: float) -> tuple[Tensor, Tensor]:
    """Differently sized images -> one ``[B, 3, Hmax, Wmax]`` batch filled with ``fill``, and their sizes."""
    H = max(int(i.shape[-2]) for i in images)
    W = max(int(i.shape[-1]) for i in images)
    batch = images[0].new_full((len(images), 3, H, W), round(fill))
    for b, img in enumerate(images):  # one copy per image (only for lists of different sizes)
        batch[b, :, : img.shape[-2], : img.shape[-1]] = img
    sizes = torch.tensor([[i.shape[-2], i.shape[-1]] for i in images], dtype=torch.float32, device=batch.device)
    return batch, sizes


def _boxes_from_map(bins: Tensor, S: int, M: int) -> tuple[Tensor, Tensor]:
    """Tight boxes ``[B, S*M, 4]`` (pixel edges) and pixel counts ``[B, S*M]`` of every instance in ``bins [B, h, w]``
    (``slot * (M + 1) + local id``; local id 0 is background and is discarded)."""
    B, h, w = bins.shape
    dev = bins.device
    nb = S * (M + 1)
    idx = (bins + torch.arange(B, device=dev).view(B, 1, 1) * nb).view(-1)
    xs = torch.arange(w, device=dev, dtype=torch.int32).view(1, 1, w).expand(B, h, w)
    ys = torch.arange(h, device=dev, dtype=torch.int32).view(1, h, 1).expand(B, h, w)
    coords = torch.stack([xs, ys]).view(2, -1)
    idx2 = idx.view(1, -1).expand(2, -1)
    lo = torch.full((2, B * nb), torch.iinfo(torch.int32).max, dtype=torch.int32, device=dev)
    lo = lo.scatter_reduce_(1, idx2, coords, "amin")
    hi = torch.full((2, B * nb), -1, dtype=torch.int32, device=dev).scatter_reduce_(1, idx2, coords, "amax")
    ones = torch.ones(1, dtype=torch.float32, device=dev).expand(idx.numel())
    count = torch.zeros(B * nb, dtype=torch.float32, device=dev).scatter_add_(0, idx, ones)
    boxes = torch.stack([lo[0], lo[1], hi[0] + 1, hi[1] + 1], -1).to(torch.float32)
    boxes = torch.where((count > 0)[:, None], boxes, 0.0)
    boxes = boxes.view(B, S, M + 1, 4)[:, :, 1:].reshape(B, S * M, 4)
    return boxes, count.view(B, S, M + 1)[:, :, 1:].reshape(B, S * M)


def _areas(ids: Tensor, M: int) -> Tensor:
    """Pixel count ``[B, M]`` of each id ``1..M`` in ``ids [B, H, W]``."""
    B = ids.shape[0]
    dev = ids.device
    idx = (ids.long() + torch.arange(B, device=dev).view(B, 1, 1) * (M + 1)).view(-1)
    ones = torch.ones(1, dtype=torch.float32, device=dev).expand(idx.numel())
    count = torch.zeros(B * (M + 1), dtype=torch.float32, device=dev).scatter_add_(0, idx, ones)
    return count.view(B, M + 1)[:, 1:]


def _unpad(result: dict[str, Tensor], targets: Sequence[dict[str, Any]]) -> list[dict[str, Any]]:
    """Padded output -> one dict per image (one host sync for the counts; the rest are views)."""
    valid = result["valid"]
    B = valid.shape[0]
    counts = valid.sum(1).tolist()
    b_idx, k_idx = valid.nonzero(as_tuple=True)
    per_box = {k: v[b_idx, k_idx] for k, v in result.items() if k not in ("valid", "instance_map")}
    if "instance_map" in result:
        imap = result["instance_map"]
        per_box["masks"] = (imap[b_idx] == (k_idx + 1).view(-1, 1, 1).to(imap.dtype)).to(torch.uint8)
    split = {k: torch.split(v, counts) for k, v in per_box.items()}
    out = []
    for i in range(B):  # bookkeeping only: building the dicts from views
        t = {k: v for k, v in targets[i].items() if k not in ("boxes", "masks", *BOX_FIELDS)}
        for k, parts in split.items():
            if k in ("boxes", "masks", "labels") or k in targets[i] or not targets[i]:
                t[k] = parts[i]
        out.append(t)
    return out
