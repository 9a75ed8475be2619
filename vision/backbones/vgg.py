"""VGG 11/13/16/19, with and without batch norm, over torchvision's implementation.

Paper: https://arxiv.org/abs/1409.1556 (batch-norm variants: https://arxiv.org/abs/1502.03167).

Stages end at each max-pool of ``features``: ``C1``-``C5`` at strides 2-32, channels 64, 128, 256, 512, 512.
"""

from __future__ import annotations

import torch
from torch import Tensor, nn
from torchvision import models as tvm

from vision.backbones._base import Family, Stage, stages_from
from vision.backbones._factory import register_variant
from vision.backbones._torchvision import tv_cards

__all__: list[str] = []


def _pool_stages(net: nn.Module, channels: tuple[int, ...], strides: tuple[int, ...]) -> list[Stage]:
    """Cut ``net.features`` after each MaxPool2d."""
    groups: list[list[str]] = [[]]
    for index, layer in enumerate(net.features):
        groups[-1].append(f"features.{index}")
        if isinstance(layer, nn.MaxPool2d):
            groups.append([])
    groups = [g for g in groups if g]
    return stages_from(groups, channels, strides)


def _head(m: nn.Module, outs: list[Tensor]) -> Tensor:
    return m.classifier(torch.flatten(m.avgpool(outs[-1]), 1))


FAMILY = Family(
    stages=lambda net: _pool_stages(net, (64, 128, 256, 512, 512), (2, 4, 8, 16, 32)),
    head_modules=("avgpool", "classifier"),
    head=_head,
    classifier=("classifier.6.",),
)

for _name in ("vgg11", "vgg11_bn", "vgg13", "vgg13_bn", "vgg16", "vgg16_bn", "vgg19", "vgg19_bn"):
    _cards, _default = tv_cards(_name)
    register_variant(_name, getattr(tvm, _name), FAMILY, cards=_cards, default=_default)
