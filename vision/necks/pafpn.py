"""PAN-FPN: a top-down feature pyramid followed by a bottom-up path aggregation, with C2f fusion blocks.

Papers: FPN https://arxiv.org/abs/1612.03144, PANet https://arxiv.org/abs/1803.01534; the C2f fusion block is the
one of :mod:`vision.backbones.csp_darknet` (YOLOv8's publicly described neck).

For input levels ``0..L-1`` (shallow to deep, each stride twice the previous one) and output widths ``c_i``::

    lateral_i = x_i                     if x_i already has c_i channels, else ConvBNAct 1x1 (x_i -> c_i)
    top_{L-1} = lateral_{L-1};  top_i = C2f(cat(upsample(top_{i+1}), lateral_i)) -> c_i          (top-down)
    out_0 = top_0;              out_i = C2f(cat(ConvBNAct 3x3 s2 (out_{i-1}), top_i)) -> c_i      (bottom-up)

With a CSP-Darknet backbone the widths equal the backbone's (no lateral convolutions), which is the YOLOv8 neck;
with any other backbone the 1x1 laterals bring e.g. ResNet-50's 512/1024/2048 channels to the chosen widths.

Registered in ``NECKS`` as ``pafpn``.

Example:
    >>> backbone = vision.create_backbone("resnet50", out_indices=(1, 2, 3))
    >>> neck = PAFPN(backbone.specs, channels=(64, 128, 256), depth=1)
    >>> [(s.name, s.channels, s.stride) for s in neck.specs]
    [('P3', 64, 8), ('P4', 128, 16), ('P5', 256, 32)]
"""

from __future__ import annotations

import itertools
from collections.abc import Sequence

import torch
import torch.nn.functional as F
from torch import Tensor, nn

from vision.backbones._base import FeatureSpec, SpecsMixin, level_names
from vision.backbones.csp_darknet import C2f, ConvBNAct
from vision.registry import NECKS

__all__ = ["PAFPN"]


class PAFPN(SpecsMixin, nn.Module):
    """PAN-FPN over declared backbone features.

    Args:
        in_specs: the backbone features it reads (names, channels, strides), shallow to deep, each stride twice the
            previous one.
        channels: output width per level (default: the input widths).
        depth: bottlenecks per C2f fusion block.

    ``forward(features: dict[str, Tensor]) -> dict[str, Tensor]``: reads ``features[spec.name]`` for every input spec
    (``[B, C_i, H_i, W_i]``) and returns ``P{log2 stride}`` maps ``[B, channels[i], H_i, W_i]``, declared by
    :attr:`specs`. Any input size works (upsampling targets the lateral map's size; downsampling is a padded 3x3
    stride-2 convolution, so it expects ``H_i = ceil(H_{i-1} / 2)``).
    """

    def __init__(
        self, in_specs: Sequence[FeatureSpec], *, channels: Sequence[int] | None = None, depth: int = 1
    ) -> None:
        super().__init__()
        in_specs = list(in_specs)
        if len(in_specs) < 2:
            raise ValueError(f"PAFPN needs at least two input levels, got {in_specs}")
        for a, b in itertools.pairwise(in_specs):
            if b.stride != 2 * a.stride:
                raise ValueError(f"PAFPN levels must double their stride, got {[s.stride for s in in_specs]}")
        widths = [s.channels for s in in_specs] if channels is None else [int(c) for c in channels]
        if len(widths) != len(in_specs):
            raise ValueError(f"channels {widths} must give one width per input level ({len(in_specs)})")
        self.in_specs = in_specs
        self.out_specs = [
            FeatureSpec(n, c, s.stride)
            for n, s, c in zip(level_names([s.stride for s in in_specs], "P"), in_specs, widths)
        ]
        L = len(in_specs)
        self.lateral = nn.ModuleList(
            nn.Identity() if s.channels == c else ConvBNAct(s.channels, c, 1) for s, c in zip(in_specs, widths)
        )
        # top-down fusion i (i = 0..L-2) reads upsampled top_{i+1} and lateral_i
        self.top_down = nn.ModuleList(C2f(widths[i + 1] + widths[i], widths[i], n=depth) for i in range(L - 1))
        # bottom-up: downsample out_{i-1} (keeping its width) then fuse with top_i (i = 1..L-1)
        self.downsample = nn.ModuleList(ConvBNAct(widths[i], widths[i], 3, 2) for i in range(L - 1))
        self.bottom_up = nn.ModuleList(C2f(widths[i] + widths[i + 1], widths[i + 1], n=depth) for i in range(L - 1))

    @property
    def specs(self) -> list[FeatureSpec]:  # type: ignore[override]
        return list(self.out_specs)

    def forward(self, features: dict[str, Tensor]) -> dict[str, Tensor]:
        xs = [lat(features[s.name]) for lat, s in zip(self.lateral, self.in_specs)]
        L = len(xs)
        tops: list[Tensor] = [xs[-1]]
        for i in range(L - 2, -1, -1):
            up = F.interpolate(tops[0], size=xs[i].shape[-2:], mode="nearest")
            tops.insert(0, self.top_down[i](torch.cat([up, xs[i]], 1)))
        outs = [tops[0]]
        for i in range(1, L):
            down = self.downsample[i - 1](outs[-1])
            outs.append(self.bottom_up[i - 1](torch.cat([down, tops[i]], 1)))
        return {s.name: o for s, o in zip(self.out_specs, outs)}

    def extra_repr(self) -> str:
        return f"in={[s.name for s in self.in_specs]}, out={self.out_specs}"


@NECKS.register("pafpn")
def pafpn(*, in_specs: Sequence[FeatureSpec], channels: Sequence[int] | None = None, depth: int = 1) -> PAFPN:
    """Build a :class:`PAFPN` over ``in_specs`` (see the class)."""
    return PAFPN(in_specs, channels=channels, depth=depth)
