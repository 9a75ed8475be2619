"""The data loaders of a training run, and the seeds they draw.

A ``DataLoader`` iterator draws its workers' base seed when it is created, from the loader's ``generator`` or, without
one, from torch's global generator. A draw from the global generator at every epoch's start would put a resumed run
one draw off: the checkpoint saved mid-epoch holds the global state after that epoch's draw, and the resumed run
draws again when it starts the rest of the epoch, so every later dropout mask or diffusion noise would differ from
the run that was never interrupted. Each loader therefore draws from a generator of its own, seeded at every epoch
from ``(seed, epoch, rank)`` (:func:`loader_seed`): the workers' seeds depend on the run's seed and the epoch only,
and the global stream holds nothing but the model's own draws.
"""

from __future__ import annotations

import hashlib
from collections.abc import Callable
from dataclasses import dataclass
from typing import Any

import torch
from torch.utils.data import DataLoader, Subset

from vision.engine._parts import cpu_workers, single_threaded_worker
from vision.engine.reporting import data_summary
from vision.engine.sampler import EpochSampler, SeededDataset, training_subset
from vision.engine.task import Task

__all__ = ["RunLoaders", "build_loaders", "loader_seed"]


def loader_seed(seed: int, epoch: int, rank: int, split: str = "train") -> int:
    """A 63-bit seed for the ``split`` loader of ``rank`` in ``epoch`` (stable across processes and platforms).

    Example:
        >>> loader_seed(0, 1, 0) == loader_seed(0, 1, 0) != loader_seed(0, 2, 0)
        True
    """
    digest = hashlib.blake2b(f"loader:{split}:{seed}:{epoch}:{rank}".encode(), digest_size=8).digest()
    return int.from_bytes(digest, "little") & ((1 << 63) - 1)


@dataclass
class RunLoaders:
    """What :func:`build_loaders` makes: the seeded training set and its sampler, the loaders, the per-process
    batch, and the generators the loaders draw their workers' seeds from (:meth:`seed_epoch` seeds them)."""

    train_set: SeededDataset
    sampler: EpochSampler
    train: DataLoader
    val: DataLoader | None
    local_batch: int
    generators: dict[str, torch.Generator]
    seed: int
    rank: int

    def seed_epoch(self, epoch: int) -> None:
        """Seed both loaders' generators for ``epoch`` (0-based), before their iterators of that epoch are made."""
        for split, generator in self.generators.items():
            generator.manual_seed(loader_seed(self.seed, epoch, self.rank, split))


def build_loaders(
    task: Task,
    args: dict[str, Any],
    *,
    rank: int,
    world_size: int,
    device: torch.device,
    log: Callable[[str], Any],
) -> RunLoaders:
    """The training loader (reproducible order and augmentation: :mod:`vision.engine.sampler`; whole batches only)
    and the validation loader (this rank's share, in order) of ``task``'s data sets.

    Raises:
        ValueError: ``batch`` does not divide among the ``world_size`` processes.
    """
    train_ds, val_ds = task.build_datasets()
    for split, ds in (("train", train_ds), ("val", val_ds)):  # what the data checks kept and dropped
        if (line := data_summary(ds)) is not None:
            log(f"data {split}: {line}")
    seed = int(args["seed"])
    train_ds = training_subset(train_ds, float(args["fraction"]), seed=seed)  # quick experiments, tests
    train_set = SeededDataset(train_ds, seed=seed)
    batch = int(args["batch"])
    if batch % world_size:
        raise ValueError(f"batch={batch} (global) is not divisible by the {world_size} processes")
    local_batch = batch // world_size
    sampler = EpochSampler(len(train_set), shuffle=True, seed=seed, rank=rank, world_size=world_size,
                           batch_size=local_batch, drop_last=True)  # fmt: skip
    workers = cpu_workers(int(args["workers"]), device, log)
    generators = {"train": torch.Generator(), "val": torch.Generator()}
    common = {
        "num_workers": workers,
        "collate_fn": task.collate_fn(),
        "pin_memory": device.type == "cuda",
        "worker_init_fn": single_threaded_worker if workers else None,
    }
    train = DataLoader(train_set, batch_size=local_batch, sampler=sampler, drop_last=True,
                       **{**common, "collate_fn": task.train_collate_fn(device, workers)},
                       generator=generators["train"])  # fmt: skip
    val = None
    if val_ds is not None and len(val_ds) > 0:  # type: ignore[arg-type]
        mine = Subset(val_ds, list(range(rank, len(val_ds), world_size)))  # type: ignore[arg-type]
        val = DataLoader(mine, batch_size=local_batch, shuffle=False, generator=generators["val"], **common)
    loaders = RunLoaders(train_set, sampler, train, val, local_batch, generators, seed, rank)
    loaders.seed_epoch(0)
    return loaders
