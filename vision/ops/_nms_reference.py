"""Exact reference path for NMS: vectorised torch ops, any device (used on the CPU).

The public functions live in :mod:`vision.ops.nms`; this module only answers one question: given boxes already
sorted by priority inside each segment (segment = one (image, class) group), which does greedy NMS keep?

The answer must be bit-for-bit the one torchvision's CPU ``nms`` gives for every segment, so every IoU that
decides anything is computed with torchvision's formula in the same precision and operation order::

    area = (x2 - x1) * (y2 - y1)
    w = max(0, min(x2_i, x2_j) - max(x1_i, x1_j));  h = likewise
    inter = w * h
    iou = inter / ((area_i + area_j) - inter)          # suppress j when iou > threshold (threshold as float64)

Algorithm (exact; the speed comes from only evaluating pairs that could possibly matter):

0. *Small segments* (<= ``_SMALL_SEGMENT`` boxes) go to torchvision's CPU kernel itself, one call per segment,
   unless there are many of them: below a few thousand boxes its O(N * kept) loop beats any vectorised scheme.
1. *Spatial hashing.*  A pair can only reach ``IoU > t`` (t > 0) when ``max(w, h)`` of the two boxes differ by less
   than a factor ``1/t`` and their centres are closer than ``(1 - t) * max(w_a, w_b)`` in x (``h`` in y).  Boxes are
   binned into scale levels of width ``-log t`` and, per level, into rows at least that y-distance high; inside a row
   they are sorted by centre x, so the candidates of a box are three rows x one x-range of its own and each adjacent
   level: a few ``searchsorted`` calls.  Bounds carry a safety margin far larger than float rounding; inputs where
   rounding could break them (sub-normal or overflowing areas, non-finite coordinates) take the torchvision fallback
   instead.  Zero-area boxes can never overlap anything with positive area, so they never suppress and are never
   suppressed (for thresholds >= 0) and skip the grid entirely.
2. *Chunked greedy.*  Boxes are decided in rounds.  Each round takes the next ``c`` undecided boxes of every segment
   (``c`` grows geometrically), resolves greedy NMS inside that chunk from the sparse candidate graph (a box is kept
   when every higher-priority neighbour in the graph is suppressed; iterated to the fixpoint), then removes every
   later box that a newly kept box suppresses (the kept boxes, few, issue all the queries).  Dense clusters are thus
   cleared by their first few kept boxes (like torchvision's loop), and sparse scenes never pay for the pairs
   torchvision's loop visits.  Very sparse scenes (a handful of candidates per box) build one graph for everything.
3. *Fallback.*  Negative thresholds, unsafe magnitudes and pathological suppression chains are handed to
   torchvision's own CPU kernel per segment (or a local copy of its loop when torchvision is missing) — exact by
   definition.  Thresholds >= 1 suppress nothing (float IoU never exceeds 1) and return immediately.
"""

from __future__ import annotations

import math

import torch
from torch import Tensor

__all__ = ["keep_sorted", "threshold_for_dtype", "tv_nms"]

# Scale-level and centre-distance bounds are loosened by these relative margins; the float IoU of the pairs they must
# keep differs from the exact IoU by < 1e-6 (relative), so 1e-4 / 1e-6 leave orders of magnitude of headroom.
_LEVEL_MARGIN = 1e-4
_CELL_MARGIN = 1e-6
# Below this threshold the scale levels become too coarse to help: a single level bounded by plain overlap is used.
_MIN_LEVEL_THRESHOLD = 1e-3
# Areas (in the compute dtype) outside this range could round badly enough to break the bounds -> fallback.
_SAFE_AREA = {torch.float32: (1e-30, 1e30), torch.float64: (1e-290, 1e290)}
# Segments up to this size go straight to torchvision's kernel: its loop beats the sparse path's fixed cost.
_SMALL_SEGMENT = 4096
_MAX_LOOPED_SEGMENTS = 256  # at most this many small segments are handed to torchvision one by one
_FIRST_CHUNK = 128
_CHUNK_GROWTH = 4
_MAX_ROUNDS = 64
_FLAT_MAX_CANDIDATES = 4.0  # mean candidates per box up to which all boxes are decided at once
_MAX_PAIRS_PER_BATCH = 1 << 22
_FLOAT32_MAX = 3.4028234663852886e38


