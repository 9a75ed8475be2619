"""timm backbones: channels-last maps, declared channels, input sizes, frozen stages (vision/backbones/timm.py).

Every map is checked against timm's own output for the same network, and frozen stages against the built-in
families' meaning (stem + the first k stages).
"""

from __future__ import annotations

import math

import pytest
import torch

import vision


def _shapes(feats: dict[str, torch.Tensor]) -> list[tuple[int, ...]]:
    return [tuple(v.shape) for v in feats.values()]


def _expected(backbone, H: int, W: int) -> list[tuple[int, ...]]:
    return [(1, s.channels, math.ceil(H / s.stride), math.ceil(W / s.stride)) for s in backbone.specs]


def test_channels_last_maps_are_timms_maps_in_nchw():
    backbone = vision.create_backbone("timm/mambaout_femto").eval()  # timm declares output_fmt NHWC
    x = torch.rand(1, 3, 64, 96)
    with torch.no_grad():
        raw = backbone.body(x)
        feats = backbone(x)
    assert _shapes(feats) == _expected(backbone, 64, 96)
    for (name, ours), theirs in zip(feats.items(), raw):
        assert torch.equal(ours, theirs.permute(0, 3, 1, 2)), name


def test_swin_features_have_the_declared_channels_at_any_size():
    backbone = vision.create_backbone("timm/swin_tiny_patch4_window7_224").eval()
    assert backbone.channels == [96, 192, 384, 768]
    with torch.no_grad():
        feats = backbone(torch.rand(1, 3, 224, 224))
        assert _shapes(feats) == [(1, 96, 56, 56), (1, 192, 28, 28), (1, 384, 14, 14), (1, 768, 7, 7)]
        odd = backbone(torch.rand(1, 3, 150, 202))  # not a multiple of its patch: run padded, cropped back
    assert _shapes(odd) == _expected(backbone, 150, 202)


def test_a_map_with_other_channels_than_declared_is_an_error_naming_the_backbone(monkeypatch):
    backbone = vision.create_backbone("timm/resnet18", out_indices=(1, 2)).eval()
    monkeypatch.setattr(backbone.body, "forward", lambda x: [torch.zeros(1, 7, 16, 16), torch.zeros(1, 7, 8, 8)])
    with pytest.raises(RuntimeError, match=r"timm/resnet18: .*C2.*declares 64 channels"):
        backbone(torch.rand(1, 3, 64, 64))


def test_hybrid_vit_returns_its_declared_channels_at_odd_sizes():
    backbone = vision.create_backbone("timm/vit_tiny_r_s16_p8_224").eval()
    with torch.no_grad():
        x = torch.rand(1, 3, 96, 128)  # a multiple of its stride: exactly timm's map
        assert torch.equal(next(iter(backbone(x).values())), backbone.body(x)[-1])
        odd = backbone(torch.rand(1, 3, 97, 131))  # timm alone reshapes this to 320 channels
    assert _shapes(odd) == _expected(backbone, 97, 131) == [(1, 192, 4, 5)]


@pytest.mark.parametrize("name", ["dla34", "hrnet_w18_small"])
def test_networks_needing_a_multiple_of_their_stride_take_any_size(name):
    backbone = vision.create_backbone(f"timm/{name}").eval()
    with torch.no_grad():
        for H, W in ((150, 200), (97, 131)):
            feats = backbone(torch.rand(1, 3, H, W))
            assert _shapes(feats) == _expected(backbone, H, W)
            assert all(torch.isfinite(v).all() for v in feats.values())


@pytest.mark.parametrize(("name", "native"), [("levit_128s", "224x224"), ("efficientformerv2_s0", "224x224")])
def test_a_size_a_fixed_size_model_refuses_is_one_clear_error(name, native):
    backbone = vision.create_backbone(f"timm/{name}").eval()
    with torch.no_grad():
        backbone(torch.rand(1, 3, 224, 224))
        with pytest.raises(ValueError, match=rf"timm/{name} cannot take a 150x200 input.*built for, {native}"):
            backbone(torch.rand(1, 3, 150, 200))


def test_a_fixed_size_model_built_for_another_size_takes_it():
    backbone = vision.create_backbone("timm/levit_128s", img_size=(160, 224)).eval()
    with torch.no_grad():
        assert _shapes(backbone(torch.rand(1, 3, 160, 224))) == _expected(backbone, 160, 224)


def _frozen_fraction(module: torch.nn.Module) -> float:
    params = list(module.parameters())
    return sum(p.numel() for p in params if not p.requires_grad) / sum(p.numel() for p in params)


@pytest.mark.parametrize("k", [1, 2, 3, 4])
def test_frozen_stages_mean_what_they_mean_for_the_builtin_resnet(k):
    ours = vision.create_backbone("timm/resnet18", frozen_stages=k)
    builtin = vision.create_backbone("resnet18", frozen_stages=k)
    assert _frozen_fraction(ours) == pytest.approx(_frozen_fraction(builtin), abs=1e-9)


def test_frozen_stages_of_timm_efficientnet_lite_match_the_builtin_one():
    ours = vision.create_backbone("timm/tf_efficientnet_lite0", frozen_stages=3)
    builtin = vision.create_backbone("efficientnet_lite0", frozen_stages=3)
    assert _frozen_fraction(ours) == pytest.approx(_frozen_fraction(builtin), abs=1e-9)
    assert 0 < _frozen_fraction(vision.create_backbone("timm/efficientnet_b0", frozen_stages=1)) < 0.01


def test_frozen_modules_stay_in_eval_mode_and_the_rest_trains():
    backbone = vision.create_backbone("timm/resnet18", frozen_stages=1).train()
    body = backbone.body
    for frozen in (body.conv1, body.bn1, body.layer1):
        assert not frozen.training and not any(p.requires_grad for p in frozen.parameters())
    assert body.layer2.training and all(p.requires_grad for p in body.layer2.parameters())

    vit = vision.create_backbone("timm/vit_tiny_patch16_224", frozen_stages=1).train()
    model = vit.body.model
    assert not model.patch_embed.training and not model.blocks[0].training
    assert not model.cls_token.requires_grad and not any(p.requires_grad for p in model.blocks[0].parameters())
    assert model.blocks[1].training and all(p.requires_grad for p in model.blocks[1].parameters())


def test_frozen_stages_out_of_range_or_unmappable_are_refused():
    with pytest.raises(ValueError, match=r"frozen_stages must be in \[0, 4\] for timm/resnet18"):
        vision.create_backbone("timm/resnet18", frozen_stages=5)
    with pytest.raises(ValueError, match="frozen_stages is not supported by timm/hrnet_w18_small"):
        vision.create_backbone("timm/hrnet_w18_small", frozen_stages=1)


@pytest.mark.parametrize(
    ("head", "kwargs"),
    [("yolo", {"imgsz": 160}), ("ssd", {"size": 300}), ("faster_rcnn", {"min_size": 160, "max_size": 224})],
)
def test_detectors_run_on_a_swin_backbone(head, kwargs):
    model = vision.create_model(head, backbone="timm/swin_tiny_patch4_window7_224", num_classes=3, **kwargs).eval()
    with torch.no_grad():
        out = model([torch.rand(3, 150, 200)])
    assert out[0]["boxes"].shape[-1] == 4
