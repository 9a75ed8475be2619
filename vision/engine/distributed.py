"""Distributed data parallel through ``torchrun``: process-group setup, rank helpers, reductions.

``torchrun --nproc_per_node N tools/train.py ...`` sets ``RANK``, ``WORLD_SIZE`` and ``LOCAL_RANK``;
:func:`setup` then joins the group (NCCL on CUDA, gloo on CPU). Multi-node runs use torchrun's own rendezvous flags
(``--nnodes``, ``--node_rank``, ``--rdzv_endpoint``); there is no launcher of our own.
"""

from __future__ import annotations

import os
from dataclasses import dataclass
from typing import Any

import torch
import torch.distributed as dist

from vision.utils.distributed import average_gradients

__all__ = ["DistInfo", "all_gather_objects", "average_gradients", "barrier", "cleanup", "reduce_mean", "setup"]


@dataclass(frozen=True)
class DistInfo:
    """This process's place in the job."""

    rank: int = 0
    world_size: int = 1
    local_rank: int = 0

    @property
    def enabled(self) -> bool:
        return self.world_size > 1

    @property
    def is_main(self) -> bool:
        return self.rank == 0


def setup(device: torch.device) -> tuple[DistInfo, torch.device]:
    """Join the process group when launched by torchrun; return this process's info and its device."""
    world = int(os.environ.get("WORLD_SIZE", "1"))
    if world <= 1:
        return DistInfo(), device
    rank = int(os.environ["RANK"])
    local_rank = int(os.environ.get("LOCAL_RANK", "0"))
    if device.type == "cuda":
        device = torch.device("cuda", local_rank)
        torch.cuda.set_device(device)
        backend = "nccl"
    else:
        backend = "gloo"
    if not dist.is_initialized():
        dist.init_process_group(backend=backend)
    return DistInfo(rank=rank, world_size=world, local_rank=local_rank), device


def cleanup() -> None:
    if dist.is_available() and dist.is_initialized():
        dist.destroy_process_group()


def barrier() -> None:
    if dist.is_available() and dist.is_initialized():
        dist.barrier()


def reduce_mean(value: torch.Tensor) -> torch.Tensor:
    """Mean of a tensor over all ranks (identity without DDP)."""
    if not (dist.is_available() and dist.is_initialized()):
        return value
    out = value.detach().clone()
    dist.all_reduce(out, op=dist.ReduceOp.SUM)
    return out / dist.get_world_size()


def all_gather_objects(obj: Any) -> list[Any]:
    """Every rank's ``obj`` in rank order (``[obj]`` without DDP)."""
    if not (dist.is_available() and dist.is_initialized()):
        return [obj]
    out: list[Any] = [None] * dist.get_world_size()
    dist.all_gather_object(out, obj)
    return out