def threshold_for_dtype(threshold: float, dtype: torch.dtype) -> float:
    """The ``thr`` of ``dtype`` with ``v > thr  <=>  float64(v) > threshold`` for every value ``v`` of ``dtype``.

    torchvision's CPU kernel compares the float32 IoU with the float64 threshold.  Comparing against the float32
    threshold rounded to nearest (what ``tensor > python_float`` and torchvision's CUDA kernel do) differs when the
    threshold is not representable and rounds up; rounding towards -inf keeps the exact semantics.  Pure Python (no
    tensors), so it costs nothing under ``torch.compile`` or CUDA-graph capture.  Also used for score thresholds.
    """
    t = float(threshold)
    if dtype == torch.float64 or not math.isfinite(t) or t == 0.0:
        return t + 0.0
    if t > _FLOAT32_MAX:
        return _FLOAT32_MAX
    if t < -_FLOAT32_MAX:
        return -math.inf
    _, e = math.frexp(t)  # |t| = m * 2**e with 0.5 <= m < 1
    q = max(e - 24, -149)  # float32 quantum at t: 24 significant bits, sub-normals below 2**-126
    return math.ldexp(math.floor(math.ldexp(t, -q)), q)


# ---------------------------------------------------------------------------------------------------------------------
# torchvision fallback (exact by definition)
# ---------------------------------------------------------------------------------------------------------------------


_TV_NMS: object = None


def torchvision_nms_op():
    """``torch.ops.torchvision.nms`` (importing torchvision registers it), or ``None`` without torchvision."""
    global _TV_NMS
    if _TV_NMS is None:
        try:
            import torchvision  # noqa: F401

            _TV_NMS = torch.ops.torchvision.nms.default
        except (ImportError, AttributeError, RuntimeError):
            _TV_NMS = False
    return _TV_NMS or None


def tv_nms(boxes: Tensor, scores: Tensor, iou_threshold: float) -> Tensor:
    """torchvision's CPU ``nms`` (kept indices by decreasing score); runs on the CPU whatever the input device."""
    op = _TV_NMS or torchvision_nms_op()
    if boxes.device.type != "cpu":
        return tv_nms(boxes.cpu(), scores.cpu(), iou_threshold).to(boxes.device)
    if op is not None:
        return op(boxes, scores, iou_threshold)
    order = torch.sort(scores, descending=True, stable=True).indices
    return order[_python_greedy(boxes[order], iou_threshold)]


def _tv_nms_prioritised(boxes: Tensor, iou_threshold: float) -> Tensor:
    """Greedy NMS of ``boxes`` already in priority order; returns kept positions (ascending)."""
    n = boxes.shape[0]
    # strictly decreasing synthetic scores make torchvision visit the boxes in exactly the given order
    prio = torch.arange(n, 0, -1, dtype=boxes.dtype, device=boxes.device)
    return tv_nms(boxes, prio, iou_threshold).sort().values


def _python_greedy(boxes: Tensor, iou_threshold: float) -> Tensor:
    """Torchvision's loop, vectorised over the inner dimension (only used without torchvision)."""
    x1, y1, x2, y2 = boxes.unbind(1)
    area = (x2 - x1) * (y2 - y1)
    n = boxes.shape[0]
    suppressed = torch.zeros(n, dtype=torch.bool, device=boxes.device)
    thr = threshold_for_dtype(iou_threshold, boxes.dtype)
    keep = []
    for i in range(n):
        if suppressed[i]:
            continue
        keep.append(i)
        w = (torch.minimum(x2[i], x2[i + 1 :]) - torch.maximum(x1[i], x1[i + 1 :])).clamp_(min=0)
        h = (torch.minimum(y2[i], y2[i + 1 :]) - torch.maximum(y1[i], y1[i + 1 :])).clamp_(min=0)
        inter = w * h
        suppressed[i + 1 :] |= (inter / ((area[i] + area[i + 1 :]) - inter)) > thr
    return torch.tensor(keep, dtype=torch.int64, device=boxes.device)


