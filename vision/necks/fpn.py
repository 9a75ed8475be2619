"""Feature Pyramid Network over any backbone's declared features.

Paper: FPN https://arxiv.org/abs/1612.03144; the P6/P7 levels of RetinaNet https://arxiv.org/abs/1708.02002.

:class:`FPN` is torchvision's :class:`~torchvision.ops.FeaturePyramidNetwork` (lateral 1x1 + output 3x3 convolutions,
top-down nearest upsampling), sized from the backbone's :class:`~vision.backbones.FeatureSpec` declarations instead of a
hand-written channel list, and declaring the features it returns. Its state-dict keys are torchvision's
(``inner_blocks.i.0.weight``, ``layer_blocks.i.0.weight``, ``extra_blocks.p6.weight`` ...), so the FPN of torchvision's
detection weights loads unchanged.

Extra levels (``extra=``): ``"pool"`` adds one level by max-pooling the coarsest output with stride 2 (torchvision's
``LastLevelMaxPool``, used by Faster/Mask R-CNN for the RPN only); ``"p6p7"`` adds two strided 3x3 convolutions
(torchvision's ``LastLevelP6P7``) fed from the coarsest FPN output (``extra_source="p"``) or the coarsest backbone
feature (``extra_source="c"``); ``None`` adds nothing.

Output names follow :func:`vision.backbones._base.level_names` with prefix ``P`` (``P2`` ... ``P6``).

Example:
    >>> backbone = vision.create_backbone("resnet50")
    >>> fpn = FPN(backbone.specs, out_channels=256, extra="pool")
    >>> [(s.name, s.channels, s.stride) for s in fpn.specs]
    [('P2', 256, 4), ('P3', 256, 8), ('P4', 256, 16), ('P5', 256, 32), ('P6', 256, 64)]
    >>> feats = fpn(backbone(torch.rand(1, 3, 224, 224)))   # {"P2": [1, 256, 56, 56], ..., "P6": [1, 256, 4, 4]}
"""

from __future__ import annotations

from collections import OrderedDict
from collections.abc import Mapping, Sequence

from torch import Tensor, nn
from torchvision.ops.feature_pyramid_network import FeaturePyramidNetwork, LastLevelMaxPool, LastLevelP6P7

from vision.backbones._base import FeatureSpec, SpecsMixin, level_names
from vision.registry import NECKS

__all__ = ["FPN", "fpn"]

_EXTRAS = (None, "pool", "p6p7")


class FPN(SpecsMixin, FeaturePyramidNetwork):
    """Feature Pyramid Network sized from declared input features.

    Args:
        in_specs: the backbone features it reads, shallow to deep (``backbone.specs``).
        out_channels: channels of every output level.
        extra: ``None``, ``"pool"`` (one max-pooled level) or ``"p6p7"`` (two convolutional levels).
        extra_source: for ``"p6p7"``: ``"p"`` (from the coarsest FPN output) or ``"c"`` (the coarsest input).
        norm: ``None`` or ``"bn"`` (BatchNorm after every FPN convolution, as in torchvision's ``*_v2`` models).

    ``forward(features: Mapping[name, Tensor]) -> dict[name, Tensor]`` reads the features named in ``in_specs`` (other
    keys are ignored) and returns the levels of :attr:`specs`, fine to coarse, each ``[B, out_channels, ~H/s, ~W/s]``.
    """

    def __init__(
        self,
        in_specs: Sequence[FeatureSpec],
        *,
        out_channels: int = 256,
        extra: str | None = "pool",
        extra_source: str = "p",
        norm: str | None = None,
    ) -> None:
        in_specs = list(in_specs)
        if not in_specs:
            raise ValueError("FPN needs at least one input feature spec")
        strides = [s.stride for s in in_specs]
        if strides != sorted(strides) or len(set(strides)) != len(strides):
            raise ValueError(f"FPN input features must have increasing strides, got {strides}")
        if extra not in _EXTRAS:
            raise ValueError(f"extra must be one of {_EXTRAS}, got {extra!r}")
        if extra_source not in ("p", "c"):
            raise ValueError(f"extra_source must be 'p' or 'c', got {extra_source!r}")
        if norm not in (None, "bn"):
            raise ValueError(f"norm must be None or 'bn', got {norm!r}")
        extra_block: nn.Module | None = None
        extra_strides: list[int] = []
        last = strides[-1]
        if extra == "pool":
            extra_block, extra_strides = LastLevelMaxPool(), [2 * last]
        elif extra == "p6p7":
            # torchvision's block reads P5 when its in_channels equal out_channels, else C5
            source_channels = out_channels if extra_source == "p" else in_specs[-1].channels
            if extra_source == "c" and source_channels == out_channels:
                raise ValueError("extra_source='c' needs a coarsest input whose channels differ from out_channels")
            extra_block, extra_strides = LastLevelP6P7(source_channels, out_channels), [2 * last, 4 * last]
        super().__init__(
            [s.channels for s in in_specs],
            out_channels,
            extra_blocks=extra_block,
            norm_layer=nn.BatchNorm2d if norm == "bn" else None,
        )
        self.in_specs = in_specs
        out_strides = strides + extra_strides
        self.specs: list[FeatureSpec] = [
            FeatureSpec(name, out_channels, s) for name, s in zip(level_names(out_strides, "P"), out_strides)
        ]
        self.num_extra = len(extra_strides)
        self.out_channels = out_channels

    @property
    def main_specs(self) -> list[FeatureSpec]:
        """The levels built from backbone features (without the extra ones): what RoI heads pool from."""
        return self.specs[: len(self.specs) - self.num_extra]

    def forward(self, features: Mapping[str, Tensor]) -> dict[str, Tensor]:  # type: ignore[override]
        missing = [s.name for s in self.in_specs if s.name not in features]
        if missing:
            raise KeyError(f"FPN expects features {[s.name for s in self.in_specs]}, missing {missing}")
        inputs = OrderedDict((s.name, features[s.name]) for s in self.in_specs)
        outs = super().forward(inputs)
        return OrderedDict((spec.name, value) for spec, value in zip(self.specs, outs.values()))

    def extra_repr(self) -> str:
        return f"specs={self.specs}"


@NECKS.register("fpn", tags={"neck"})
def fpn(
    *,
    in_specs: Sequence[FeatureSpec],
    out_channels: int = 256,
    extra: str | None = "pool",
    extra_source: str = "p",
    norm: str | None = None,
) -> FPN:
    """Build an :class:`FPN` over ``in_specs`` (e.g. ``backbone.specs``)."""
    return FPN(in_specs, out_channels=out_channels, extra=extra, extra_source=extra_source, norm=norm)
