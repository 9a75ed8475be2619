"""The anchor-free, decoupled YOLO detection head with distribution (DFL) box regression.

Papers: anchor-free per-location prediction (FCOS https://arxiv.org/abs/1904.01355, YOLOX decoupled head
https://arxiv.org/abs/2107.08430); box sides as discrete distributions (Generalized Focal Loss
https://arxiv.org/abs/2006.04388).

Per input level (stride ``s``) two branches of two 3x3 ``ConvBNAct`` and a 1x1 prediction convolution:

- box branch (width ``max(16, c_0 / 4, 4 * reg_max)``): ``4 * reg_max`` logits per location, a distribution over the
  distances ``0 .. reg_max - 1`` (in units of ``s``) from the location's centre to the box's left, top, right and
  bottom sides;
- class branch (width ``max(c_0, min(num_classes, 100))``): ``num_classes`` independent (sigmoid) logits.

``c_0`` is the width of the shallowest level. Initial biases (our choice; they shorten the first phase of training
from scratch): the class bias is the log-odds of ``prior_objects`` objects per ``prior_size x prior_size`` image (the
training size) spread over the level's locations and classes (at most 5 %), so the first steps are not dominated by
the negatives; the box bias is a geometric prior over the bins (``p(k) ~ 0.7^k``, mean distance 2.3 strides), so the
first boxes are about 5 strides wide -- objects of their level -- instead of 15 strides (uniform bins), which gives
the task-aligned assigner meaningful IoUs from the first step.


Example:
    >>> head = YOLOHead(neck.specs, num_classes=80)
    >>> box_logits, cls_logits, shapes = head(neck(backbone(x)))  # [B, N, 64], [B, N, 80], [(H_i, W_i), ...]
"""

from __future__ import annotations

import math
from collections.abc import Sequence

import torch
from torch import Tensor, nn

from vision.backbones._base import FeatureSpec
from vision.backbones.csp_darknet import ConvBNAct

__all__ = ["YOLOHead"]


def _branch(c_in: int, width: int, c_out: int) -> nn.Sequential:
    return nn.Sequential(ConvBNAct(c_in, width, 3), ConvBNAct(width, width, 3), nn.Conv2d(width, c_out, 1))


class YOLOHead(nn.Module):
    """Decoupled box-distribution / classification head over feature levels (see the module docstring).

    Args:
        in_specs: the feature maps it reads (name, channels, stride), shallow to deep.
        num_classes: number of classes ``K`` (no background class).
        reg_max: number of bins of each side's distance distribution.
        prior_objects: expected objects per ``prior_size x prior_size`` image, for the initial class bias.
        prior_size: the image side the prior refers to (the training size).

    ``forward(features) -> (box_logits [B, N, 4 * reg_max], cls_logits [B, N, K], shapes)``: ``N = sum H_i W_i``
    locations, level by level and row-major inside a level; ``shapes`` lists each level's ``(H_i, W_i)``. Box logits
    are ordered side-major: ``[..., side * reg_max + bin]`` with sides (left, top, right, bottom).
    """

    def __init__(
        self,
        in_specs: Sequence[FeatureSpec],
        *,
        num_classes: int,
        reg_max: int = 16,
        prior_objects: float = 5.0,
        prior_size: int = 640,
    ) -> None:
        super().__init__()
        if num_classes < 1:
            raise ValueError(f"num_classes must be >= 1, got {num_classes}")
        self.in_specs = list(in_specs)
        self.num_classes = int(num_classes)
        self.reg_max = int(reg_max)
        c0 = self.in_specs[0].channels
        box_width = max(16, c0 // 4, 4 * reg_max)
        cls_width = max(c0, min(num_classes, 100))
        self.box = nn.ModuleList(_branch(s.channels, box_width, 4 * reg_max) for s in self.in_specs)
        self.cls = nn.ModuleList(_branch(s.channels, cls_width, num_classes) for s in self.in_specs)
        self.prior_objects, self.prior_size = float(prior_objects), int(prior_size)
        self.box_prior = 0.7
        self.reset_bias()

    @property
    def strides(self) -> list[int]:
        return [s.stride for s in self.in_specs]

    def reset_bias(self) -> None:
        """Initial box and class biases (see the module docstring)."""
        bins = torch.arange(self.reg_max, dtype=torch.float32)
        for box, cls, spec in zip(self.box, self.cls, self.in_specs):
            with torch.no_grad():
                box[-1].bias.copy_((bins * math.log(self.box_prior)).repeat(4))
            cells = max(1.0, (self.prior_size / spec.stride) ** 2)
            p = min(self.prior_objects / (self.num_classes * cells), 0.05)
            nn.init.constant_(cls[-1].bias, math.log(p / (1 - p)))

    def forward(self, features: dict[str, Tensor]) -> tuple[Tensor, Tensor, list[tuple[int, int]]]:
        boxes, scores, shapes = [], [], []
        for spec, box, cls in zip(self.in_specs, self.box, self.cls):
            x = features[spec.name]
            shapes.append((int(x.shape[-2]), int(x.shape[-1])))
            boxes.append(box(x).flatten(2))
            scores.append(cls(x).flatten(2))
        box_logits = torch.cat(boxes, 2).transpose(1, 2)
        cls_logits = torch.cat(scores, 2).transpose(1, 2)
        return box_logits, cls_logits, shapes