def _segment_bounds(seg: Tensor | None, m: int) -> list[tuple[int, int]]:
    if seg is None:
        return [(0, m)]
    _, counts = torch.unique_consecutive(seg, return_counts=True)
    ends = counts.cumsum(0).tolist()
    starts = [0, *ends[:-1]]
    return list(zip(starts, ends))


def _keep_by_torchvision(boxes: Tensor, seg: Tensor | None, iou_threshold: float) -> Tensor:
    keep = torch.zeros(boxes.shape[0], dtype=torch.bool, device=boxes.device)
    for start, end in _segment_bounds(seg, boxes.shape[0]):
        keep[start + _tv_nms_prioritised(boxes[start:end], iou_threshold)] = True
    return keep


# ---------------------------------------------------------------------------------------------------------------------
# sparse candidate pairs
# ---------------------------------------------------------------------------------------------------------------------


class _Grid:
    """Two sort orders of every box that can overlap another one (positive width and height), "grid space".

    Boxes are grouped by (segment, scale level, row) and ordered by quantised centre x inside a row, so the
    candidates of a box in one row form one contiguous key range ``[row | x - reach, row | x + reach]``.  A partner
    lies in the box's own level or an adjacent one and in one of the three rows around it: row heights and x reaches
    bound the centre distance of any pair with IoU > t, which satisfies ``|dcx| < (1 - t) * max(w_a, w_b)`` (same
    for y) and ``w_b < w_a / t``.

    * *home order*: by the box's own row at its own level (``row``), then x.
    * *up order*: by the row the box falls in at the next level's row height (``up_row``), then x — the smaller box
      of a pair is found there by the larger one, in the larger one's own row numbering.

    Positions in grid space follow the box ids (ascending), i.e. NMS priority order inside every segment.
    """

    def __init__(self, boxes: Tensor, seg: Tensor | None, eligible: Tensor, iou_threshold: float) -> None:
        ids = eligible.nonzero().squeeze(1)
        dev = boxes.device
        x1, y1, x2, y2 = boxes.index_select(0, ids).double().unbind(1)
        w, h = x2 - x1, y2 - y1
        cx, cy = (x1 + x2) * 0.5, (y1 + y2) * 0.5
        t = iou_threshold
        if t >= _MIN_LEVEL_THRESHOLD:
            t_lo = t * (1.0 - _LEVEL_MARGIN)
            lvl = torch.floor(torch.log(torch.maximum(w, h)) / -math.log(t_lo)).long()
            lvl -= lvl.min()
            reach, ratio = 1.0 - t_lo, 1.0 / t_lo
        else:
            lvl = torch.zeros_like(ids)
            reach, ratio = 1.0, math.inf  # positive overlap alone: |dcx| < max(w_a, w_b)
        nk = int(lvl.max()) + 2  # one spare level for the "level + 1" rows of the top level

        def level_max(v: Tensor) -> Tensor:
            out = torch.zeros(nk, dtype=torch.float64, device=dev).scatter_reduce_(0, lvl, v, "amax")
            return torch.cummax(out, 0).values  # every box of level <= k has v <= out[k]

        maxw, maxh = level_max(w), level_max(h)
        grow = 1.0 + _CELL_MARGIN
        eps = float(torch.maximum(cx.abs().max(), cy.abs().max())) * 1e-12 + 1e-300
        height = maxh * (reach * grow) + eps  # row height of each level: >= |dcy| of its pairs
        ox, oy = float(cx.min()), float(cy.min())
        ex, ey = float(cx.max()) - ox, float(cy.max()) - oy
        if seg is None:
            sg = torch.zeros_like(ids)
        else:
            sv = seg.index_select(0, ids)
            sg = torch.cat([sv.new_zeros(1), (sv[1:] != sv[:-1]).long()]).cumsum(0)
        nseg = int(sg[-1]) + 1
        # widen the rows uniformly if (segment, level, row) would need more than 40 bits
        height = height * max(1.0, nseg * nk * (ey / float(height[0]) + 4) / 2.0**40)
        ny = int(ey / float(height[0])) + 4
        self.xbits = xbits = min(31, 62 - (nseg * nk * ny).bit_length())
        qscale = (2.0**xbits - 1.0) / max(ex, 1e-300)
        qmax = (1 << xbits) - 1

        def quant(x: Tensor) -> Tensor:
            return torch.floor((x - ox) * qscale).clamp_(0, qmax).long()

        qx = quant(cx)
        self.row = (sg * nk + lvl) * ny + torch.floor((cy - oy) / height[lvl]).long() + 1
        self.up_row = (sg * nk + lvl + 1) * ny + torch.floor((cy - oy) / height[lvl + 1]).long() + 1
        # x reach towards partners of the same or the next level (the widest possible partner of level k is
        # min(maxw[k], w * ratio); maxw is cumulative, so this also covers partners of lower levels)
        rx = torch.maximum(w, torch.minimum(maxw[lvl], w * ratio)) * (reach * grow) + eps
        self.lo, self.hi = quant(cx - rx), quant(cx + rx)
        rx = torch.maximum(w, torch.minimum(maxw[lvl + 1], w * ratio)) * (reach * grow) + eps
        self.up_lo, self.up_hi = quant(cx - rx), quant(cx + rx)
        self.ids = ids
        self.home_keys, self.home_gp = torch.sort((self.row << xbits) | qx, stable=True)
        self.up_keys, self.up_gp = torch.sort((self.up_row << xbits) | qx, stable=True)


