"""Shared helpers for the ops tests: seeded NMS test cases and torchvision-based references."""

from __future__ import annotations

from collections.abc import Iterator
from dataclasses import dataclass

import pytest
import torch
from torch import Tensor

CASE_KINDS = ("uniform", "grid", "clustered", "duplicates", "zero_area", "multiscale", "far_from_origin")


@dataclass
class CaseBatch:
    """``k`` NMS problems of ``n`` boxes each: ``boxes [k, n, 4]``, ``scores [k, n]``."""

    kind: str
    boxes: Tensor
    scores: Tensor

    def flat(self) -> tuple[Tensor, Tensor, Tensor]:
        """``(boxes [k * n, 4], scores [k * n], group id [k * n])`` for one batched call."""
        k, n = self.scores.shape
        return self.boxes.reshape(-1, 4), self.scores.reshape(-1), torch.arange(k).repeat_interleave(n)


def make_cases(kind: str, k: int, n: int, g: torch.Generator) -> CaseBatch:
    """Seeded random NMS problems of one kind (all float32, valid boxes)."""

    def rand(*shape: int) -> Tensor:
        return torch.rand(*shape, generator=g)

    if kind == "uniform":
        xy, wh = rand(k, n, 2) * 100, rand(k, n, 2) * 40
    elif kind == "grid":  # small integer boxes: exact IoU values such as 1/2, 1/3, 0 and 1 everywhere
        xy = torch.randint(0, 8, (k, n, 2), generator=g).float()
        wh = torch.randint(0, 5, (k, n, 2), generator=g).float()
    elif kind == "clustered":  # detector-like: jittered copies of three objects
        centre = rand(k, 3, 2) * 100
        size = 8 + rand(k, 3, 2) * 40
        obj = torch.randint(0, 3, (k, n), generator=g)
        pick = obj.unsqueeze(-1).expand(k, n, 2)
        wh = size.gather(1, pick) * torch.exp(torch.randn(k, n, 2, generator=g) * 0.15)
        xy = centre.gather(1, pick) + torch.randn(k, n, 2, generator=g) * wh * 0.15 - wh / 2
    elif kind == "duplicates":  # exact copies of a few boxes
        base_xy, base_wh = rand(k, 3, 2) * 50, 1 + rand(k, 3, 2) * 20
        pick = torch.randint(0, 3, (k, n), generator=g).unsqueeze(-1).expand(k, n, 2)
        xy, wh = base_xy.gather(1, pick), base_wh.gather(1, pick)
    elif kind == "zero_area":
        xy, wh = rand(k, n, 2) * 20, rand(k, n, 2) * 10
        wh[..., 0][rand(k, n) < 0.3] = 0
        wh[..., 1][rand(k, n) < 0.3] = 0
    elif kind == "multiscale":  # sizes over 3 orders of magnitude
        xy, wh = rand(k, n, 2) * 100, torch.exp(rand(k, n, 2) * 7) * 0.05
    elif kind == "far_from_origin":  # large coordinates, small boxes: float32 rounding matters
        xy = 1e4 + rand(k, n, 2) * 30
        wh = 0.5 + rand(k, n, 2) * 8
    else:
        raise ValueError(kind)
    boxes = torch.cat([xy, xy + wh], -1)
    mode = torch.randint(0, 4, (k, 1), generator=g)
    scores = torch.where(
        mode == 0,
        torch.randint(0, 3, (k, n), generator=g).float() / 2,  # many ties
        torch.where(mode == 1, torch.full((k, n), 0.5), rand(k, n)),  # all equal / distinct
    )
    return CaseBatch(kind, boxes, scores)


def tv_nms_per_group(boxes: Tensor, scores: Tensor, groups: Tensor, iou_threshold: float) -> Tensor:
    """torchvision's CPU ``nms`` applied to every group; kept indices ordered by (group, torchvision's order)."""
    import torchvision

    boxes, scores, groups = boxes.cpu().float(), scores.cpu().float(), groups.cpu()
    out = []
    for gid in torch.unique(groups).tolist():
        members = (groups == gid).nonzero().squeeze(1)
        out.append(members[torchvision.ops.nms(boxes[members], scores[members], iou_threshold)])
    return torch.cat(out) if out else torch.empty(0, dtype=torch.int64)


def group_major(kept: Tensor, groups: Tensor) -> Tensor:
    """Reorder a score-ordered kept list by group, preserving the order inside each group."""
    kept = kept.cpu()
    return kept[torch.sort(groups.cpu()[kept], stable=True).indices]


def loop_multiclass_reference(
    boxes: Tensor,
    scores: Tensor,
    *,
    score_threshold: float,
    iou_threshold: float,
    max_det: int,
    pre_nms_topk: int | None = None,
) -> list[Tensor]:
    """Per image: threshold, pre-NMS top-k, torchvision ``nms`` per class, merge, top ``max_det``.

    Returns, per image, the kept flat indices ``n * C + c`` in output order (decreasing score, then increasing flat
    index).  Inverted boxes are collapsed and NaN boxes emptied exactly as ``multiclass_nms`` documents.
    """
    import torchvision

    B, _, C = scores.shape
    out = []
    for b in range(B):
        s = scores[b].reshape(-1).float().cpu()
        f = (s.double() > score_threshold).nonzero().squeeze(1)  # exact comparison
        if pre_nms_topk is not None:
            f = f[torch.sort(s[f], descending=True, stable=True).indices[:pre_nms_topk]]
        n, c = f // C, f % C
        bx = (boxes[b, n] if boxes.dim() == 3 else boxes[b, n, c]).float().cpu()
        x1, y1, x2, y2 = bx.unbind(1)
        bx = torch.stack([x1, y1, torch.maximum(x1, x2), torch.maximum(y1, y2)], 1)
        bx[torch.isnan(bx).any(1)] = 0
        kept = [
            f[m][torchvision.ops.nms(bx[m], s[f[m]], iou_threshold)]
            for cls in range(C)
            if (m := (c == cls).nonzero().squeeze(1)).numel()
        ]
        kf = torch.cat(kept).sort().values if kept else torch.empty(0, dtype=torch.int64)
        out.append(kf[torch.sort(s[kf], descending=True, stable=True).indices][:max_det])
    return out


class NMSHelpers:
    """The helpers above, handed to tests through the ``nms_helpers`` fixture (conftest modules are not imported)."""

    kinds = CASE_KINDS
    make_cases = staticmethod(make_cases)
    tv_nms_per_group = staticmethod(tv_nms_per_group)
    group_major = staticmethod(group_major)
    loop_multiclass_reference = staticmethod(loop_multiclass_reference)

    @staticmethod
    def all_cases(seed: int, sizes: tuple[int, ...], per_combo: int) -> Iterator[CaseBatch]:
        """Seeded :class:`CaseBatch` es of every kind and size, ``per_combo`` problems each."""
        g = torch.Generator().manual_seed(seed)
        for kind in CASE_KINDS:
            for n in sizes:
                yield make_cases(kind, per_combo, n, g)


@pytest.fixture
def nms_helpers() -> type[NMSHelpers]:
    return NMSHelpers


@pytest.fixture
def one_thread() -> Iterator[None]:
    """Run single-threaded: the NMS reference path issues many small ops, which oversubscribed OpenMP slows down."""
    before = torch.get_num_threads()
    torch.set_num_threads(1)
    try:
        yield
    finally:
        torch.set_num_threads(before)
