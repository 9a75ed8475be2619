"""YOLO input and output plumbing: letterboxing a batch, mapping boxes back, splitting padded detections, and
replaying inference through a CUDA graph for fixed input shapes.

Letterbox: an image ``[3, H, W]`` is scaled by ``r = size / max(H, W)`` (up or down; bilinear) to ``(round(H r),
round(W r))`` and centred on a canvas filled with grey ``fill``: the canvas is the scaled image rounded up to a
multiple of ``stride`` (``fixed=False``; for a list of images of different sizes, the largest such canvas of the
batch) or the fixed square ``size x size`` (``fixed=True``, rounded up to ``stride``). Each image records
``(scale_x, scale_y, pad_left, pad_top)`` so that ``letterboxed = original * scale + pad``.
"""

from __future__ import annotations

import math
import threading
from collections import OrderedDict
from collections.abc import Callable, Hashable, Sequence
from typing import Any

import torch
import torch.nn.functional as F
from torch import Tensor

from vision.models.detection.common import as_image_list
from vision.ops.image_range import check_unit_range
from vision.ops.letterbox import letterbox_info, scaled_size, unletterbox

__all__ = [
    "CACHE_SIZE",
    "GraphedCall",
    "as_float_images",
    "cached",
    "example_input",
    "letterbox",
    "pad_to_stride",
    "split_detections",
    "unletterbox",
]

FILL = 114 / 255


def as_float_images(images: Tensor | Sequence[Tensor], *, check_range: bool = True) -> list[Tensor] | Tensor:
    """Validate YOLO input and return it as float32 in [0, 1], keeping its form.

    Args:
        images: a float or ``uint8`` ``[B, 3, H, W]`` tensor (a single ``[3, H, W]`` is one image), or a list of
            ``[3, H_i, W_i]`` (``[1, H_i, W_i]`` is repeated to 3 channels; validated by
            :func:`~vision.models.detection.common.as_image_list`). ``uint8`` is divided by 255; other floating dtypes
            (float64, float16 ...) are cast to float32.

        check_range: refuse float values outside [0, 1] (one host read per batch). ``False`` skips it for a CUDA
            batch tensor (the training loss: data from the pipeline, no synchronisation in the hot loop).

    Returns:
        ``[B, 3, H, W]`` float32 for a tensor, a list of float32 ``[3, H_i, W_i]`` for a list.

    Raises:
        TypeError / ValueError: naming the offending image: wrong shape, non-float dtype, empty list, ``H`` or ``W``
            of 0, float values outside [0, 1] (0..255 floats: the message says to pass ``x / 255``).
    """
    if isinstance(images, Tensor):
        batch = images[None] if images.dim() == 3 else images
        if batch.dim() != 4 or batch.shape[1] != 3:
            raise ValueError(f"expected images [B, 3, H, W] or a list of [3, H, W], got shape {tuple(images.shape)}")
        if batch.shape[0] == 0:
            raise ValueError("got a batch of 0 images")
        if batch.shape[-2] == 0 or batch.shape[-1] == 0:
            raise ValueError(f"images have an empty side: shape {tuple(images.shape)}")
        if batch.dtype == torch.uint8:
            return batch.float() / 255
        if not batch.is_floating_point():
            raise TypeError(f"images must be float in [0, 1] or uint8, got {batch.dtype}")
        if check_range or batch.device.type == "cpu":  # one host read per batch; free on the CPU
            check_unit_range(batch)
        return batch.float()
    out = as_image_list(images)
    if not out:
        raise ValueError("got an empty list of images")
    for i, im in enumerate(out):
        if im.shape[-2] == 0 or im.shape[-1] == 0:
            raise ValueError(f"image {i} is empty: shape {tuple(im.shape)}")
    return [im.float() for im in out]


def _round_up(x: int, k: int) -> int:
    return int(math.ceil(x / k) * k)


def letterbox(
    images: Tensor | Sequence[Tensor], *, size: int, stride: int = 32, fixed: bool = False, fill: float = FILL
) -> tuple[Tensor, Tensor, Tensor]:
    """Letterbox images (see the module docstring).

    Args:
        images: float ``[B, 3, H, W]`` or a list of float ``[3, H_i, W_i]``.
        size: target length of the longer side.
        stride: the canvas is a multiple of it.
        fixed: use the square canvas ``size x size`` (rounded up to ``stride``) whatever the images.
        fill: value of the padding.

    Returns:
        ``(batch [B, 3, Hc, Wc], letterbox [B, 4] = (scale_x, scale_y, pad_left, pad_top), sizes [B, 2] = (H, W))``
        (the last two float32 on the images' device).
    """
    if isinstance(images, Tensor):
        B, _, H, W = images.shape
        hw = [(H, W)] * B
        device = images.device
    else:
        hw = [(int(im.shape[-2]), int(im.shape[-1])) for im in images]
        device = images[0].device
    scaled = [scaled_size(H, W, size) for H, W in hw]
    if fixed:
        Hc = Wc = _round_up(size, stride)
    else:
        Hc = max(_round_up(h, stride) for h, _ in scaled)
        Wc = max(_round_up(w, stride) for _, w in scaled)
    info = torch.tensor([letterbox_info(H, W, size, (Hc, Wc)) for H, W in hw], dtype=torch.float32)
    sizes = torch.tensor(hw, dtype=torch.float32)
    if isinstance(images, Tensor) and len(set(scaled)) == 1:  # one resize and one pad for the whole batch
        h, w = scaled[0]
        x = images if (h, w) == tuple(images.shape[-2:]) else _resize(images, (h, w))
        left, top = (Wc - w) // 2, (Hc - h) // 2
        pads = (left, Wc - w - left, top, Hc - h - top)
        batch = F.pad(x, pads, value=fill) if any(pads) else x  # no copy when the images already fit the canvas
    else:
        batch = torch.full((len(hw), 3, Hc, Wc), fill, dtype=images[0].dtype, device=device)
        for i, (im, (h, w)) in enumerate(zip(images, scaled)):
            left, top = (Wc - w) // 2, (Hc - h) // 2
            x = im if (h, w) == tuple(im.shape[-2:]) else _resize(im[None], (h, w))[0]
            batch[i, :, top : top + h, left : left + w] = x
    return batch, info.to(device), sizes.to(device)


