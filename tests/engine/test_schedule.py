"""Learning-rate schedules and optimiser parameter groups."""

from __future__ import annotations

import math

import pytest
import torch
from torch import nn

from vision.engine.optim import build_optimizer, lr_factor, param_groups


def test_warmup_then_cosine_closed_form():
    kw = {"total_steps": 100, "warmup_steps": 10, "schedule": "cosine", "min_lr_ratio": 0.05, "warmup_start": 0.0}
    assert lr_factor(0, **kw) == 0.0
    assert lr_factor(5, **kw) == pytest.approx(0.5)
    assert lr_factor(10, **kw) == pytest.approx(1.0)
    assert lr_factor(55, **kw) == pytest.approx(0.05 + 0.95 * 0.5 * (1 + math.cos(math.pi * 0.5)))
    assert lr_factor(100, **kw) == pytest.approx(0.05)


def test_step_schedule():
    kw = {"total_steps": 100, "schedule": "step", "milestones": (0.5, 0.75), "gamma": 0.1}
    assert lr_factor(49, **kw) == 1.0
    assert lr_factor(50, **kw) == pytest.approx(0.1)
    assert lr_factor(80, **kw) == pytest.approx(0.01)
    with pytest.raises(ValueError, match="schedule"):
        lr_factor(0, total_steps=10, schedule="bogus")


def test_no_weight_decay_on_norms_and_biases():
    model = nn.Sequential(nn.Conv2d(3, 4, 3), nn.BatchNorm2d(4), nn.Linear(4, 2), nn.LayerNorm(2))
    groups = param_groups(model, 0.1)
    decayed = {id(p) for p in groups[0]["params"]}
    assert groups[0]["weight_decay"] == 0.1 and groups[1]["weight_decay"] == 0.0
    assert decayed == {id(model[0].weight), id(model[2].weight)}
    opt = build_optimizer(model, name="adamw", lr=1e-3, weight_decay=0.05)
    assert isinstance(opt, torch.optim.AdamW)
    with pytest.raises(ValueError, match="optimizer"):
        build_optimizer(model, name="lion")
