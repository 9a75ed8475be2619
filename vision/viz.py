"""Drawing boxes, masks and labels on images, and image grids (OpenCV; uint8 in, uint8 out).

Every function takes and returns ``uint8 [3, H, W]`` RGB tensors (CPU or not; the result is on the CPU).

Example:
    >>> from vision.viz import draw_boxes, make_grid, save_image
    >>> tiles = [draw_boxes(img, t["boxes"], t["labels"], class_names=ds.classes) for img, t in samples]
    >>> save_image(make_grid(tiles, nrow=4), "grid.png")
"""

from __future__ import annotations

import colorsys
import os
from collections.abc import Sequence
from pathlib import Path

import cv2
import numpy as np
import torch
from torch import Tensor

from vision.io import write_image

__all__ = ["denormalize", "draw_boxes", "make_grid", "palette", "save_image"]


def palette(n: int) -> list[tuple[int, int, int]]:
    """``n`` well-separated RGB colours (golden-ratio hues), the same for the same ``n``."""
    out = []
    for i in range(n):
        h = (i * 0.618033988749895) % 1.0
        r, g, b = colorsys.hsv_to_rgb(h, 0.85, 0.95 if i % 2 == 0 else 0.75)
        out.append((int(r * 255), int(g * 255), int(b * 255)))
    return out


def _check(image: Tensor) -> None:
    """Refuse anything but a ``uint8 [3, H, W]`` (or ``[1, H, W]``) tensor, saying what it got."""
    if not isinstance(image, Tensor) or image.dim() != 3 or image.shape[0] not in (1, 3):
        shape = tuple(image.shape) if isinstance(image, Tensor) else type(image).__name__
        raise ValueError(f"expected an image tensor [3, H, W], got {shape}")
    if image.dtype != torch.uint8:
        raise ValueError(f"expected an uint8 image, got {image.dtype} (see vision.viz.denormalize)")


def _hwc(image: Tensor) -> np.ndarray:
    _check(image)
    return np.ascontiguousarray(image.detach().cpu().expand(3, -1, -1).permute(1, 2, 0).numpy())


def denormalize(
    image: Tensor, *, mean: Sequence[float] = (0.0, 0.0, 0.0), std: Sequence[float] = (1.0, 1.0, 1.0)
) -> Tensor:
    """A normalised float image ``[3, H, W]`` (``(x / 255 - mean) / std``) back to ``uint8 [3, H, W]``."""
    m = torch.tensor(mean, dtype=torch.float32, device=image.device).view(3, 1, 1)
    s = torch.tensor(std, dtype=torch.float32, device=image.device).view(3, 1, 1)
    return ((image.float() * s + m) * 255.0).round().clamp(0, 255).to(torch.uint8)


def draw_boxes(
    image: Tensor,
    boxes: Tensor | np.ndarray,
    labels: Tensor | Sequence[int] | None = None,
    scores: Tensor | Sequence[float] | None = None,
    masks: Tensor | np.ndarray | None = None,
    class_names: Sequence[str] | None = None,
    *,
    width: int = 2,
    font_scale: float = 0.45,
    mask_alpha: float = 0.45,
) -> Tensor:
    """Draw ``boxes [N, 4]`` (xyxy pixels), optional masks ``[N, H, W]`` and ``"name score"`` captions.

    Colours follow the label (one colour per class), or the instance index without labels.

    Returns:
        a new ``uint8 [3, H, W]`` tensor; the input is not modified.
    """
    img = _hwc(image).copy()
    H, W = img.shape[:2]
    boxes_np = np.asarray(boxes.detach().cpu() if isinstance(boxes, Tensor) else boxes, np.float64).reshape(-1, 4)
    n = len(boxes_np)
    lab = None if labels is None else [int(v) for v in (labels.tolist() if isinstance(labels, Tensor) else labels)]
    sc = None if scores is None else [float(v) for v in (scores.tolist() if isinstance(scores, Tensor) else scores)]
    keys = lab if lab is not None else list(range(n))
    colours = palette(max(max(keys, default=0) + 1, 1))
    if masks is not None and n:
        m = masks.detach().cpu().numpy() if isinstance(masks, Tensor) else np.asarray(masks)
        m = m.reshape(-1, H, W)
        overlay = img.copy()
        for i in range(min(n, len(m))):
            overlay[m[i] > 0] = colours[keys[i]]
        img = cv2.addWeighted(overlay, mask_alpha, img, 1.0 - mask_alpha, 0.0)
    for i, (x0, y0, x1, y1) in enumerate(boxes_np):
        colour = colours[keys[i]]
        p0 = (round(x0), round(y0))
        p1 = (max(round(x1) - 1, p0[0]), max(round(y1) - 1, p0[1]))  # boxes are pixel edges; cv2 draws pixels
        cv2.rectangle(img, p0, p1, colour, width, cv2.LINE_AA)
        parts = []
        if lab is not None:
            parts.append(
                class_names[lab[i]] if class_names is not None and 0 <= lab[i] < len(class_names) else str(lab[i])
            )
        if sc is not None:
            parts.append(f"{sc[i]:.2f}")
        if parts:
            text = " ".join(parts)
            (tw, th), base = cv2.getTextSize(text, cv2.FONT_HERSHEY_SIMPLEX, font_scale, 1)
            ty = p0[1] - 3 if p0[1] - th - base - 3 >= 0 else min(p0[1] + th + 3, H - 1)
            cv2.rectangle(img, (p0[0], ty - th - 2), (p0[0] + tw + 2, ty + base - 1), colour, -1)
            luminance = 0.299 * colour[0] + 0.587 * colour[1] + 0.114 * colour[2]
            ink = (0, 0, 0) if luminance > 140 else (255, 255, 255)
            cv2.putText(img, text, (p0[0] + 1, ty - 1), cv2.FONT_HERSHEY_SIMPLEX, font_scale, ink, 1, cv2.LINE_AA)
    return torch.from_numpy(np.ascontiguousarray(img.transpose(2, 0, 1)))


def make_grid(images: Sequence[Tensor], *, nrow: int | None = None, padding: int = 2, pad_value: int = 255) -> Tensor:
    """Tile ``uint8 [3, H_i, W_i]`` images into one ``uint8 [3, H, W]`` grid (``nrow`` per row, default ~square).

    Cells take the largest image size; smaller images sit at the top-left of their cell.
    """
    if not images:
        raise ValueError("make_grid needs at least one image")
    arrays = [_hwc(i) for i in images]
    n = len(arrays)
    cols = nrow or int(np.ceil(np.sqrt(n)))
    rows = int(np.ceil(n / cols))
    ch = max(a.shape[0] for a in arrays)
    cw = max(a.shape[1] for a in arrays)
    grid = np.full((rows * ch + (rows + 1) * padding, cols * cw + (cols + 1) * padding, 3), pad_value, np.uint8)
    for k, a in enumerate(arrays):
        r, c = divmod(k, cols)
        y, x = padding + r * (ch + padding), padding + c * (cw + padding)
        grid[y : y + a.shape[0], x : x + a.shape[1]] = a
    return torch.from_numpy(np.ascontiguousarray(grid.transpose(2, 0, 1)))


def save_image(image: Tensor, path: str | os.PathLike) -> Path:
    """Write ``uint8 [3, H, W]`` RGB to ``path`` (format from the suffix, e.g. ``.png``); returns the path.

    The same writer as :func:`vision.io.write_image` (atomic replace, folders made; an unknown suffix raises
    ``ValueError`` naming the path and the suffixes OpenCV can write).
    """
    _check(image)
    return write_image(path, image)
