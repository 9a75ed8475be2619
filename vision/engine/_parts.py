"""Small pieces of the training loop: the loss module DDP wraps, seeding, and parameter freezing."""

from __future__ import annotations

import random
from typing import Any

import numpy as np
import torch
from torch import nn

from vision.engine.task import Task

__all__ = ["LossModule", "freeze_parameters", "seed_everything"]


class LossModule(nn.Module):
    """Routes ``forward`` to the task's loss so DDP's forward hooks see the loss computation."""

    def __init__(self, model: nn.Module, task: Task) -> None:
        super().__init__()
        self.model = model
        self._compute = task.compute_loss

    def forward(self, batch: Any) -> dict[str, torch.Tensor]:
        return self._compute(self.model, batch)


def seed_everything(seed: int) -> None:
    """Seed Python, NumPy and torch."""
    random.seed(seed)
    np.random.seed(seed % (2**32))
    torch.manual_seed(seed)


def freeze_parameters(freeze: int | str | list[str], model: nn.Module) -> None:
    """``freeze=N`` (the first N declared stages) or module-name prefixes: those parameters stop training."""
    if isinstance(freeze, int):
        if freeze <= 0:
            return
        stages = getattr(model, "stages", None)
        if not stages:
            raise ValueError(f"freeze={freeze}: {type(model).__name__} has no stages; name modules instead")
        prefixes = [p for s in stages[:freeze] for p in s.modules]
    else:
        prefixes = [freeze] if isinstance(freeze, str) else list(freeze)
    names = dict(model.named_parameters())
    hit = 0
    for name, p in names.items():
        if any(name == f or name.startswith(f + ".") for f in prefixes):
            p.requires_grad_(False)
            hit += 1
    if hit == 0:
        raise ValueError(f"freeze={freeze!r} matched no parameter of {type(model).__name__}")
