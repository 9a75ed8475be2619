"""Building blocks of the R-CNN assemblies, derived from declared feature specs (no hard-coded channel lists).

- :class:`BackboneFPN`: a registry backbone (``body``) followed by an :class:`~vision.necks.fpn.FPN` (``fpn``); its
  state-dict keys are those of torchvision's ``BackboneWithFPN`` (``backbone.body.layer1...``,
  ``backbone.fpn.inner_blocks...``) when the body is a torchvision ResNet.
- :func:`anchor_generator`: torchvision's ``AnchorGenerator`` with one anchor size per FPN level,
  ``anchor_scale * stride`` (32 ... 512 for strides 4 ... 64, torchvision's defaults).
- :func:`roi_pool`: torchvision's ``MultiScaleRoIAlign`` over the FPN levels built from the backbone (not the
  extra pooled level), as torchvision's R-CNNs do.
- :func:`fpn_stage_indices`: which backbone stages feed the FPN by default.
- :class:`FloatAnchorGenerator`, :class:`RPNHead`, :class:`FastRCNNPredictor`: torchvision's modules (same state-dict
  keys, same float32 results) that keep every coordinate in float32 under bf16 autocast. torchvision builds anchors
  in the feature maps' dtype and decodes boxes in the regression's dtype; in bfloat16 (8 significant bits) a
  coordinate of 1000 px is off by up to 4 px, which would ruin both training targets and detections. These return
  float32 anchors, objectness/deltas and class/box outputs whatever the autocast state.
"""

from __future__ import annotations

from collections.abc import Sequence

import torch
from torch import Tensor, nn
from torchvision.models.detection import faster_rcnn as _tv_faster
from torchvision.models.detection import rpn as _tv_rpn
from torchvision.models.detection.anchor_utils import AnchorGenerator
from torchvision.models.detection.image_list import ImageList
from torchvision.ops import MultiScaleRoIAlign

from vision.backbones._base import FeatureSpec, levels_by_stride
from vision.necks.fpn import FPN

__all__ = [
    "BackboneFPN",
    "FastRCNNPredictor",
    "FloatAnchorGenerator",
    "RPNHead",
    "anchor_generator",
    "fpn_stage_indices",
    "roi_pool",
]


def fpn_stage_indices(
    feature_info: Sequence[FeatureSpec], *, min_stride: int = 4, max_levels: int = 4
) -> tuple[int, ...]:
    """The FPN's levels: one per distinct declared stride ``>= min_stride``, the deepest ``max_levels`` of them
    (ResNet: ``C2..C5``; AlexNet: ``C3..C5``), chosen by :func:`~vision.backbones._base.levels_by_stride`, the
    stride selection every head shares (a stride several stages share gets its deepest stage).

    The FPN asks for the strides the backbone has rather than a fixed ``(4, 8, 16, 32)``: it adapts to any number
    of levels, so a body without a stride-4 stage (AlexNet, VGG's pools) still gets an FPN.
    """
    strides = sorted({s.stride for s in feature_info if s.stride >= min_stride})[-max_levels:]
    if not strides:
        raise ValueError(f"no backbone stage has stride >= {min_stride}: {list(feature_info)}")
    return tuple(sorted(levels_by_stride(feature_info, strides, model="the R-CNN FPN")))


class BackboneFPN(nn.Module):
    """``body`` (a feature extractor with declared ``specs``) then ``fpn``; ``forward(x) -> dict[name, Tensor]``.

    Attributes:
        out_channels: channels of every output level (what torchvision's heads read).
        specs: the output levels (:class:`FeatureSpec`), fine to coarse; ``roi_specs`` those without extra levels.
        size_divisibility: the coarsest output stride, to which inputs are padded.
    """

    def __init__(self, body: nn.Module, fpn: FPN) -> None:
        super().__init__()
        body_specs = list(body.specs)
        missing = [s.name for s in fpn.in_specs if s.name not in {b.name for b in body_specs}]
        if missing:
            raise ValueError(f"the FPN reads {missing}, which the backbone does not return ({body_specs})")
        self.body = body
        self.fpn = fpn
        self.out_channels = fpn.out_channels

    @property
    def specs(self) -> list[FeatureSpec]:
        return list(self.fpn.specs)

    @property
    def roi_specs(self) -> list[FeatureSpec]:
        return list(self.fpn.main_specs)

    @property
    def size_divisibility(self) -> int:
        return int(max(s.stride for s in self.fpn.main_specs))

    def forward(self, x: Tensor) -> dict[str, Tensor]:
        return self.fpn(self.body(x))


class FloatAnchorGenerator(AnchorGenerator):
    """torchvision's ``AnchorGenerator`` that always builds float32 anchors (it reads only the maps' shapes)."""

    def forward(self, image_list: ImageList, feature_maps: list[Tensor]) -> list[Tensor]:
        shapes = [torch.zeros((), device=f.device).expand(f.shape) for f in feature_maps]  # no memory
        return super().forward(image_list, shapes)


class RPNHead(_tv_rpn.RPNHead):
    """torchvision's ``RPNHead`` (same keys, ``conv_depth`` convolutions) returning float32 objectness and deltas."""

    def forward(self, x: list[Tensor]) -> tuple[list[Tensor], list[Tensor]]:
        logits, deltas = super().forward(x)
        return [t.float() for t in logits], [t.float() for t in deltas]


class FastRCNNPredictor(_tv_faster.FastRCNNPredictor):
    """torchvision's ``FastRCNNPredictor`` (class scores and class-specific box deltas), computed in float32."""

    def forward(self, x: Tensor) -> tuple[Tensor, Tensor]:
        with torch.autocast(x.device.type, enabled=False):
            return super().forward(x.float())


def anchor_generator(
    specs: Sequence[FeatureSpec],
    *,
    anchor_scale: float = 8.0,
    sizes: Sequence[Sequence[float]] | None = None,
    aspect_ratios: Sequence[float] | Sequence[Sequence[float]] = (0.5, 1.0, 2.0),
) -> FloatAnchorGenerator:
    """Anchors for the RPN: per level ``sizes[i]`` (default ``(anchor_scale * stride_i,)``) and the aspect ratios.

    ``aspect_ratios`` is one tuple shared by every level or one tuple per level.
    """
    if sizes is None:
        sizes = [(anchor_scale * s.stride,) for s in specs]
    sizes = tuple(tuple(float(v) if not float(v).is_integer() else int(v) for v in level) for level in sizes)
    if len(sizes) != len(specs):
        raise ValueError(f"{len(sizes)} anchor size tuples for {len(specs)} feature levels")
    if aspect_ratios and isinstance(aspect_ratios[0], int | float):
        ratios = (tuple(float(r) for r in aspect_ratios),) * len(sizes)
    else:
        ratios = tuple(tuple(float(r) for r in level) for level in aspect_ratios)  # type: ignore[union-attr]
    if len(ratios) != len(sizes):
        raise ValueError(f"{len(ratios)} aspect-ratio tuples for {len(sizes)} feature levels")
    return FloatAnchorGenerator(sizes, ratios)


def roi_pool(specs: Sequence[FeatureSpec], *, output_size: int = 7, sampling_ratio: int = 2) -> MultiScaleRoIAlign:
    """torchvision's ``MultiScaleRoIAlign`` over the named levels (scales are inferred from the feature sizes)."""
    return MultiScaleRoIAlign(
        featmap_names=[s.name for s in specs], output_size=output_size, sampling_ratio=sampling_ratio
    )
