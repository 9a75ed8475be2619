"""SSD's extra layers as a neck: a backbone's two deepest feature maps plus stride-2 blocks, one new map each.

Paper: SSD https://arxiv.org/abs/1512.02325 (the extra feature layers of section 2.1).

Each extra block is ``1x1 conv (to width / 2) -> BN -> ReLU -> 3x3 conv stride 2 (to width) -> BN -> ReLU``. The
neck reads the last two of ``in_specs`` and declares ``2 + len(widths)`` outputs named by stride (``P4``, ``P5``,
``P6`` ... for a backbone with levels at strides 16 and 32).

Example:
    >>> body = vision.create_backbone("resnet18", out_indices=(-2, -1))
    >>> neck = SSDExtraLayers(body.specs, widths=(512, 256, 256, 256))
    >>> [(s.name, s.channels, s.stride) for s in neck.specs]
    [('P4', 256, 16), ('P5', 512, 32), ('P6', 512, 64), ('P7', 256, 128), ('P8', 256, 256), ('P9', 256, 512)]
"""

from __future__ import annotations

from collections import OrderedDict
from collections.abc import Mapping, Sequence

from torch import Tensor, nn

from vision.backbones._base import FeatureSpec, SpecsMixin, level_names
from vision.registry import NECKS

__all__ = ["SSDExtraLayers", "ssd_extra"]


class SSDExtraLayers(SpecsMixin, nn.Module):
    """The two deepest input maps plus ``len(widths)`` extra stride-2 blocks, as SSD feature maps.

    ``forward(features: dict[name, Tensor]) -> OrderedDict`` of ``2 + len(widths)`` maps, shallow to deep, as
    declared by :attr:`specs`.
    """

    def __init__(self, in_specs: Sequence[FeatureSpec], *, widths: Sequence[int] = (512, 256, 256, 256)) -> None:
        super().__init__()
        in_specs = list(in_specs)
        if len(in_specs) < 2:
            raise ValueError(f"SSD needs a backbone returning at least two feature maps, got {in_specs}")
        self.in_specs = in_specs[-2:]
        blocks = []
        c_in = self.in_specs[-1].channels
        for width in widths:
            blocks.append(
                nn.Sequential(
                    nn.Conv2d(c_in, width // 2, 1, bias=False),
                    nn.BatchNorm2d(width // 2),
                    nn.ReLU(inplace=True),
                    nn.Conv2d(width // 2, width, 3, 2, 1, bias=False),
                    nn.BatchNorm2d(width),
                    nn.ReLU(inplace=True),
                )
            )
            c_in = width
        self.extra = nn.ModuleList(blocks)
        strides = [s.stride for s in self.in_specs]
        strides += [strides[-1] * 2 ** (i + 1) for i in range(len(widths))]
        channels = [s.channels for s in self.in_specs] + list(widths)
        self.specs = [FeatureSpec(n, c, s) for n, c, s in zip(level_names(strides, "P"), channels, strides)]

    def forward(self, features: Mapping[str, Tensor]) -> OrderedDict[str, Tensor]:
        maps = [features[s.name] for s in self.in_specs]
        y = maps[-1]
        for block in self.extra:
            y = block(y)
            maps.append(y)
        return OrderedDict((spec.name, m) for spec, m in zip(self.specs, maps))


@NECKS.register("ssd_extra", tags={"neck"})
def ssd_extra(*, in_specs: Sequence[FeatureSpec], widths: Sequence[int] = (512, 256, 256, 256)) -> SSDExtraLayers:
    """Build :class:`SSDExtraLayers` over the last two of ``in_specs``."""
    return SSDExtraLayers(in_specs, widths=widths)
