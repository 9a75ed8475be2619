"""AlexNet over torchvision's implementation (the "one weird trick" variant torchvision ships).

Papers: https://papers.nips.cc/paper/4824 and https://arxiv.org/abs/1404.5997.

Stages end at each max-pool: ``C3``, ``C4``, ``C5`` at strides 8, 16, 32 with 64, 192, 256 channels (AlexNet's
unpadded pools make the raw maps a little smaller than H/stride; the strides are nominal and the extractor returns
each map at ``ceil(H/stride)``, see :mod:`vision.backbones._base`).
"""

from __future__ import annotations

import torch
from torch import Tensor, nn
from torchvision import models as tvm

from vision.backbones._base import Family
from vision.backbones._factory import register_variant
from vision.backbones._torchvision import tv_cards
from vision.backbones.vgg import _pool_stages

__all__: list[str] = []


def _head(m: nn.Module, outs: list[Tensor]) -> Tensor:
    return m.classifier(torch.flatten(m.avgpool(outs[-1]), 1))


FAMILY = Family(
    stages=lambda net: _pool_stages(net, (64, 192, 256), (8, 16, 32)),
    head_modules=("avgpool", "classifier"),
    head=_head,
    classifier=("classifier.6.",),
)

_cards, _default = tv_cards("alexnet")
register_variant("alexnet", tvm.alexnet, FAMILY, cards=_cards, default=_default)
