"""Structurally pruned models (``vision prune``): a freshly built architecture given the fewer channels of a stored
state dict, so that the loader (:func:`vision.load_model`) and the trainer (resuming a pruned model's fine-tuning)
load it, and what a resume needs to know of such a run. At the bottom layer, because both need it."""

from __future__ import annotations

import os
from collections.abc import Mapping
from pathlib import Path
from typing import Any

import torch
from torch import nn

__all__ = ["checkpoint_pruned", "pruned_restart_refused", "reshape_to_state"]


def checkpoint_pruned(state_file: str | os.PathLike[str]) -> dict[str, Any] | None:
    """The ``pruned`` metadata (``ratio``, ``method``, ``base``) of the weights saved with a checkpoint's state file
    (``<unit>/state.pt`` -> ``<unit>/weights.safetensors``, ``last.state.pt`` -> ``last.safetensors``); ``None`` for
    weights of an unpruned model or none at all."""
    from vision.hub.metadata import read_safetensors_metadata

    p = Path(state_file)
    name = "weights.safetensors" if p.name == "state.pt" else p.name.replace(".state.pt", ".safetensors")
    weights = p.with_name(name)
    return (read_safetensors_metadata(weights).get("pruned") or None) if weights.is_file() else None


def pruned_restart_refused(target: Any, run: Path, pruned: Mapping[str, Any]) -> FileNotFoundError:
    """The refusal to start again (``resume=target``) a run that fine-tunes a ``vision prune`` model (``pruned``: its
    ``ratio``, ``method`` and ``base``) and has no complete checkpoint: its pruned weights exist only there (its
    arguments would rebuild the unpruned architecture, randomly initialised)."""
    keys = {"base": "weights", "ratio": "ratio", "method": "method"}
    again = " ".join(f"{shown}={pruned[k]}" for k, shown in keys.items() if k in pruned)
    return FileNotFoundError(
        f"resume={target}: {run} fine-tunes a pruned model and holds no complete checkpoint yet; nothing to resume: "
        f"prune and fine-tune again (vision prune {again} data=... epochs=N)"
    )


def reshape_to_state(net: nn.Module, state: dict[str, torch.Tensor]) -> nn.Module:
    """Give ``net`` the parameter and buffer shapes of ``state`` (a structurally pruned copy of ``net``'s state dict).

    Every module whose own tensors differ in shape gets uninitialised tensors of the stored shapes, and Conv*d
    (``in_channels``, ``out_channels``, ``groups``: a depthwise convolution stays depthwise), BatchNorm
    (``num_features``) and Linear (``in_features``, ``out_features``) their attributes updated. Returns ``net``.
    """
    for name, module in net.named_modules():
        prefix = f"{name}." if name else ""
        changed = False
        for table in (module._parameters, module._buffers):
            for key, value in list(table.items()):
                stored = state.get(prefix + key)
                if value is None or stored is None or stored.shape == value.shape:
                    continue
                fresh = torch.empty(stored.shape, dtype=value.dtype, device=value.device)
                table[key] = (
                    nn.Parameter(fresh, requires_grad=value.requires_grad) if key in module._parameters else fresh
                )
                changed = True
        if not changed:
            continue
        if isinstance(module, nn.modules.conv._ConvNd):
            out_c, per_group = int(module.weight.shape[0]), int(module.weight.shape[1])
            if module.groups > 1 and module.groups == module.in_channels:  # depthwise: one group per input channel
                multiplier = module.out_channels // module.groups
                module.groups = out_c // multiplier
            module.in_channels, module.out_channels = per_group * module.groups, out_c
        elif isinstance(module, nn.modules.batchnorm._NormBase):
            module.num_features = int(
                module.weight.shape[0] if module.weight is not None else module.running_mean.shape[0]
            )
        elif isinstance(module, nn.Linear):
            module.out_features, module.in_features = (int(d) for d in module.weight.shape)
    return net
