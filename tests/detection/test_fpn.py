"""The FPN neck: sized from declared specs, declares its outputs, torchvision's keys."""

from __future__ import annotations

import pytest
import torch

import vision
from vision.backbones import FeatureSpec
from vision.necks.fpn import FPN
from vision.registry import NECKS


def test_fpn_over_a_backbone_declares_its_outputs():
    backbone = vision.create_backbone("resnet18", out_indices=(1, 2, 3))
    fpn = NECKS.build("fpn", in_specs=backbone.specs, out_channels=32, extra="pool")
    assert [(s.name, s.channels, s.stride) for s in fpn.specs] == [
        ("P3", 32, 8), ("P4", 32, 16), ("P5", 32, 32), ("P6", 32, 64)
    ]  # fmt: skip
    assert [s.name for s in fpn.main_specs] == ["P3", "P4", "P5"]
    x = torch.rand(1, 3, 128, 96)
    out = fpn(backbone(x))
    assert list(out) == ["P3", "P4", "P5", "P6"]
    for spec, value in zip(fpn.specs, out.values()):
        assert value.shape == (1, 32, -(-128 // spec.stride), -(-96 // spec.stride))
    assert "inner_blocks.0.0.weight" in fpn.state_dict()  # torchvision's FeaturePyramidNetwork keys


# a 64 px input: C3..C5 are 8, 4, 2 px; P6 and P7 are 3x3 stride-2 convolutions with padding 1: 2 -> 1 -> 1
@pytest.mark.parametrize(("extra", "source", "sizes"), [("p6p7", "p", {"P3": 8, "P4": 4, "P5": 2, "P6": 1, "P7": 1}),
                                                         ("p6p7", "c", {"P3": 8, "P4": 4, "P5": 2, "P6": 1, "P7": 1}),
                                                         (None, "p", {"P3": 8, "P4": 4, "P5": 2})])  # fmt: skip
def test_fpn_extra_levels(extra, source, sizes):
    specs = [FeatureSpec("C3", 16, 8), FeatureSpec("C4", 24, 16), FeatureSpec("C5", 40, 32)]
    fpn = FPN(specs, out_channels=8, extra=extra, extra_source=source, norm="bn")
    feats = {s.name: torch.rand(2, s.channels, 64 // s.stride, 64 // s.stride) for s in specs}
    out = fpn({**feats, "C2": torch.rand(2, 4, 16, 16)})  # unused keys are ignored
    assert list(out) == list(sizes) == [s.name for s in fpn.specs]
    assert {k: tuple(v.shape) for k, v in out.items()} == {k: (2, 8, n, n) for k, n in sizes.items()}


def test_fpn_rejects_bad_specs():
    with pytest.raises(ValueError, match="increasing strides"):
        FPN([FeatureSpec("C4", 8, 16), FeatureSpec("C3", 8, 8)])
    with pytest.raises(ValueError, match="extra"):
        FPN([FeatureSpec("C3", 8, 8)], extra="bogus")
    with pytest.raises(KeyError, match="missing"):
        FPN([FeatureSpec("C3", 8, 8)], out_channels=4)({"C4": torch.rand(1, 8, 4, 4)})
