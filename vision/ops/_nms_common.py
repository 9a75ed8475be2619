"""Backend-independent NMS machinery: ordering keys, the sync-free multiclass pipeline, the Triton custom op.

Nothing here imports triton; the kernel module is imported only inside the custom op's implementation.
"""

from __future__ import annotations

from collections.abc import Callable

import torch
from torch import Tensor

from vision.ops._nms_reference import keep_sorted, threshold_for_dtype

__all__ = [
    "INT64_MIN",
    "above",
    "multiclass_reference",
    "multiclass_sync_free",
    "order_key",
    "sanitize_boxes",
    "triton_keep_sorted",
]

INT64_MIN = -(2**63)
_LOW32 = 2**32 - 1


# ---------------------------------------------------------------------------------------------------------------------
# Triton kernel as a custom op: opaque to torch.compile (with a shape-only fake), capturable in CUDA graphs
# ---------------------------------------------------------------------------------------------------------------------


@torch.library.custom_op("vision_zoo::nms_keep_sorted", mutates_args=())
def _nms_keep_sorted_op(boxes: Tensor, seg_start: Tensor, nseg: Tensor, limit: int, thr: float) -> Tensor:
    from vision.ops._nms_triton import keep_sorted_triton

    return keep_sorted_triton(boxes, seg_start, nseg, limit=limit, thr=thr)


@_nms_keep_sorted_op.register_fake
def _(boxes: Tensor, seg_start: Tensor, nseg: Tensor, limit: int, thr: float) -> Tensor:
    return boxes.new_empty(boxes.shape[0], dtype=torch.bool)


def triton_keep_sorted(boxes: Tensor, seg_start: Tensor, nseg: Tensor, *, limit: int, iou_threshold: float) -> Tensor:
    """Keep flags from the Triton kernel (compiled on CUDA, interpreted on the CPU)."""
    thr = threshold_for_dtype(iou_threshold, torch.float32)
    return _nms_keep_sorted_op(boxes.float().contiguous(), seg_start, nseg, int(limit), thr)


# ---------------------------------------------------------------------------------------------------------------------
# keys and box sanitising
# ---------------------------------------------------------------------------------------------------------------------


def order_key(scores: Tensor) -> Tensor:
    """int64 key with the order of float32 ``scores`` (-0.0 == 0.0); NaN entries give garbage, mask them."""
    s = scores.float() + 0.0  # -0.0 + 0.0 == +0.0: equal scores get equal keys
    bits = s.view(torch.int32)
    return torch.where(bits < 0, bits ^ 0x7FFFFFFF, bits).long()


def above(scores: Tensor, threshold: float) -> Tensor:
    """``scores > threshold`` compared exactly (as real numbers; NaN never passes), whatever the float dtype.

    ``tensor > python_float`` would round the threshold to the tensor's dtype first (to nearest), which can flip
    scores equal to the rounded value; float16 / bfloat16 / float32 scores are compared as float32 against the
    threshold rounded towards -inf instead.
    """
    if scores.dtype == torch.float64:
        return scores > threshold
    return scores.float() > threshold_for_dtype(threshold, torch.float32)


def sanitize_boxes(boxes: Tensor) -> Tensor:
    """What the sync-free path feeds to NMS: ``x1 > x2`` (or ``y1 > y2``) collapses to zero width (height) at x1
    (y1); a box with a NaN coordinate becomes the empty box (0, 0, 0, 0).  Zero-area boxes never suppress nor get
    suppressed (thresholds >= 0), so such boxes are simply kept on their own score."""
    x1, y1, x2, y2 = boxes.unbind(-1)
    out = torch.stack([x1, y1, torch.maximum(x1, x2), torch.maximum(y1, y2)], -1)
    return torch.where(torch.isnan(boxes).any(-1, keepdim=True), torch.zeros_like(out), out)


def _gather_boxes(boxes: Tensor, b: Tensor, n: Tensor, c: Tensor) -> Tensor:
    return boxes[b, n] if boxes.dim() == 3 else boxes[b, n, c]


def _compute_dtype(boxes: Tensor) -> torch.dtype:
    return torch.float64 if boxes.dtype == torch.float64 else torch.float32


# ---------------------------------------------------------------------------------------------------------------------
# multiclass: sync-free (fixed shapes, any device; the Triton backend)
# ---------------------------------------------------------------------------------------------------------------------