def _resize(x: Tensor, hw: tuple[int, int]) -> Tensor:
    return F.interpolate(x, size=hw, mode="bilinear", align_corners=False, antialias=False).clamp_(0, 1)


def pad_to_stride(images: Tensor | Sequence[Tensor], *, stride: int = 32, fill: float = FILL) -> Tensor:
    """Training input: pad (never scale, so boxes keep their pixels) at the right/bottom to a multiple of
    ``stride``; a list of images goes on one canvas at the top-left corner. Returns ``[B, 3, Hc, Wc]``."""
    if isinstance(images, Tensor):
        H, W = images.shape[-2:]
        Hc, Wc = _round_up(H, stride), _round_up(W, stride)
        return images if (Hc, Wc) == (H, W) else F.pad(images, (0, Wc - W, 0, Hc - H), value=fill)
    Hc = _round_up(max(int(im.shape[-2]) for im in images), stride)
    Wc = _round_up(max(int(im.shape[-1]) for im in images), stride)
    batch = torch.full((len(images), 3, Hc, Wc), fill, dtype=images[0].dtype, device=images[0].device)
    for i, im in enumerate(images):
        batch[i, :, : im.shape[-2], : im.shape[-1]] = im
    return batch


def split_detections(boxes: Tensor, scores: Tensor, labels: Tensor, counts: Tensor) -> list[dict[str, Tensor]]:
    """Padded ``[B, K, ...]`` detections and ``counts [B]`` -> one dict per image (one host sync for the counts)."""
    out = []
    for b, n in enumerate(counts.tolist()):
        out.append({"boxes": boxes[b, :n].float(), "scores": scores[b, :n].float(), "labels": labels[b, :n].long()})
    return out


class GraphedCall:
    """``fn(x) -> tuple[Tensor, ...]`` captured once in a CUDA graph for one input shape and replayed.

    The input is copied into a static buffer, the graph replayed and the outputs cloned. ``fn`` must not synchronise
    with the host (no ``.item()``, no data-dependent shapes) and must be deterministic in its shapes.
    """

    def __init__(self, fn: Callable[[Tensor], tuple[Tensor, ...]], example: Tensor, *, warmup: int = 3) -> None:
        self.static_input = example.clone()
        stream = torch.cuda.Stream(device=example.device)
        stream.wait_stream(torch.cuda.current_stream(example.device))
        with torch.cuda.stream(stream):
            for _ in range(warmup):  # compiles kernels (Triton), allocates workspaces, picks cuDNN algorithms
                fn(self.static_input)
        torch.cuda.current_stream(example.device).wait_stream(stream)
        self.graph = torch.cuda.CUDAGraph()
        with torch.cuda.graph(self.graph):
            self.static_output = fn(self.static_input)

    def __call__(self, x: Tensor) -> tuple[Tensor, ...]:
        self.static_input.copy_(x)
        self.graph.replay()
        return tuple(o.clone() for o in self.static_output)


#: entries kept per cache (anchor grids, CUDA graphs): the most recently used input shapes
CACHE_SIZE = 8
_CACHE_LOCK = threading.Lock()


def cached(cache: OrderedDict[Hashable, Any], key: Hashable, make: Callable[[], Any], limit: int = CACHE_SIZE) -> Any:
    """``cache[key]``, made by ``make()`` when absent; the least recently used entry beyond ``limit`` is dropped.
    Safe to call from several threads (batch slices, :func:`vision.utils.parallel.split_batch`)."""
    with _CACHE_LOCK:
        if key in cache:
            cache.move_to_end(key)
            return cache[key]
    value = make()
    with _CACHE_LOCK:
        cache[key] = value
        while len(cache) > limit:
            cache.popitem(last=False)
    return value


def example_input(like: Tensor, stride: int, minimum: int = 128) -> Tensor:
    """A zero image ``[1, 3, S, S]`` for tracing a network (Conv->BN pairs): ``S`` a multiple of ``stride`` and at
    least ``minimum`` (Inception-type bodies need ~75 px and more), on ``like``'s device and dtype."""
    side = -(-max(2 * stride, minimum) // stride) * stride
    return like.new_zeros(1, 3, side, side)
