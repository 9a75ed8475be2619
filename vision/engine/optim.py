"""Optimisers (no weight decay on norms and biases) and per-iteration learning-rate schedules."""

from __future__ import annotations

import math
from collections.abc import Callable, Iterable

import torch
from torch import nn

__all__ = ["build_optimizer", "build_scheduler", "lr_factor", "param_groups"]

_NORMS = (nn.modules.batchnorm._NormBase, nn.GroupNorm, nn.LayerNorm, nn.LocalResponseNorm)


def param_groups(model: nn.Module, weight_decay: float) -> list[dict]:
    """Two groups: decayed weights, and biases + normalisation parameters + 1-d tensors without decay."""
    decay, no_decay = [], []
    norm_params: set[int] = set()
    for module in model.modules():
        if isinstance(module, _NORMS) or "norm" in type(module).__name__.lower():
            norm_params.update(id(p) for p in module.parameters(recurse=False))
    for name, p in model.named_parameters():
        if not p.requires_grad:
            continue
        if p.ndim <= 1 or name.endswith(".bias") or id(p) in norm_params:
            no_decay.append(p)
        else:
            decay.append(p)
    groups = []
    if decay:
        groups.append({"params": decay, "weight_decay": weight_decay})
    if no_decay:
        groups.append({"params": no_decay, "weight_decay": 0.0})
    return groups


def build_optimizer(
    params: nn.Module | Iterable[dict],
    *,
    name: str = "sgd",
    lr: float = 0.01,
    momentum: float = 0.9,
    weight_decay: float = 5e-4,
    betas: tuple[float, float] = (0.9, 0.999),
    nesterov: bool = True,
) -> torch.optim.Optimizer:
    """SGD (Nesterov momentum) or AdamW over :func:`param_groups` of a model (or given groups)."""
    groups = param_groups(params, weight_decay) if isinstance(params, nn.Module) else list(params)
    if not groups:
        raise ValueError("the model has no trainable parameters (everything frozen?)")
    name = name.lower()
    if name == "sgd":
        return torch.optim.SGD(groups, lr=lr, momentum=momentum, nesterov=nesterov and momentum > 0)
    if name == "adamw":
        return torch.optim.AdamW(groups, lr=lr, betas=tuple(betas))
    if name == "adam":
        return torch.optim.Adam(groups, lr=lr, betas=tuple(betas))
    raise ValueError(f"optimizer={name!r} is not one of sgd, adamw, adam")


def lr_factor(
    step: int,
    *,
    total_steps: int,
    warmup_steps: int = 0,
    schedule: str = "cosine",
    min_lr_ratio: float = 0.01,
    milestones: Iterable[float] = (0.6, 0.85),
    gamma: float = 0.1,
    warmup_start: float = 0.01,
) -> float:
    """Multiplier of the base learning rate after ``step`` optimiser steps.

    Linear warmup from ``warmup_start`` over ``warmup_steps``, then ``"cosine"`` decay to ``min_lr_ratio``,
    ``"linear"`` decay to ``min_lr_ratio``, ``"step"`` (times ``gamma`` at each fraction in ``milestones`` of the run)
    or ``"constant"``.
    """
    if warmup_steps > 0 and step < warmup_steps:
        return warmup_start + (1.0 - warmup_start) * step / warmup_steps
    span = max(1, total_steps - warmup_steps)
    t = min(1.0, max(0.0, (step - warmup_steps) / span))
    if schedule == "cosine":
        return min_lr_ratio + (1.0 - min_lr_ratio) * 0.5 * (1.0 + math.cos(math.pi * t))
    if schedule == "linear":
        return 1.0 - (1.0 - min_lr_ratio) * t
    if schedule == "step":
        return gamma ** sum(1 for m in milestones if step >= m * total_steps)
    if schedule == "constant":
        return 1.0
    raise ValueError(f"schedule={schedule!r} is not one of cosine, linear, step, constant")


def build_scheduler(optimizer: torch.optim.Optimizer, **kwargs: object) -> torch.optim.lr_scheduler.LambdaLR:
    """A per-iteration ``LambdaLR`` following :func:`lr_factor` (``kwargs`` are its keyword arguments)."""
    lr_factor(0, **kwargs)  # validate eagerly
    fn: Callable[[int], float] = lambda step: lr_factor(step, **kwargs)  # noqa: E731
    return torch.optim.lr_scheduler.LambdaLR(optimizer, fn)