class _View:
    """The boxes of a grid-space mask in one of the grid's sort orders, with their IoU inputs in that order."""

    def __init__(self, grid: _Grid, cols: list[Tensor], mask: Tensor | None, *, up: bool = False) -> None:
        keys, gp = (grid.up_keys, grid.up_gp) if up else (grid.home_keys, grid.home_gp)
        if mask is not None:
            sel = mask.index_select(0, gp).nonzero().squeeze(1)
            keys, gp = keys.index_select(0, sel), gp.index_select(0, sel)
        self.keys, self.gp = keys, gp
        self.cols = [c.index_select(0, gp) for c in cols]  # x1, y1, x2, y2, area

    def ranges(self, grid: _Grid, gp: Tensor, *, up: bool, drows: tuple[int, ...]) -> tuple[Tensor, Tensor]:
        """``[lo, hi)`` positions in this view of the x-ranges of boxes ``gp`` in rows ``row + d``.

        Flattened ``[len(drows), len(gp)]``.  ``up`` takes the boxes' next-level rows and reaches.
        """
        row = (grid.up_row if up else grid.row).index_select(0, gp)
        xlo = (grid.up_lo if up else grid.lo).index_select(0, gp)
        xhi = (grid.up_hi if up else grid.hi).index_select(0, gp)
        r = torch.stack([(row + d) << grid.xbits for d in drows])
        lo = torch.searchsorted(self.keys, (r | xlo).reshape(-1))
        hi = torch.searchsorted(self.keys, (r | xhi).reshape(-1) + 1)
        return lo, hi


