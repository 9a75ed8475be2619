"""Batch norms folded into convolutions for inference, on any backbone: same outputs, same predictions."""

from __future__ import annotations

import pytest
import torch
from torch import nn

import vision
from vision.utils.fusion import conv_bn_pairs, fuse_conv_bn


def _randomise_norms(model: nn.Module, seed: int = 1) -> None:
    """Batch norms with random affine parameters and running statistics near those of real activations, so that a
    fold that ignores any of them (or eps) changes the outputs visibly."""
    g = torch.Generator().manual_seed(seed)
    norms = [m for m in model.modules() if isinstance(m, nn.BatchNorm2d)]
    with torch.no_grad():
        for m in norms:
            m.weight.copy_(torch.rand(m.num_features, generator=g) + 0.5)
            m.bias.copy_(torch.rand(m.num_features, generator=g) - 0.5)
            m.reset_running_stats()
            m.momentum = None
        model.train().forward_raw(torch.rand(2, 3, 64, 64))
        for m in norms:
            m.running_mean.add_(torch.randn(m.num_features, generator=g) * m.running_var.sqrt() * 0.1)
            m.running_var.mul_(torch.rand(m.num_features, generator=g) * 0.45 + 0.8)
    model.eval()


@pytest.mark.parametrize(("name", "kwargs"), [("yolo_n", {}), ("yolo", {"backbone": "resnet18"})])
@torch.no_grad()
def test_eval_inference_runs_a_folded_copy_with_the_same_outputs(name, kwargs):
    """Eval-mode inference folds every Conv2d -> BatchNorm2d pair of the whole model (own or registry backbone) in a
    copy; raw outputs and predictions match the unfolded network to float32 rounding, the model's state dict is
    untouched, and a copy whose batch norms are simply dropped differs by far more than the tolerance."""
    torch.manual_seed(0)
    model = vision.create_model(name, num_classes=3, imgsz=64, **kwargs)
    _randomise_norms(model)
    keys = list(model.state_dict())
    x = torch.rand(2, 3, 64, 64)
    box, cls, _ = model.forward_raw(x)
    fbox, fcls, _ = model.forward_raw(x, fused=True)
    net = model.fused_network()
    assert not any(isinstance(m, nn.BatchNorm2d) for m in net.modules())  # every batch norm follows a convolution
    assert any(isinstance(m, nn.BatchNorm2d) for m in model.modules()) and list(model.state_dict()) == keys
    for folded, plain in ((fbox, box), (fcls, cls)):  # float32 rounding grows with the logits' scale (up to ~300)
        torch.testing.assert_close(folded, plain, rtol=1e-4, atol=2e-5 * float(plain.abs().max()))
    # predictions: the folded path against the same call on the unfolded network
    fused_dets = model.predict(x, score_threshold=0.0, max_det=50)
    model.fused_network = lambda: nn.Sequential(model.backbone, model.neck, model.head)  # unfolded
    plain_dets = model.predict(x, score_threshold=0.0, max_det=50)
    for a, b in zip(fused_dets, plain_dets):
        torch.testing.assert_close(a["scores"], b["scores"], rtol=1e-4, atol=1e-5)
        torch.testing.assert_close(a["boxes"], b["boxes"], rtol=1e-4, atol=1e-2)  # pixels
    # the mistake the tolerance must see: batch norms dropped instead of folded
    for m in list(model.modules()):
        for child_name, child in m.named_children():
            if isinstance(child, nn.BatchNorm2d):
                setattr(m, child_name, nn.Identity())
    dropped_box, dropped_cls, _ = model.forward_raw(x)
    assert (dropped_box - box).abs().max() > 0.1 and (dropped_cls - cls).abs().max() > 0.1


@torch.no_grad()
def test_folded_copy_follows_in_place_weight_updates():
    """An EMA updates its eval-mode model in place and a checkpoint load copies into the weights: the next inference
    refolds instead of using stale weights."""
    torch.manual_seed(0)
    model = vision.create_model("yolo_n", num_classes=2, imgsz=64).eval()
    x = torch.rand(1, 3, 64, 64)
    first = model.fused_network()
    assert model.fused_network() is first  # cached while nothing changes
    for p in model.parameters():
        p.mul_(0.9)
    assert model.fused_network() is not first
    plain = model.forward_raw(x)[1]
    torch.testing.assert_close(
        model.forward_raw(x, fused=True)[1], plain, rtol=1e-4, atol=2e-5 * float(plain.abs().max())
    )
    model.train()
    assert model._fused.net is None  # training frees the copy


def test_pairs_follow_the_data_flow_not_the_registration_order():
    """A batch norm registered right after a convolution but applied to something else is not folded."""

    class Odd(nn.Module):
        def __init__(self) -> None:
            super().__init__()
            self.conv = nn.Conv2d(3, 3, 1)
            self.bn = nn.BatchNorm2d(3)  # normalises the input, not the convolution's output
            self.conv2 = nn.Conv2d(3, 4, 1)
            self.bn2 = nn.BatchNorm2d(4)

        def forward(self, x: torch.Tensor) -> torch.Tensor:
            return self.bn2(self.conv2(self.conv(self.bn(x))))

    model = Odd().eval()
    x = torch.rand(1, 3, 8, 8)
    assert conv_bn_pairs(model, lambda: model(x)) == [("conv2", "bn2")]
    with torch.no_grad():
        model.bn2.running_mean.fill_(0.3)
        model.bn.running_var.fill_(2.0)
        expected = model(x)
        fuse_conv_bn(model, lambda: model(x))
        assert isinstance(model.bn, nn.BatchNorm2d) and isinstance(model.bn2, nn.Identity)
        torch.testing.assert_close(model(x), expected)
