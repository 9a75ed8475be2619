"""The simple feature pyramid neck (ViTDet) and the R-CNN level choice through ``levels_by_stride``."""

from __future__ import annotations

import types

import pytest
import torch

from vision.backbones._base import FeatureSpec, align_to_strides
from vision.models.detection.rcnn.parts import fpn_stage_indices
from vision.necks.simple_pyramid import PyramidBackbone, SimplePyramid, with_simple_pyramid
from vision.registry import NECKS

VIT = [FeatureSpec("C11_s16", 24, 16)]


def test_registered_and_declares_the_requested_levels():
    neck = NECKS.build("simple_pyramid", in_specs=VIT, strides=(4, 8, 16, 32), out_channels=8)
    assert [(s.name, s.channels, s.stride) for s in neck.specs] == [
        ("P2", 8, 4), ("P3", 8, 8), ("P4", 8, 16), ("P5", 8, 32),
    ]  # fmt: skip
    out = neck({"C11_s16": torch.rand(2, 24, 8, 11)})
    assert {k: tuple(v.shape) for k, v in out.items()} == {
        "P2": (2, 8, 32, 44), "P3": (2, 8, 16, 22), "P4": (2, 8, 8, 11), "P5": (2, 8, 4, 6),
    }  # fmt: skip
    out["P2"].sum().backward()  # trainable end to end
    assert all(p.grad is not None for p in neck.branches[0].parameters())


def test_pyramid_backbone_returns_ceil_sizes_at_odd_inputs():
    class Patchify(torch.nn.Module):  # a single-scale body: 16x16 patches, the input padded to the patch size
        feature_info = specs = VIT

        def __init__(self):
            super().__init__()
            self.proj = torch.nn.Conv2d(3, 24, 16, 16)

        def forward(self, x):
            pad = (0, -x.shape[-1] % 16, 0, -x.shape[-2] % 16)
            return {"C11_s16": self.proj(torch.nn.functional.pad(x, pad))}

    body = with_simple_pyramid(Patchify(), (8, 16, 32))
    assert isinstance(body, PyramidBackbone) and body.strides == [8, 16, 32]
    for H, W in [(250, 330), (20, 20), (128, 160)]:
        out = body(torch.rand(1, 3, H, W))
        assert [tuple(v.shape[-2:]) for v in out.values()] == [(-(-H // s), -(-W // s)) for s in (8, 16, 32)]


def test_multi_scale_bodies_are_left_alone_and_bad_strides_refused():
    body = types.SimpleNamespace(feature_info=[FeatureSpec("C3", 8, 8), FeatureSpec("C4", 8, 16)])
    assert with_simple_pyramid(body, (8, 16, 32)) is body
    with pytest.raises(ValueError, match="stride 12"):
        SimplePyramid(VIT, strides=(12,))


def test_align_to_strides_resizes_only_maps_of_another_size():
    exact, small = torch.rand(1, 2, 4, 6), torch.rand(1, 2, 3, 5)
    specs = [FeatureSpec("C3", 2, 8), FeatureSpec("C4", 2, 16)]
    out = align_to_strides({"C3": torch.rand(1, 2, 4, 6), "C4": small}, specs, (27, 41))
    assert tuple(out["C3"].shape[-2:]) == (4, 6) and tuple(out["C4"].shape[-2:]) == (2, 3)
    same = align_to_strides({"C3": exact, "C4": small}, specs[:1], (32, 48))
    assert same["C3"] is exact  # exact families pay nothing


def test_rcnn_levels_by_stride():
    def specs(*strides):
        return [FeatureSpec(f"L{i}", 8, s) for i, s in enumerate(strides)]

    assert fpn_stage_indices(specs(2, 4, 8, 16, 32)) == (1, 2, 3, 4)  # ResNet: C2..C5
    assert fpn_stage_indices(specs(8, 16, 32)) == (0, 1, 2)  # AlexNet: C3..C5
    assert fpn_stage_indices(specs(2, 4, 4, 8, 16, 16, 32)) == (2, 3, 5, 6)  # a shared stride: its deepest stage
    with pytest.raises(ValueError, match="stride >= 4"):
        fpn_stage_indices(specs(2))
