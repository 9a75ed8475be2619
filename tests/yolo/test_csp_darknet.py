"""The CSP-Darknet backbone and the PAN-FPN neck declare the feature maps they really return."""

from __future__ import annotations

import pytest
import torch
import torch.nn.functional as F

import vision
from vision.backbones.csp_darknet import SPPF, Bottleneck, C2f
from vision.necks.pafpn import PAFPN
from vision.registry import NECKS


# YOLOv8's P3/P4/P5 widths: 256, 512, 1024 scaled by the width multiple 0.25 (n) or 0.5 (s)
@pytest.mark.parametrize(("size", "channels"), [("n", [64, 128, 256]), ("s", [128, 256, 512])])
def test_backbone_features_match_declaration(size, channels):
    backbone = vision.create_backbone(f"csp_darknet_{size}", out_indices=(2, 3, 4))
    assert backbone.strides == [8, 16, 32] and backbone.size_divisibility == 32
    assert backbone.channels == channels
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


def _inputs_of(module: torch.nn.Module) -> list[torch.Tensor]:
    seen: list[torch.Tensor] = []
    module.register_forward_hook(lambda m, args, out: seen.append(args[0]))
    return seen


@torch.no_grad()
def test_blocks_compute_their_definitions():
    torch.manual_seed(0)
    x = torch.randn(2, 16, 12, 10)
    # bottleneck: two 3x3 ConvBNAct, plus the input with the shortcut
    block = Bottleneck(16, shortcut=True).eval()
    plain = Bottleneck(16, shortcut=False).eval()
    plain.load_state_dict(block.state_dict())
    assert torch.allclose(block(x), plain(x) + x)
    assert sum(p.numel() for p in block.parameters()) == 2 * (16 * 16 * 9 + 2 * 16)
    # C2f: the fusion reads [both halves of the 1x1 expansion, every bottleneck output of the chain on the 2nd half]
    c2f = C2f(16, 24, n=2, shortcut=True).eval()  # hidden width 12
    merged = _inputs_of(c2f.merge)
    chain_in = [_inputs_of(b) for b in c2f.chain]
    out = c2f(x)
    assert out.shape == (2, 24, 12, 10)
    expanded = c2f.expand(x)
    first = c2f.chain[0](expanded[:, 12:])
    second = c2f.chain[1](first)
    assert torch.equal(chain_in[0][0], expanded[:, 12:]) and torch.allclose(chain_in[1][0], first)
    assert torch.allclose(merged[0], torch.cat([expanded, first, second], 1))
    assert c2f.merge[0].in_channels == (2 + 2) * 12
    # SPPF: chained 5x5 stride-1 max-pools = pools of 5, 9 and 13 on the reduced map, concatenated after it
    sppf = SPPF(16, 20).eval()
    merged = _inputs_of(sppf.merge)
    assert sppf(x).shape == (2, 20, 12, 10)
    reduced = sppf.reduce(x)
    pools = [F.max_pool2d(reduced, k, 1, k // 2) for k in (5, 9, 13)]
    assert torch.equal(merged[0], torch.cat([reduced, *pools], 1))
