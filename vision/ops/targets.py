"""Ragged detection targets -> fixed-shape padded tensors: the one form targets take from the collate or the GPU
augmenter to a loss (``{"boxes" [B, M, 4], "labels" [B, M], "valid" [B, M]}``)."""

from __future__ import annotations

from collections.abc import Mapping, Sequence
from typing import Any

import torch
from torch import Tensor

__all__ = ["pad_targets"]


def pad_targets(
    targets: Sequence[Mapping[str, Any]],
    *,
    max_boxes: int | None = None,
    device: torch.device | str | None = None,
    fields: Sequence[str] = (),
) -> dict[str, Tensor]:
    """Pad a list of targets to fixed-shape tensors.

    Returns ``{"boxes": float32 [B, M, 4], "labels": int64 [B, M], "valid": bool [B, M]}`` plus every per-box field
    named in ``fields`` that all targets have (``[B, M]``); padding is zeros with
    ``valid=False``. ``M`` is ``max_boxes`` or the largest box count (at least 1); extra boxes beyond ``max_boxes`` are
    cut. Built with one concatenation and one scatter per field (no per-image kernels).
    """
    B = len(targets)
    counts = [int(t["boxes"].shape[0]) for t in targets]
    M = max(max(counts, default=0), 1) if max_boxes is None else int(max_boxes)
    dev = torch.device(device) if device is not None else (targets[0]["boxes"].device if B else torch.device("cpu"))
    out = {"boxes": torch.zeros(B, M, 4, device=dev), "labels": torch.zeros(B, M, dtype=torch.int64, device=dev),
           "valid": torch.zeros(B, M, dtype=torch.bool, device=dev)}  # fmt: skip
    total = sum(counts)
    if total == 0:
        return out
    counts_t = torch.tensor(counts)
    batch_idx = torch.repeat_interleave(torch.arange(B), counts_t)
    starts = torch.cumsum(counts_t, 0) - counts_t
    pos = torch.arange(total) - starts[batch_idx]
    keep = pos < M
    b, p = batch_idx[keep].to(dev), pos[keep].to(dev)
    keep_d = keep.to(dev)
    out["boxes"][b, p] = torch.cat([t["boxes"].to(dev, torch.float32) for t in targets])[keep_d]
    out["labels"][b, p] = torch.cat([torch.as_tensor(t["labels"]).to(dev, torch.int64) for t in targets])[keep_d]
    out["valid"][b, p] = True
    for key in fields:
        if all(key in t for t in targets):
            values = torch.cat([torch.as_tensor(t[key]).to(dev) for t in targets])
            out[key] = torch.zeros(B, M, dtype=values.dtype, device=dev)
            out[key][b, p] = values[keep_d]
    return out
