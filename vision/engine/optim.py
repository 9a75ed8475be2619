"""Optimisers (no weight decay on norms and biases) and per-iteration learning-rate schedules."""

from __future__ import annotations

import math
from collections.abc import Callable, Iterable, Sequence

import torch
from torch import nn

__all__ = ["build_optimizer", "build_scheduler", "lr_factor", "param_groups"]

_NORMS = (nn.modules.batchnorm._NormBase, nn.GroupNorm, nn.LayerNorm, nn.LocalResponseNorm)


def param_groups(
    model: nn.Module, weight_decay: float, *, head_prefixes: Sequence[str] = (), backbone_lr_mult: float = 1.0
) -> list[dict]:
    """Two groups: decayed weights, and biases + normalisation parameters + 1-d tensors without decay.

    With ``head_prefixes`` (parameter-name prefixes of a newly initialised head) and ``backbone_lr_mult != 1`` each
    group is split in two: the head's parameters, and the others with ``"lr_mult": backbone_lr_mult`` (the pretrained
    body of a fine-tuned model learns more slowly than its new head).
    """
    if head_prefixes and backbone_lr_mult != 1.0:
        heads = tuple(head_prefixes)
        in_head = {id(p) for n, p in model.named_parameters() if any(n == h or n.startswith(h + ".") for h in heads)}
        groups = []
        for g in param_groups(model, weight_decay):
            head = [p for p in g["params"] if id(p) in in_head]
            body = [p for p in g["params"] if id(p) not in in_head]
            groups += [{**g, "params": head}] if head else []
            groups += [{**g, "params": body, "lr_mult": backbone_lr_mult}] if body else []
        return groups
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
    head_prefixes: Sequence[str] = (),
    backbone_lr_mult: float = 1.0,
) -> torch.optim.Optimizer:
    """SGD (Nesterov momentum) or AdamW over :func:`param_groups` of a model (or given groups); a group with an
    ``"lr_mult"`` starts at ``lr * lr_mult`` (see ``head_prefixes``/``backbone_lr_mult`` of :func:`param_groups`)."""
    if isinstance(params, nn.Module):
        groups = param_groups(params, weight_decay, head_prefixes=head_prefixes, backbone_lr_mult=backbone_lr_mult)
    else:
        groups = list(params)
    for g in groups:
        if "lr_mult" in g:
            g["lr"] = lr * float(g["lr_mult"])
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
