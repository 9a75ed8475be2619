"""ResNet, ResNeXt and Wide ResNet over torchvision's implementation.

Papers: ResNet https://arxiv.org/abs/1512.03385, ResNeXt https://arxiv.org/abs/1611.05431,
Wide ResNet https://arxiv.org/abs/1605.07146.

Stages: the stem (conv1, bn1, relu, maxpool) runs with ``layer1``; features ``C2``-``C5`` at strides 4-32.
"""

from __future__ import annotations

import torch
from torch import Tensor, nn
from torchvision import models as tvm

from vision.backbones._base import Family, Stage, stages_from
from vision.backbones._factory import register_variant
from vision.backbones._torchvision import tv_cards

__all__: list[str] = []

_BASIC = (64, 128, 256, 512)
_BOTTLENECK = (256, 512, 1024, 2048)


def _stages(channels: tuple[int, ...]):
    def stages(net: nn.Module) -> list[Stage]:
        groups = [("conv1", "bn1", "relu", "maxpool", "layer1"), ("layer2",), ("layer3",), ("layer4",)]
        return stages_from(groups, channels, (4, 8, 16, 32))

    return stages


def _head(m: nn.Module, outs: list[Tensor]) -> Tensor:
    return m.fc(torch.flatten(m.avgpool(outs[-1]), 1))


def _family(channels: tuple[int, ...]) -> Family:
    return Family(stages=_stages(channels), head_modules=("avgpool", "fc"), head=_head, classifier=("fc.",))


_VARIANTS = {
    "resnet18": _BASIC,
    "resnet34": _BASIC,
    "resnet50": _BOTTLENECK,
    "resnet101": _BOTTLENECK,
    "resnet152": _BOTTLENECK,
    "resnext50_32x4d": _BOTTLENECK,
    "resnext101_32x8d": _BOTTLENECK,
    "resnext101_64x4d": _BOTTLENECK,
    "wide_resnet50_2": _BOTTLENECK,
    "wide_resnet101_2": _BOTTLENECK,
}

for _name, _channels in _VARIANTS.items():
    _cards, _default = tv_cards(_name)
    register_variant(_name, getattr(tvm, _name), _family(_channels), cards=_cards, default=_default)