def multiclass_sync_free(
    boxes: Tensor,
    scores: Tensor,
    *,
    score_threshold: float,
    iou_threshold: float,
    max_det: int,
    pre_nms_topk: int | None,
    keep_fn: Callable[..., Tensor],
) -> tuple[Tensor, Tensor, Tensor, Tensor, Tensor]:
    """Padded per-image NMS with fixed-size tensors only (no ``nonzero``, no ``.item()``, no boolean indexing).

    ``keep_fn(boxes_sorted, seg_start, nseg, limit=..., iou_threshold=...)`` returns the keep flags of boxes sorted
    by (segment, priority).  Returns ``(boxes, scores, labels, counts, indices)``.
    """
    B, N, C = scores.shape
    dev = scores.device
    nc = N * C
    flat = scores.detach().reshape(B, nc)
    valid = above(flat, score_threshold)
    okey = order_key(flat)
    f_all = torch.arange(nc, device=dev)
    # unique priority: higher score first, then lower flat index f = n * C + c
    prio = torch.where(valid, okey * 2**32 + (_LOW32 - f_all), torch.full_like(okey, INT64_MIN))
    if pre_nms_topk is not None and pre_nms_topk < nc:
        k = pre_nms_topk
        prio, f = prio.topk(k, dim=1)  # per image, in priority order
        valid = prio != INT64_MIN
        okey = okey.gather(1, f)
    else:
        k = nc
        f = f_all.expand(B, nc)
    img = torch.arange(B, device=dev).unsqueeze(1)
    nseg = B * C
    seg = torch.where(valid, img * C + f % C, torch.full_like(f, nseg))
    sort_key = seg * 2**32 + ((2**31 - 1) - okey)  # (segment, decreasing score); stable sort keeps f order on ties
    sorted_key, perm = torch.sort(sort_key.reshape(-1), stable=True)
    fs = f.reshape(-1).index_select(0, perm)
    cand = _gather_boxes(boxes.detach(), perm // k, fs // C, fs % C).to(_compute_dtype(boxes))
    seg_start = torch.searchsorted(sorted_key >> 32, torch.arange(nseg + 1, device=dev), out_int32=True)
    nseg_t = torch.full((1,), nseg, dtype=torch.int32, device=dev)
    keep = keep_fn(sanitize_boxes(cand), seg_start, nseg_t, limit=max_det, iou_threshold=iou_threshold)
    kept_slot = torch.zeros(B * k, dtype=torch.bool, device=dev).scatter_(0, perm, keep).view(B, k)
    final = torch.where(kept_slot, prio, torch.full_like(prio, INT64_MIN))
    k_out = min(max_det, k)
    top, pos = final.topk(k_out, dim=1)
    return _pack(boxes, scores, top != INT64_MIN, f.gather(1, pos), max_det)


def _pack(
    boxes: Tensor, scores: Tensor, sel: Tensor, f: Tensor, max_det: int
) -> tuple[Tensor, Tensor, Tensor, Tensor, Tensor]:
    """Padded outputs from the selected flat indices ``f`` ``[B, k]`` (``sel`` marks real rows, in order)."""
    B, _, C = scores.shape
    img = torch.arange(B, device=scores.device).unsqueeze(1)
    n, c = f // C, f % C
    out_boxes = torch.where(sel.unsqueeze(-1), _gather_boxes(boxes, img, n, c), torch.zeros((), dtype=boxes.dtype))
    out_scores = torch.where(sel, scores[img, n, c], torch.zeros((), dtype=scores.dtype))
    labels = torch.where(sel, c, -1)
    indices = torch.where(sel, n, -1)
    pad = max_det - f.shape[1]
    if pad:
        out_boxes = torch.nn.functional.pad(out_boxes, (0, 0, 0, pad))
        out_scores = torch.nn.functional.pad(out_scores, (0, pad))
        labels = torch.nn.functional.pad(labels, (0, pad), value=-1)
        indices = torch.nn.functional.pad(indices, (0, pad), value=-1)
    return out_boxes, out_scores, labels, sel.sum(1), indices


# ---------------------------------------------------------------------------------------------------------------------
# multiclass: reference (compacts the candidates first; data-dependent shapes, any float dtype)
# ---------------------------------------------------------------------------------------------------------------------


def multiclass_reference(
    boxes: Tensor,
    scores: Tensor,
    *,
    score_threshold: float,
    iou_threshold: float,
    max_det: int,
    pre_nms_topk: int | None,
) -> tuple[Tensor, Tensor, Tensor, Tensor, Tensor]:
    """Same contract and ordering as :func:`multiclass_sync_free`, but only the candidates above the threshold are
    materialised (fast on the CPU; synchronises on CUDA)."""
    B, N, C = scores.shape
    dev = scores.device
    nc = N * C
    flat = scores.detach().reshape(B, nc)
    valid = above(flat, score_threshold)
    if pre_nms_topk is not None and pre_nms_topk < nc and int(valid.sum(1).max()) > pre_nms_topk:
        # the top-k candidates of each image, ties at the k-th score broken by lower f (a partial selection with
        # topk, not a full sort: ~8x faster on the CPU for YOLO's 8400 x 80 scores); candidates stay in f order,
        # which the stable score sorts below turn into the same priority order as sorting by (score, -f)
        masked = torch.where(valid, flat, torch.full((), float("-inf"), dtype=flat.dtype, device=dev))
        kth = masked.topk(pre_nms_topk, dim=1, sorted=False).values.amin(1, keepdim=True)
        above_kth = masked > kth
        at_kth = (masked == kth) & valid
        need = pre_nms_topk - above_kth.sum(1, keepdim=True)
        bi, f = ((above_kth | (at_kth & (at_kth.cumsum(1) <= need))) & valid).nonzero(as_tuple=True)
    else:
        bi, f = valid.nonzero(as_tuple=True)  # per image in increasing f
    sc = flat[bi, f]
    cand_boxes = sanitize_boxes(_gather_boxes(boxes.detach(), bi, f // C, f % C).to(_compute_dtype(boxes)))
    seg = bi * C + f % C
    order = torch.sort(sc, descending=True, stable=True).indices
    order = order[torch.sort(seg[order], stable=True).indices]
    keep = keep_sorted(cand_boxes[order], seg[order], iou_threshold)
    kept = order[keep].sort().values  # back to candidate order: per image by f (or by priority after top-k)
    kept = kept[torch.sort(sc[kept], descending=True, stable=True).indices]
    kept = kept[torch.sort(bi[kept], stable=True).indices]  # per image: decreasing score, then increasing f
    kb = bi[kept]
    per_image = torch.bincount(kb, minlength=B)
    rank = torch.arange(kept.numel(), device=dev) - (per_image.cumsum(0) - per_image)[kb]
    take = rank < max_det
    kept, kb, rank = kept[take], kb[take], rank[take]
    sel = torch.zeros(B, max_det, dtype=torch.bool, device=dev)
    sel[kb, rank] = True
    fsel = torch.zeros(B, max_det, dtype=torch.int64, device=dev)
    fsel[kb, rank] = f[kept]
    return _pack(boxes, scores, sel, fsel, max_det)
