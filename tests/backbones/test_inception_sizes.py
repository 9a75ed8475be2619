"""Inception v3 below its 299 px design size: training works (auxiliary head included), torchvision's numbers at
299 px, one clear error below the 75 px the trunk needs (vision/backbones/inception.py)."""

from __future__ import annotations

import pytest
import torch
from torchvision import models as tvm

import vision


def test_a_training_step_at_128_px_trains_the_auxiliary_head_too():
    model = vision.create_model("inception_v3", num_classes=4).train()
    losses = model.loss((torch.randn(2, 3, 128, 128), torch.tensor([0, 3])))
    assert set(losses) == {"cls", "aux"} and all(torch.isfinite(v) for v in losses.values())
    sum(losses.values()).backward()
    assert all(p.grad is not None for p in model.AuxLogits.parameters())
    assert all(p.grad is not None for p in model.Mixed_7c.parameters())


def test_at_299_px_training_outputs_are_torchvisions():
    ref = tvm.inception_v3(num_classes=4, aux_logits=True, init_weights=False).train()
    ours = vision.create_model("inception_v3", num_classes=4).train()
    ours.load_state_dict(ref.state_dict())
    x = torch.randn(2, 3, 299, 299)
    torch.manual_seed(0)
    logits, aux = ref(x)
    torch.manual_seed(0)
    assert torch.allclose(ours(x), logits, atol=1e-5)
    assert torch.allclose(ours._aux_logits, aux, atol=1e-5)


def test_an_input_below_what_the_trunk_takes_is_one_clear_error():
    model = vision.create_model("inception_v3", num_classes=4)
    with pytest.raises(ValueError, match=r"inception_v3 needs inputs of at least 75x75 px .* got 64x64"):
        model(torch.randn(1, 3, 64, 64))
    shallow = vision.create_backbone("inception_v3", out_indices=(2,)).eval()
    assert shallow(torch.randn(1, 3, 64, 64))["C3"].shape == (1, 288, 8, 8)