def _iou_hits(
    qcols: list[Tensor],
    tcols: list[Tensor],
    lo: Tensor,
    hi: Tensor,
    thr: float,
    *,
    max_pairs: int = _MAX_PAIRS_PER_BATCH,
) -> tuple[Tensor, Tensor]:
    """Pairs (query q, target position p) with ``lo[q] <= p < hi[q]`` and IoU > thr.

    ``qcols`` holds (x1, y1, x2, y2, area) of the box of each query (indexed by ``q modulo its length``), ``tcols``
    those of the targets.  Pairs are generated in batches of at most ``max_pairs`` to bound memory.
    """
    cnt = (hi - lo).clamp_(min=0)
    nz = (cnt > 0).nonzero().squeeze(1)
    empty = lo.new_empty(0)
    if nz.numel() == 0:
        return empty, empty
    qbox = nz % qcols[0].numel()  # the box of each (non-empty) query
    cnt, lo = cnt.index_select(0, nz), lo.index_select(0, nz)
    ends = cnt.cumsum(0)
    nq = nz.numel()
    out_q, out_p = [], []
    q0, done = 0, 0
    while q0 < nq:
        q1 = int(torch.searchsorted(ends, done + max_pairs, right=True))
        q1 = min(max(q1, q0 + 1), nq)
        c = cnt[q0:q1]
        qi = torch.repeat_interleave(torch.arange(q0, q1, device=lo.device), c)
        start = torch.repeat_interleave(lo[q0:q1] - (ends[q0:q1] - c - done), c)
        p = torch.arange(qi.numel(), device=lo.device).add_(start)
        qb = qbox.index_select(0, qi)
        a = [v.index_select(0, qb) for v in qcols]
        b = [v.index_select(0, p) for v in tcols]
        w = torch.minimum(a[2], b[2]).sub_(torch.maximum(a[0], b[0])).clamp_(min=0)
        h = torch.minimum(a[3], b[3]).sub_(torch.maximum(a[1], b[1])).clamp_(min=0)
        inter = w.mul_(h)
        hit = ((inter / ((a[4] + b[4]) - inter)) > thr).nonzero().squeeze(1)
        out_q.append(nz.index_select(0, qi.index_select(0, hit)))
        out_p.append(p.index_select(0, hit))
        done = int(ends[q1 - 1])
        q0 = q1
    return torch.cat(out_q), torch.cat(out_p)


def _within_ranges(grid: _Grid, view: _View, sel: Tensor | None = None) -> tuple[Tensor, Tensor]:
    """Candidate ranges (5 per box) of the boxes at positions ``sel`` (all when None) of a home-order view.

    Half-neighbourhood: own row right of self (a same-row pair is found by its left box), the row above, and three
    rows of the next level, so every unordered candidate pair is generated exactly once.
    """
    pos = torch.arange(view.keys.numel(), device=view.keys.device) if sel is None else sel
    gp = view.gp.index_select(0, pos)
    own = (grid.row.index_select(0, gp) << grid.xbits) | grid.hi.index_select(0, gp)
    lo1, hi1 = view.ranges(grid, gp, up=False, drows=(1,))
    lo2, hi2 = view.ranges(grid, gp, up=True, drows=(-1, 0, 1))
    return torch.cat([pos + 1, lo1, lo2]), torch.cat([torch.searchsorted(view.keys, own + 1), hi1, hi2])


def _edges_within(grid: _Grid, cols: list[Tensor], chunk: Tensor, mask: Tensor) -> tuple[Tensor, Tensor]:
    """All pairs (i, j), i < j, of the grid positions ``chunk`` (ascending, = ``mask``) with IoU > thr.

    Returned as positions in ``chunk``.
    """
    view = _View(grid, cols, mask)
    lo, hi = _within_ranges(grid, view)
    q, p = _iou_hits(view.cols, view.cols, lo, hi, grid.thr)
    a = torch.searchsorted(chunk, view.gp.index_select(0, q % view.gp.numel()))
    b = torch.searchsorted(chunk, view.gp.index_select(0, p))
    return torch.minimum(a, b), torch.maximum(a, b)


