"""Distributed helpers that models need too (models sit below the engine and may not import it)."""

from __future__ import annotations

import torch
import torch.distributed as dist

__all__ = ["average_gradients"]


def average_gradients(module: torch.nn.Module) -> None:
    """Average the gradients of ``module``'s parameters over all ranks (one all-reduce per dtype).

    For models that step their own optimisers (GANs) and so are not wrapped in DistributedDataParallel; a no-op
    without DDP.
    """
    if not (dist.is_available() and dist.is_initialized()) or dist.get_world_size() == 1:
        return
    grads = [p.grad for p in module.parameters() if p.grad is not None]
    world = dist.get_world_size()
    for dtype in {g.dtype for g in grads}:
        group = [g for g in grads if g.dtype == dtype]
        flat = torch.cat([g.reshape(-1) for g in group])
        dist.all_reduce(flat, op=dist.ReduceOp.SUM)
        flat /= world
        offset = 0
        for g in group:
            g.copy_(flat[offset : offset + g.numel()].view_as(g))
            offset += g.numel()
