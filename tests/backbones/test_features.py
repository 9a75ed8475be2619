"""The feature contract: the real feature maps have the declared channels and strides, at two input sizes.

The stride check is exact: every map is ceil(H / stride) wide, also for networks with unpadded layers (AlexNet,
Inception), whose raw maps the extractor resizes to the declared size (vision/backbones/_base.py), and between inputs
of sizes H and H + 64 every stage's map grows by exactly 64 / stride pixels.
"""

from __future__ import annotations

import pytest
import torch

import vision
from vision.registry import BACKBONES

BUILTIN = sorted(BACKBONES.names())
BIG = {
    "efficientnet_b7",
    "efficientnet_b6",
    "efficientnet_v2_l",
    "efficientnet_v2_m",
    "vgg19",
    "vgg19_bn",
    "wide_resnet101_2",
    "resnext101_64x4d",
    "resnext101_32x8d",
    "resnet152",
    "efficientnet_b5",
}
TIMM_SAMPLE = [
    "resnet18",
    "resnet26d",
    "efficientnet_b0",
    "mobilenetv3_small_100",
    "mobilenetv3_large_100",
    "convnext_atto",
    "regnetx_002",
    "regnety_002",
    "densenet121",
    "ghostnet_100",
    "mixnet_s",
    "dla34",
    "cspresnet50",
    "cs3darknet_s",
    "lcnet_050",
    "tinynet_e",
    "ese_vovnet19b_dw",
    "rexnet_100",
    "repvgg_a0",
    "resnest14d",
    "edgenext_xx_small",
    "convnextv2_atto",
    "mobilenetv2_050",
    "hrnet_w18_small",
    "efficientvit_b0",
]


def _check(backbone, sizes=(128, 192)):
    specs = backbone.specs
    assert len(specs) == len(backbone.channels) == len(backbone.strides)
    assert backbone.size_divisibility == max(s.stride for s in specs)
    shapes = {}
    for size in sizes:
        with torch.no_grad():
            feats = backbone(torch.randn(1, 3, size, size))
        assert list(feats) == [s.name for s in specs]
        for spec in specs:
            f = feats[spec.name]
            assert f.shape[1] == spec.channels, f"{spec.name}: {f.shape[1]} channels, declared {spec.channels}"
            assert f.shape[-1] == -(-size // spec.stride), f"{spec.name}: width {f.shape[-1]} at {size}px"
        shapes[size] = {k: v.shape[-2:] for k, v in feats.items()}
    a, b = sizes
    for spec in specs:
        grown = shapes[b][spec.name][0] - shapes[a][spec.name][0]
        assert grown * spec.stride == b - a, f"{spec.name}: grows {grown}px for {b - a}px; stride {spec.stride}"


@pytest.mark.parametrize("name", BUILTIN, ids=BUILTIN)
def test_declared_specs_match_real_features(name, request):
    if name in BIG:
        request.applymarker(pytest.mark.slow)
    backbone = vision.create_backbone(name).eval()
    assert len(backbone.feature_info) >= 3
    _check(backbone)


@pytest.mark.parametrize("name", TIMM_SAMPLE, ids=TIMM_SAMPLE)
def test_timm_declared_specs_match_real_features(name):
    backbone = vision.create_backbone(f"timm/{name}").eval()
    _check(backbone)


def test_out_indices_and_pruning():
    backbone = vision.create_backbone("resnet50", out_indices=(1, -2))
    assert [s.name for s in backbone.specs] == ["C3", "C4"]
    assert backbone.channels == [512, 1024] and backbone.strides == [8, 16]
    assert not hasattr(backbone, "fc") and not hasattr(backbone, "layer4"), "unused stages are pruned"
    out = backbone(torch.randn(1, 3, 64, 64))
    assert set(out) == {"C3", "C4"}
    with pytest.raises(ValueError, match="out_indices"):
        vision.create_backbone("resnet50", out_indices=(0, 7))


def test_frozen_stages_and_frozen_bn():
    from torchvision.ops import FrozenBatchNorm2d

    backbone = vision.create_backbone("resnet18", frozen_stages=2, norm="frozen_bn").train()
    assert not any(p.requires_grad for p in backbone.conv1.parameters())
    assert not any(p.requires_grad for p in backbone.layer2.parameters())
    assert all(p.requires_grad for p in backbone.layer3.parameters())
    assert not any(isinstance(m, torch.nn.BatchNorm2d) for m in backbone.modules())
    assert any(isinstance(m, FrozenBatchNorm2d) or "Frozen" in type(m).__name__ for m in backbone.modules())
    bn_backbone = vision.create_backbone("resnet18", frozen_stages=1).train()
    assert not bn_backbone.bn1.training and not bn_backbone.layer1.training and bn_backbone.layer2.training


def test_classifier_weights_load_into_backbone(tmp_path):
    classifier = vision.create_model("resnet18")
    path = tmp_path / "r18.pth"
    torch.save(classifier.state_dict(), path)
    backbone = vision.create_backbone("resnet18", weights=str(path), out_indices=(0, 1))
    assert torch.equal(backbone.conv1.weight, classifier.conv1.weight)
    frozen = vision.create_backbone("resnet18", weights=str(path), norm="frozen_bn")
    assert torch.equal(frozen.bn1.running_mean, classifier.bn1.running_mean)


def test_bad_input_shape_is_named():
    backbone = vision.create_backbone("resnet18")
    with pytest.raises(ValueError, match=r"\[B, C, H, W\]"):
        backbone(torch.randn(3, 64, 64))
