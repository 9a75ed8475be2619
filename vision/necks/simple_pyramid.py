"""A simple feature pyramid for single-scale backbones (plain ViT, DeiT, EVA ...): ViTDet's recipe.

Paper: ViTDet, "Exploring Plain Vision Transformer Backbones for Object Detection" https://arxiv.org/abs/2203.16527
(section 3, "simple feature pyramid").

From the last map of a single-scale body (stride ``s``), each requested stride ``t`` is made by
``log2(s / t)`` stride-2 deconvolutions (``ConvTranspose2d`` 2x2, LayerNorm, GELU between them) when ``t < s``, by
``log2(t / s)`` 2x2 max-pools (``ceil_mode``) when ``t > s``, then a 1x1 and a 3x3 convolution each followed by a
LayerNorm, to ``out_channels``. :func:`with_simple_pyramid` puts the neck on a backbone whose levels share one
stride and leaves any other backbone as it is; the detector builders (YOLO, SSD, R-CNN) call it with the strides
their heads ask for.

Example:
    >>> body = vision.create_backbone("timm/vit_tiny_patch16_224")      # one level, stride 16
    >>> neck = SimplePyramid(body.specs, strides=(8, 16, 32))
    >>> [(s.name, s.channels, s.stride) for s in neck.specs]
    [('P3', 192, 8), ('P4', 192, 16), ('P5', 192, 32)]
"""

from __future__ import annotations

import math
from collections import OrderedDict
from collections.abc import Mapping, Sequence

from timm.layers import LayerNorm2d
from torch import Tensor, nn

from vision.backbones._base import FeatureInfoMixin, FeatureSpec, SpecsMixin, align_to_strides, level_names
from vision.registry import NECKS

__all__ = ["PyramidBackbone", "SimplePyramid", "is_single_scale", "simple_pyramid", "with_simple_pyramid"]


def _rescale(channels: int, log_ratio: int) -> tuple[nn.Module, int]:
    """Layers taking a map by ``2 ** log_ratio`` in stride (negative: finer), and their output channels."""
    if log_ratio >= 0:
        return nn.Sequential(*[nn.MaxPool2d(2, 2, ceil_mode=True) for _ in range(log_ratio)]), channels
    layers: list[nn.Module] = []
    for i in range(-log_ratio):
        out = max(channels // 2, 16)
        if i:
            layers += [LayerNorm2d(channels), nn.GELU()]
        layers.append(nn.ConvTranspose2d(channels, out, 2, 2))
        channels = out
    return nn.Sequential(*layers), channels


class SimplePyramid(SpecsMixin, nn.Module):
    """Maps at ``strides`` built from the last of ``in_specs`` (ViTDet's simple feature pyramid).

    ``forward(features: dict[name, Tensor]) -> OrderedDict[name, Tensor]``: for an input map ``[B, C, h, w]`` at
    stride ``s``, the level at stride ``t`` is ``[B, out_channels, ~h * s / t, ~w * s / t]`` (finer levels are
    ``2 ** k`` times larger, coarser ones ``ceil`` halvings; :class:`PyramidBackbone` brings them to exactly
    ``ceil(H / t)``). Levels are named ``P{log2 t}``.
    """

    def __init__(
        self, in_specs: Sequence[FeatureSpec], *, strides: Sequence[int] = (8, 16, 32), out_channels: int | None = None
    ) -> None:
        super().__init__()
        if not in_specs:
            raise ValueError("SimplePyramid needs at least one input level")
        self.in_spec = list(in_specs)[-1]
        self.in_specs = [self.in_spec]
        s, c = self.in_spec.stride, self.in_spec.channels
        width = int(out_channels or c)
        branches = []
        for t in strides:
            log_ratio = math.log2(t / s)
            if t <= 0 or not float(log_ratio).is_integer():
                raise ValueError(f"SimplePyramid: stride {t} is not a power-of-two multiple of the input's stride {s}")
            rescale, mid = _rescale(c, round(log_ratio))
            branches.append(
                nn.Sequential(
                    rescale,
                    nn.Conv2d(mid, width, 1, bias=False),
                    LayerNorm2d(width),
                    nn.Conv2d(width, width, 3, padding=1, bias=False),
                    LayerNorm2d(width),
                )
            )
        self.branches = nn.ModuleList(branches)
        self.specs = [FeatureSpec(n, width, int(t)) for n, t in zip(level_names(list(strides), "P"), strides)]

    def forward(self, features: Mapping[str, Tensor]) -> OrderedDict[str, Tensor]:
        x = features[self.in_spec.name]
        return OrderedDict((spec.name, branch(x)) for spec, branch in zip(self.specs, self.branches))


@NECKS.register("simple_pyramid", tags={"neck"})
def simple_pyramid(
    *, in_specs: Sequence[FeatureSpec], strides: Sequence[int] = (8, 16, 32), out_channels: int | None = None
) -> SimplePyramid:
    """Build :class:`SimplePyramid` over the last of ``in_specs``."""
    return SimplePyramid(in_specs, strides=strides, out_channels=out_channels)


class PyramidBackbone(FeatureInfoMixin, nn.Module):
    """A single-scale backbone ``body`` followed by a :class:`SimplePyramid` ``neck``, with the backbone interface.

    ``forward(x [B, 3, H, W]) -> dict[name, Tensor [B, C, ceil(H / t), ceil(W / t)]]`` for each pyramid stride ``t``;
    ``feature_info``/``specs`` are the pyramid's levels, ``card`` and ``default_preprocess`` the body's.
    """

    def __init__(self, body: nn.Module, neck: SimplePyramid) -> None:
        super().__init__()
        self.body = body
        self.neck = neck
        self.feature_info = list(neck.specs)
        self.out_indices = tuple(range(len(self.feature_info)))
        self.card = getattr(body, "card", None)
        self.default_preprocess = getattr(body, "default_preprocess", None)
        self.name = f"{getattr(body, 'name', type(body).__name__)}+simple_pyramid"
        self.frozen_stages = getattr(body, "frozen_stages", 0)
        self.pruned: tuple[str, ...] = tuple(getattr(body, "pruned", ()))

    def forward(self, x: Tensor) -> dict[str, Tensor]:
        return align_to_strides(self.neck(self.body(x)), self.specs, x.shape[-2:])


def is_single_scale(body: nn.Module) -> bool:
    """Whether every level the backbone declares (``feature_info``) has the same stride."""
    return len({s.stride for s in body.feature_info}) == 1


def with_simple_pyramid(body: nn.Module, strides: Sequence[int], *, out_channels: int | None = None) -> nn.Module:
    """``body`` with a simple feature pyramid at ``strides`` when it is single-scale, else ``body`` unchanged."""
    if not is_single_scale(body):
        return body
    return PyramidBackbone(body, SimplePyramid(body.specs, strides=strides, out_channels=out_channels))
