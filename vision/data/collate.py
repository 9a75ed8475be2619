"""Batching detection samples: a collate that keeps variable box counts, padded targets, aspect-ratio grouping."""

from __future__ import annotations

from collections.abc import Iterator, Sequence
from typing import Any

import torch
from torch import Tensor
from torch.utils.data import Sampler

from vision.data.transforms import BOX_FIELDS
from vision.ops.targets import pad_targets as _pad

__all__ = ["AspectRatioBatchSampler", "detection_collate", "instance_map", "pad_targets"]


def detection_collate(batch: Sequence[tuple[Any, dict[str, Any]]]) -> tuple[Tensor | list[Any], list[dict[str, Any]]]:
    """``[(image, target), ...]`` -> ``(images, targets)``.

    Images are stacked into ``[B, C, H, W]`` when they all have the same shape (and are tensors), otherwise returned as
    a list; targets stay a list of dicts (each image keeps its own number of boxes).

    Example:
        >>> loader = DataLoader(dataset, batch_size=8, collate_fn=detection_collate)
    """
    images = [b[0] for b in batch]
    targets = [b[1] for b in batch]
    if images and all(isinstance(i, Tensor) for i in images) and len({tuple(i.shape) for i in images}) == 1:
        return torch.stack(images), targets
    return images, targets


def pad_targets(
    targets: Sequence[dict[str, Any]], *, max_boxes: int | None = None, device: torch.device | str | None = None
) -> dict[str, Tensor]:
    """:func:`vision.ops.pad_targets` with every per-box field of :data:`~vision.data.transforms.BOX_FIELDS`."""
    return _pad(targets, max_boxes=max_boxes, device=device, fields=BOX_FIELDS[1:])


def instance_map(targets: Sequence[dict[str, Any]], *, size: tuple[int, int] | None = None) -> Tensor:
    """Per-image instance-id maps ``[B, H, W]`` from ``target["masks"]`` (``0`` background, ``k + 1`` instance ``k``).

    ``uint8`` for up to 254 instances per image, else ``int32``. Where masks overlap, the highest index wins (as if
    painted in order). Built with one concatenation and one ``scatter_reduce`` (no per-image kernels).
    """
    B = len(targets)
    if size is None:
        size = tuple(targets[0]["masks"].shape[-2:])
    H, W = size
    counts = [int(t["masks"].shape[0]) for t in targets]
    dtype = torch.uint8 if max(counts, default=0) < 255 else torch.int32
    dev = targets[0]["masks"].device if B else torch.device("cpu")
    out = torch.zeros(B, H, W, dtype=torch.int32, device=dev)
    if sum(counts) == 0:
        return out.to(dtype)
    masks = torch.cat([t["masks"].reshape(-1, H, W) for t in targets]).to(torch.int32)
    counts_t = torch.tensor(counts)
    batch_idx = torch.repeat_interleave(torch.arange(B), counts_t)
    ids = (torch.arange(sum(counts)) - (torch.cumsum(counts_t, 0) - counts_t)[batch_idx] + 1).to(dev, torch.int32)
    index = batch_idx.to(dev).view(-1, 1, 1).expand(-1, H, W)
    out.scatter_reduce_(0, index, (masks != 0).to(torch.int32) * ids.view(-1, 1, 1), "amax")
    return out.to(dtype)


class AspectRatioBatchSampler(Sampler[list[int]]):
    """Batches whose images share an aspect-ratio group (so padding a batch to one size wastes little).

    Indices come from ``sampler`` (e.g. a ``RandomSampler`` or ``DistributedSampler``) in its order; each goes to the
    buffer of its group, and a buffer that reaches ``batch_size`` is yielded. At the end the incomplete buffers are
    yielded too (unless ``drop_last``), each as one smaller batch.

    Args:
        sampler: yields dataset indices.
        aspect_ratios: ``width / height`` per dataset index (``dataset.aspect_ratios()`` of the detection datasets).
        batch_size: images per batch.
        boundaries: group edges on the aspect ratio (default ``(1.0,)``: portrait vs landscape).
        drop_last: drop the incomplete batches at the end.

    Example:
        >>> bs = AspectRatioBatchSampler(RandomSampler(ds), ds.aspect_ratios(), batch_size=8)
        >>> loader = DataLoader(ds, batch_sampler=bs, collate_fn=detection_collate)
    """

    def __init__(
        self,
        sampler: Sampler[int] | Sequence[int],
        aspect_ratios: Sequence[float],
        *,
        batch_size: int,
        boundaries: Sequence[float] = (1.0,),
        drop_last: bool = False,
    ) -> None:
        if batch_size < 1:
            raise ValueError(f"batch_size must be >= 1, got {batch_size}")
        self.sampler, self.batch_size, self.drop_last = sampler, int(batch_size), drop_last
        edges = torch.tensor(sorted(boundaries), dtype=torch.float64)
        self.group_ids = torch.bucketize(torch.tensor(list(aspect_ratios), dtype=torch.float64), edges).tolist()
        self.num_groups = len(edges) + 1

    def __iter__(self) -> Iterator[list[int]]:
        buffers: list[list[int]] = [[] for _ in range(self.num_groups)]
        for idx in self.sampler:
            buf = buffers[self.group_ids[idx]]
            buf.append(int(idx))
            if len(buf) == self.batch_size:
                yield buf[:]
                buf.clear()
        if not self.drop_last:
            for buf in buffers:
                if buf:
                    yield buf

    def __len__(self) -> int:
        if hasattr(self.sampler, "__len__") and len(self.sampler) == len(self.group_ids):
            counts = torch.bincount(torch.tensor(self.group_ids), minlength=self.num_groups).tolist()
        else:  # a sampler over a subset (e.g. distributed): count what it yields
            counts = torch.bincount(torch.tensor([self.group_ids[i] for i in self.sampler], dtype=torch.long),
                                    minlength=self.num_groups).tolist()  # fmt: skip
        if self.drop_last:
            return sum(c // self.batch_size for c in counts)
        return sum(-(-c // self.batch_size) for c in counts)
