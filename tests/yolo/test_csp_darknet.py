"""The CSP-Darknet backbone and the PAN-FPN neck declare the feature maps they really return."""

from __future__ import annotations

import pytest
import torch

import vision
from vision.backbones.csp_darknet import SIZES
from vision.necks.pafpn import PAFPN
from vision.registry import NECKS


@pytest.mark.parametrize("size", ["n", "s"])
def test_backbone_features_match_declaration(size):
    backbone = vision.create_backbone(f"csp_darknet_{size}", out_indices=(2, 3, 4))
    width = SIZES[size].width
    assert backbone.strides == [8, 16, 32] and backbone.size_divisibility == 32
    assert backbone.channels == [int(256 * width), int(512 * width), int(1024 * width)]
    for hw in ((64, 96), (128, 160)):
        with torch.no_grad():
            feats = backbone(torch.rand(1, 3, *hw))
        assert list(feats) == ["C3", "C4", "C5"]
        for spec in backbone.specs:
            assert feats[spec.name].shape[1:] == (spec.channels, hw[0] // spec.stride, hw[1] // spec.stride)


def test_backbone_is_also_a_classifier_and_freezes():
    model = vision.create_model("csp_darknet_n", num_classes=7)
    assert model(torch.rand(2, 3, 64, 64)).shape == (2, 7)
    frozen = vision.create_backbone("csp_darknet_n", frozen_stages=2)
    trainable = {n.split(".")[0] for n, p in frozen.named_parameters() if p.requires_grad}
    assert trainable == {"stage2", "stage3", "stage4"}


def test_pafpn_over_a_foreign_backbone():
    backbone = vision.create_backbone("resnet18", out_indices=(1, 2, 3))
    neck = NECKS.build("pafpn", in_specs=backbone.specs, channels=(32, 64, 128), depth=1)
    assert isinstance(neck, PAFPN)
    assert [(s.name, s.channels, s.stride) for s in neck.specs] == [("P3", 32, 8), ("P4", 64, 16), ("P5", 128, 32)]
    with torch.no_grad():
        out = neck(backbone(torch.rand(2, 3, 96, 128)))
    assert {k: tuple(v.shape) for k, v in out.items()} == {
        "P3": (2, 32, 12, 16),
        "P4": (2, 64, 6, 8),
        "P5": (2, 128, 3, 4),
    }
    with pytest.raises(ValueError, match="double their stride"):
        PAFPN([backbone.specs[0], backbone.specs[2]])
