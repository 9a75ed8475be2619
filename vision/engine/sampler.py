"""Reproducible data order and augmentation, independent of workers, ranks and interruptions.

- :class:`EpochSampler` draws one permutation per epoch from ``(seed, epoch)`` and hands rank ``r`` of ``w`` the
  indices ``perm[r::w]``; it can start mid-epoch (``start_batch``), so a resumed run sees exactly the batches the
  interrupted one had not seen yet. The union of the ranks' ``i``-th batches is the single-process ``i``-th batch of
  ``w`` times the size, so DDP and one process with the same global batch see the same samples.
- :class:`SeededDataset` runs each sample's transform under random generators seeded from
  ``(seed, epoch, index)``: augmentation does not depend on which worker or rank loads the sample, nor on what ran
  before, and the caller's global random state is left untouched.
"""

from __future__ import annotations

import hashlib
import random
from collections.abc import Iterator
from typing import Any

import numpy as np
import torch
from torch.utils.data import Dataset, Sampler

__all__ = ["EpochSampler", "SeededDataset", "sample_seed", "training_subset"]


def sample_seed(seed: int, epoch: int, index: int) -> int:
    """A 63-bit seed for one sample of one epoch (stable across processes and platforms)."""
    digest = hashlib.blake2b(f"{seed}:{epoch}:{index}".encode(), digest_size=8).digest()
    return int.from_bytes(digest, "little") & ((1 << 63) - 1)


def training_subset(dataset: Dataset, fraction: float, *, seed: int) -> Dataset:
    """The deterministic subset of a training set that ``fraction=`` keeps (``dataset`` itself for 1.0).

    ``max(1, int(n * fraction))`` of the ``n`` distinct samples, drawn by a permutation seeded with ``seed``, in index
    order. A dataset that passes over its samples ``repeat`` times per epoch (a ``repeat`` attribute, sample ``i``
    being sample ``i % n``) is cut by its distinct samples and keeps every pass of each, so ``repeat=`` still means
    that many passes over the kept samples.

    Raises:
        ValueError: ``fraction`` is not in (0, 1].
    """
    if not 0.0 < fraction <= 1.0:
        raise ValueError(f"fraction={fraction} must be in (0, 1]")
    if fraction == 1.0:
        return dataset
    total = len(dataset)  # type: ignore[arg-type]
    repeat = getattr(dataset, "repeat", 1)
    repeat = repeat if isinstance(repeat, int) and repeat > 1 and total % repeat == 0 else 1
    distinct = total // repeat
    keep = np.random.default_rng(seed).permutation(distinct)[: max(1, int(distinct * fraction))]
    indices = sorted(int(k) + r * distinct for k in keep for r in range(repeat))
    return torch.utils.data.Subset(dataset, indices)


class SeededDataset(Dataset):
    """Wrap a dataset so that sample ``i`` of epoch ``e`` is produced under seeds derived from ``(seed, e, i)``.

    Python's ``random``, NumPy's global generator and torch's CPU generator are seeded for the duration of
    ``dataset[i]`` and restored afterwards; transforms with their own generator (albumentations ``Compose``) are
    re-seeded through ``set_random_seed`` when the wrapped dataset exposes ``transform``.
    """

    def __init__(self, dataset: Dataset, *, seed: int) -> None:
        self.dataset = dataset
        self.seed = int(seed)
        self.epoch = 0

    def set_epoch(self, epoch: int) -> None:
        self.epoch = int(epoch)

    def __len__(self) -> int:
        return len(self.dataset)  # type: ignore[arg-type]

    def __getattr__(self, name: str) -> Any:
        # forward plain attributes (``classes`` ...) but never dunders: DataLoader looks for ``__getitems__`` and
        # must not find the wrapped dataset's, which would bypass the seeding
        if name == "dataset" or name.startswith("__"):
            raise AttributeError(name)
        return getattr(self.dataset, name)

    def __getitems__(self, indices: list[int]) -> list[Any]:
        return [self[i] for i in indices]

    def __getitem__(self, index: int) -> Any:
        seed = sample_seed(self.seed, self.epoch, int(index))
        py_state = random.getstate()
        np_state = np.random.get_state()
        torch_state = torch.get_rng_state()
        try:
            random.seed(seed)
            np.random.seed(seed % (2**32))
            torch.manual_seed(seed)
            _reseed(_find_transform(self.dataset), seed % (2**32))
            return self.dataset[index]
        finally:
            random.setstate(py_state)
            np.random.set_state(np_state)
            torch.set_rng_state(torch_state)


def _reseed(transform: Any, seed: int) -> None:
    """Seed a transform that owns its generator (albumentations ``Compose``, or a wrapper holding one)."""
    for candidate in (transform, getattr(transform, "compose", None)):
        if candidate is not None and hasattr(candidate, "set_random_seed"):
            candidate.set_random_seed(seed)
            return


def _find_transform(dataset: Any) -> Any:
    """The ``transform`` of a dataset, looking through wrappers such as ``Subset`` (``.dataset``)."""
    for _ in range(8):
        transform = getattr(dataset, "transform", None)
        if transform is not None:
            return transform
        dataset = getattr(dataset, "dataset", None)
        if dataset is None:
            return None
    return None


class EpochSampler(Sampler[int]):
    """Per-epoch permutation (or identity) split across ranks, resumable at a batch boundary.

    Args:
        length: dataset size.
        shuffle: permute each epoch.
        seed: base seed of the permutation.
        rank, world_size: this process and the number of processes (DDP).
        batch_size: per-rank batch size (used by ``start_batch``).
        drop_last: keep only whole global batches (``length // (batch * world)`` of them), so every rank does the
            same number of equal-sized steps.
    """

    def __init__(
        self,
        length: int,
        *,
        shuffle: bool = True,
        seed: int = 0,
        rank: int = 0,
        world_size: int = 1,
        batch_size: int = 1,
        drop_last: bool = True,
    ) -> None:
        if length <= 0:
            raise ValueError("EpochSampler needs a non-empty dataset")
        self.length = length
        self.shuffle = shuffle
        self.seed = int(seed)
        self.rank = rank
        self.world_size = world_size
        self.batch_size = batch_size
        self.drop_last = drop_last
        self.epoch = 0
        self.start_batch = 0

    def set_epoch(self, epoch: int, *, start_batch: int = 0) -> None:
        self.epoch = int(epoch)
        self.start_batch = int(start_batch)

    def _indices(self) -> list[int]:
        if self.shuffle:
            g = torch.Generator()
            g.manual_seed(self.seed + 1_000_003 * self.epoch)
            order = torch.randperm(self.length, generator=g).tolist()
        else:
            order = list(range(self.length))
        if self.drop_last:
            usable = (self.length // (self.batch_size * self.world_size)) * self.batch_size * self.world_size
            if usable == 0:
                raise ValueError(
                    f"dataset of {self.length} samples is smaller than one global batch "
                    f"({self.batch_size} x {self.world_size} processes); lower batch="
                )
            order = order[:usable]
        mine = order[self.rank :: self.world_size]
        return mine[self.start_batch * self.batch_size :]

    def batches_per_epoch(self) -> int:
        per_rank = len(self._all_mine())
        return per_rank // self.batch_size if self.drop_last else -(-per_rank // self.batch_size)

    def _all_mine(self) -> list[int]:
        start, self.start_batch = self.start_batch, 0
        try:
            return self._indices()
        finally:
            self.start_batch = start

    def __iter__(self) -> Iterator[int]:
        return iter(self._indices())

    def __len__(self) -> int:
        return len(self._indices())
