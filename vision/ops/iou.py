"""Element-wise (broadcasting) IoU and Complete-IoU of paired boxes, for losses and label assignment.

torchvision's ``box_iou`` / ``complete_box_iou`` return the full ``[N, M]`` matrix of two box lists; detector losses
and assigners need the IoU of *paired* boxes (``boxes1[i]`` with ``boxes2[i]``), for any batch shape, which is what
these functions compute. Boxes are ``(x1, y1, x2, y2)`` in any consistent unit, ``x1 <= x2`` and ``y1 <= y2``.

Complete IoU (Zheng et al., "Distance-IoU Loss", https://arxiv.org/abs/1911.08287)::

    CIoU = IoU - rho^2 / c^2 - alpha * v
    rho  = distance between the two box centres,  c = diagonal of the smallest box enclosing both
    v    = 4 / pi^2 * (atan(w2 / h2) - atan(w1 / h1))^2                      (aspect-ratio consistency)
    alpha = v / ((1 - IoU) + v)                                                 (trade-off, no gradient)

Example:
    >>> a = torch.tensor([[0.0, 0.0, 2.0, 2.0]])
    >>> b = torch.tensor([[1.0, 1.0, 3.0, 3.0]])
    >>> paired_iou(a, b)    # 1 / 7
    tensor([0.1429])
    >>> paired_ciou(a, b)   # 1/7 - 2/18 = 2/63 (same aspect ratio: v = 0)
    tensor([0.0317])
"""

from __future__ import annotations

import math

import torch
from torch import Tensor

__all__ = ["paired_ciou", "paired_iou"]


def _iou_parts(boxes1: Tensor, boxes2: Tensor, eps: float) -> tuple[Tensor, Tensor, Tensor, Tensor, Tensor]:
    x1a, y1a, x2a, y2a = boxes1.unbind(-1)
    x1b, y1b, x2b, y2b = boxes2.unbind(-1)
    wa, ha = x2a - x1a, y2a - y1a
    wb, hb = x2b - x1b, y2b - y1b
    iw = (torch.minimum(x2a, x2b) - torch.maximum(x1a, x1b)).clamp(min=0)
    ih = (torch.minimum(y2a, y2b) - torch.maximum(y1a, y1b)).clamp(min=0)
    inter = iw * ih
    union = wa * ha + wb * hb - inter + eps
    return inter / union, wa, ha, wb, hb


def paired_iou(boxes1: Tensor, boxes2: Tensor, *, eps: float = 1e-7) -> Tensor:
    """IoU of ``boxes1[..., :]`` with ``boxes2[..., :]`` (shapes ``[..., 4]``, broadcast) -> ``[...]`` in [0, 1]."""
    return _iou_parts(boxes1, boxes2, eps)[0]


def paired_ciou(boxes1: Tensor, boxes2: Tensor, *, eps: float = 1e-7) -> Tensor:
    """Complete IoU (see the module docstring) of paired boxes ``[..., 4]`` (broadcast) -> ``[...]`` in (-2, 1].

    Differentiable in both arguments; ``alpha`` is computed without gradient, as the paper prescribes for the
    trade-off parameter. ``eps`` guards the divisions (zero-area boxes, identical centres).
    """
    iou, wa, ha, wb, hb = _iou_parts(boxes1, boxes2, eps)
    x1a, y1a, x2a, y2a = boxes1.unbind(-1)
    x1b, y1b, x2b, y2b = boxes2.unbind(-1)
    cw = torch.maximum(x2a, x2b) - torch.minimum(x1a, x1b)
    ch = torch.maximum(y2a, y2b) - torch.minimum(y1a, y1b)
    c2 = cw.square() + ch.square() + eps
    rho2 = ((x1b + x2b - x1a - x2a).square() + (y1b + y2b - y1a - y2a).square()) / 4
    v = (4 / math.pi**2) * (torch.atan(wb / (hb + eps)) - torch.atan(wa / (ha + eps))).square()
    with torch.no_grad():
        alpha = v / (v - iou + (1 + eps))
    return iou - rho2 / c2 - alpha * v