def _candidates_per_box(grid: _Grid, cols: list[Tensor], samples: int = 1024) -> float:
    """Estimated mean number of candidate partners per box (from an evenly spaced sample)."""
    view = _View(grid, cols, None)
    n = view.keys.numel()
    sel = torch.arange(0, n, max(1, n // samples), device=view.keys.device)
    lo, hi = _within_ranges(grid, view, sel)
    return float((hi - lo).clamp_(min=0).sum()) / sel.numel()


def _suppressed_by(grid: _Grid, cols: list[Tensor], kept: Tensor, rest: Tensor) -> Tensor:
    """Grid-space mask of the boxes of ``rest`` (a mask) suppressed by a box of ``kept`` (grid positions).

    Every kept box precedes every rest box of its segment.  The kept boxes (few) issue all the queries: their own
    level and the next one in home order, the previous level in up order.
    """
    kcols = [c.index_select(0, kept) for c in cols]
    home = _View(grid, cols, rest)
    lo_a, hi_a = home.ranges(grid, kept, up=False, drows=(-1, 0, 1))
    lo_b, hi_b = home.ranges(grid, kept, up=True, drows=(-1, 0, 1))
    _, p = _iou_hits(kcols, home.cols, torch.cat([lo_a, lo_b]), torch.cat([hi_a, hi_b]), grid.thr)
    up = _View(grid, cols, rest, up=True)
    lo_c, hi_c = up.ranges(grid, kept, up=False, drows=(-1, 0, 1))
    _, p_down = _iou_hits(kcols, up.cols, lo_c, hi_c, grid.thr)
    out = torch.zeros_like(rest)
    out[home.gp.index_select(0, p)] = True
    out[up.gp.index_select(0, p_down)] = True
    return out


def _resolve_chunk(
    chunk: Tensor, src: Tensor, dst: Tensor, boxes: Tensor, seg: Tensor | None, iou_threshold: float
) -> Tensor:
    """Greedy NMS inside ``chunk`` (ascending box ids or grid positions) given its IoU graph.

    ``src < dst`` are positions in ``chunk``.  Returns the positions in ``chunk`` of the kept boxes (ascending).
    ``boxes`` / ``seg`` are indexed by ``chunk`` for the rare fallback.
    """
    n = chunk.numel()
    if src.numel() == 0:
        return torch.arange(n, device=chunk.device)
    s, d = src, dst
    undecided = torch.ones(n, dtype=torch.bool, device=chunk.device)
    kept = torch.zeros(n, dtype=torch.bool, device=chunk.device)
    for _ in range(_MAX_ROUNDS):
        # every remaining edge joins two undecided boxes; a box without one has only suppressed predecessors
        fresh = undecided & (torch.bincount(d, minlength=n) == 0)
        kept |= fresh
        undecided &= ~fresh
        undecided[d.index_select(0, fresh.index_select(0, s).nonzero().squeeze(1))] = False
        live = (undecided.index_select(0, s) & undecided.index_select(0, d)).nonzero().squeeze(1)
        s, d = s.index_select(0, live), d.index_select(0, live)
        if s.numel() == 0:
            kept |= undecided
            undecided.zero_()
            break
    if bool(undecided.any()):
        # Long suppression chain: the undecided boxes only have suppressed or undecided predecessors, so greedy NMS
        # restricted to them (in priority order) is exactly what remains to be done.
        left = undecided.nonzero().squeeze(1)
        rest = chunk.index_select(0, left)
        sub = _keep_by_torchvision(boxes[rest], None if seg is None else seg[rest], iou_threshold)
        kept[left[sub]] = True
    return kept.nonzero().squeeze(1)


def _rank_in_segment(seg: Tensor | None, ids: Tensor) -> Tensor:
    pos = torch.arange(ids.numel(), device=ids.device)
    if seg is None:
        return pos
    s = seg.index_select(0, ids)
    first = torch.ones_like(s, dtype=torch.bool)
    first[1:] = s[1:] != s[:-1]
    start = torch.where(first, pos, torch.zeros_like(pos)).cummax(0).values
    return pos - start


def keep_sorted(boxes: Tensor, seg: Tensor | None, iou_threshold: float) -> Tensor:
    """Greedy NMS keep-mask for boxes sorted by priority within each segment.

    Args:
        boxes: ``[M, 4]`` float32 or float64 ``(x1, y1, x2, y2)``, validated (``x1 <= x2``, ``y1 <= y2``, no NaN).
        seg: ``[M]`` int64, non-decreasing segment ids, or ``None`` for a single segment.  Inside a segment the
            boxes are ordered by decreasing priority (score, then lower original index).
        iou_threshold: suppress when IoU is strictly greater than this.

    Returns:
        ``[M]`` bool: ``True`` for kept boxes.  Equals torchvision's CPU ``nms`` applied to every segment.
    """
    m = boxes.shape[0]
    device = boxes.device
    if m == 0 or iou_threshold >= 1.0:
        # float IoU never exceeds 1: fl(a + b) >= 2 * min(a, b) >= 2 * inter, so union >= inter.
        return torch.ones(m, dtype=torch.bool, device=device)
    if iou_threshold < 0.0 or (seg is None and m <= _SMALL_SEGMENT):
        return _keep_by_torchvision(boxes, seg, iou_threshold)
    if seg is not None:
        # A few small segments: torchvision's loop per segment is cheaper than the sparse machinery's fixed cost.
        # Many small segments: decide them all at once with the sparse path (vectorised across segments).
        bounds = _segment_bounds(seg, m)
        small = [(a, b) for a, b in bounds if b - a <= _SMALL_SEGMENT]
        if len(small) <= _MAX_LOOPED_SEGMENTS:
            keep = torch.zeros(m, dtype=torch.bool, device=device)
            for a, b in small:
                keep[a + _tv_nms_prioritised(boxes[a:b], iou_threshold)] = True
            if len(small) < len(bounds):
                large = torch.ones(m, dtype=torch.bool, device=device)
                for a, b in small:
                    large[a:b] = False
                idx = large.nonzero().squeeze(1)
                keep[idx] = _keep_sparse(boxes.index_select(0, idx), seg.index_select(0, idx), iou_threshold)
            return keep
    return _keep_sparse(boxes, seg, iou_threshold)


def _keep_sparse(boxes: Tensor, seg: Tensor | None, iou_threshold: float) -> Tensor:
    """:func:`keep_sorted` through the sparse candidate graph (``0 <= iou_threshold < 1``)."""
    m = boxes.shape[0]
    device = boxes.device
    x1, y1, x2, y2 = boxes.unbind(1)
    area = (x2 - x1) * (y2 - y1)
    eligible = (x2 > x1) & (y2 > y1)
    lo, hi = _SAFE_AREA[boxes.dtype]
    ea = area[eligible]
    if not bool(((ea >= lo) & (ea <= hi)).all()) or not bool(torch.isfinite(boxes).all()):
        return _keep_by_torchvision(boxes, seg, iou_threshold)
    keep = torch.ones(m, dtype=torch.bool, device=device)
    if not bool(eligible.any()):
        return keep
    grid = _Grid(boxes, seg, eligible, iou_threshold)
    grid.thr = threshold_for_dtype(iou_threshold, boxes.dtype)
    ids = grid.ids  # grid position -> box id
    cols = [c.index_select(0, ids) for c in (x1, y1, x2, y2, area)]
    n = ids.numel()
    gseg = None if seg is None else seg.index_select(0, ids)
    gboxes = boxes.index_select(0, ids)
    if _candidates_per_box(grid, cols) <= _FLAT_MAX_CANDIDATES:
        # sparse scene: one candidate graph for all boxes is cheaper than deciding them chunk by chunk
        everything = torch.arange(n, device=device)
        src, dst = _edges_within(grid, cols, everything, torch.ones(n, dtype=torch.bool, device=device))
        gkeep = torch.zeros(n, dtype=torch.bool, device=device)
        gkeep[_resolve_chunk(everything, src, dst, gboxes, gseg, iou_threshold)] = True
        keep[ids] = gkeep
        return keep
    gkeep = torch.ones(n, dtype=torch.bool, device=device)
    undecided = torch.arange(n, device=device)
    width = _FIRST_CHUNK
    while undecided.numel():
        in_chunk = _rank_in_segment(gseg, undecided) < width
        chunk, rest = undecided[in_chunk], undecided[~in_chunk]
        chunk_mask = torch.zeros(n, dtype=torch.bool, device=device)
        chunk_mask[chunk] = True
        src, dst = _edges_within(grid, cols, chunk, chunk_mask)
        kept = chunk.index_select(0, _resolve_chunk(chunk, src, dst, gboxes, gseg, iou_threshold))
        gkeep[chunk] = False
        gkeep[kept] = True
        if rest.numel() and kept.numel():
            rest_mask = torch.zeros(n, dtype=torch.bool, device=device)
            rest_mask[rest] = True
            sup = _suppressed_by(grid, cols, kept, rest_mask)
            gkeep &= ~sup
            rest = rest[~sup.index_select(0, rest)]
        undecided = rest
        width *= _CHUNK_GROWTH
    keep[ids] = gkeep
    return keep
