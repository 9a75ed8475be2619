"""Instance masks as boxes and as one id map (numpy, for the CPU data pipeline)."""

from __future__ import annotations

import numpy as np

__all__ = ["disjoint_id_map", "masks_to_boxes"]


def masks_to_boxes(masks: np.ndarray) -> np.ndarray:
    """Tight boxes ``float32 [N, 4]`` (xyxy, pixel edges: a single pixel at (x, y) -> ``[x, y, x+1, y+1]``) of
    ``masks [N, H, W]``; an empty mask gives ``[0, 0, 0, 0]``."""
    n = masks.shape[0]
    if n == 0:
        return np.zeros((0, 4), np.float32)
    rows = masks.any(axis=2)  # [N, H]
    cols = masks.any(axis=1)  # [N, W]
    h, w = rows.shape[1], cols.shape[1]
    y0 = rows.argmax(1)
    y1 = h - rows[:, ::-1].argmax(1)
    x0 = cols.argmax(1)
    x1 = w - cols[:, ::-1].argmax(1)
    boxes = np.stack([x0, y0, x1, y1], 1).astype(np.float32)
    boxes[~rows.any(1)] = 0
    return boxes


def disjoint_id_map(masks: np.ndarray) -> np.ndarray | None:
    """One ``uint8``/``uint16`` id map for non-overlapping masks ``[N, H, W]`` (``None`` if they overlap)."""
    n = masks.shape[0]
    if n >= 65535:
        return None
    binary = masks != 0
    if n < 255:  # one vectorised pass: ids = max_k (k + 1) * mask_k
        ids = (binary * np.arange(1, n + 1, dtype=np.uint8)[:, None, None]).max(0, initial=0)
    else:
        ids = np.zeros(masks.shape[1:], np.uint16)
        for k in range(n):
            ids[binary[k]] = k + 1
    # masks overlap iff some pixel is counted by several masks
    return ids if np.count_nonzero(binary) == np.count_nonzero(ids) else None
