"""Letterbox geometry, one definition for every path (YOLO inference, the CPU eval transform, the GPU augmenter's
canvas): an ``H x W`` image is scaled by ``r = size / max(H, W)`` to ``(round(H r), round(W r))`` (at least 1 px)
and centred on a canvas, so that ``letterboxed = original * scale + pad`` with ``info = (scale_x, scale_y, pad_left,
pad_top)``; :func:`unletterbox` is the inverse for boxes.
"""

from __future__ import annotations

from torch import Tensor

__all__ = ["letterbox_info", "scaled_size", "unletterbox"]


def scaled_size(height: int, width: int, size: int) -> tuple[int, int]:
    """``(h, w)`` of an ``height x width`` image whose longer side is scaled to ``size`` (each side >= 1)."""
    r = size / max(height, width)
    return max(1, round(height * r)), max(1, round(width * r))


def letterbox_info(height: int, width: int, size: int, canvas: tuple[int, int] | None = None) -> list[float]:
    """``[scale_x, scale_y, pad_left, pad_top]`` of the image on a ``canvas = (Hc, Wc)`` (default ``size x size``)."""
    h, w = scaled_size(height, width, size)
    Hc, Wc = canvas if canvas is not None else (size, size)
    return [w / width, h / height, float((Wc - w) // 2), float((Hc - h) // 2)]


def unletterbox(boxes: Tensor, info: Tensor, sizes: Tensor | None = None) -> Tensor:
    """Map xyxy boxes from the letterboxed canvas back to the original image.

    Args:
        boxes: ``[..., K, 4]`` (or ``[K, 4]`` with one ``info``).
        info: ``[..., 4]`` ``(scale_x, scale_y, pad_left, pad_top)`` per image.
        sizes: optional ``[..., 2]`` ``(H, W)`` of the originals: boxes are clipped to them.
    """
    info = info.to(boxes.dtype)[..., None, :]
    sx, sy, px, py = info.unbind(-1)
    x1, y1, x2, y2 = boxes.unbind(-1)
    out = boxes.new_empty(boxes.shape)
    out[..., 0], out[..., 1], out[..., 2], out[..., 3] = (x1 - px) / sx, (y1 - py) / sy, (x2 - px) / sx, (y2 - py) / sy
    if sizes is None:
        return out
    H, W = sizes.to(boxes.dtype)[..., None, 0], sizes.to(boxes.dtype)[..., None, 1]
    hi = out.new_empty(out.shape)
    hi[..., 0], hi[..., 1], hi[..., 2], hi[..., 3] = W, H, W, H
    return out.clamp(min=0).minimum(hi)
