"""Non-maximum suppression: exact, batched, and sync-free on the GPU.

Three entry points, all returning exactly the boxes torchvision's CPU :func:`torchvision.ops.nms` keeps when applied
to every (image, class) group separately:

* :func:`nms` — one group; drop-in for ``torchvision.ops.nms``.
* :func:`batched_nms` — many groups in one call (``idxs`` names the group of each box); optional ``max_det``.
* :func:`multiclass_nms` — the padded form detector heads need: ``[B, N, C]`` scores, fixed-size outputs and no host
  synchronisation, so the whole post-processing can be captured in a CUDA graph or ``torch.compile``-d.

Backends (``backend=``): ``"auto"`` runs the Triton kernel on CUDA tensors (when triton is installed) and the
reference path elsewhere; ``"triton"`` forces the kernel — on CPU tensors it runs under Triton's interpreter, which
is slow and meant for testing; ``"reference"`` forces the exact vectorised-torch path (any device; synchronises).

Semantics (all backends)
------------------------
* Boxes are ``(x1, y1, x2, y2)`` in absolute coordinates, no ``+1`` in widths.  IoU is torchvision's CPU formula
  ``inter / ((area_i + area_j) - inter)`` computed in float32 for float16 / bfloat16 / float32 boxes (inputs are
  converted exactly) and in float64 for float64 boxes.
* Greedy in order of decreasing score; a box is suppressed when its IoU with an already *kept* box is strictly
  greater than ``iou_threshold``.  Equal scores are visited in increasing index order (stable), so ties keep the
  lower index.
* ``0 / 0`` IoU (two zero-area boxes) is NaN, which never exceeds the threshold: for thresholds >= 0 a zero-area box
  never suppresses and is never suppressed.  Thresholds >= 1 suppress nothing; negative thresholds suppress every
  later box whose IoU is a number (as in torchvision).
* NaN scores: the box is dropped — never kept and never suppresses anything.  (torchvision sorts NaN as the *largest*
  score, so its NaN-scored boxes are kept first and suppress real detections.)
* Invalid boxes: the eager :func:`nms` / :func:`batched_nms` raise :class:`ValueError` naming the first box with
  ``x1 > x2``, ``y1 > y2`` or a NaN coordinate.  :func:`multiclass_nms` cannot raise without a host sync, so there
  an inverted box is collapsed to zero width / height at ``x1`` / ``y1`` and a box with a NaN coordinate to the empty
  box for the purpose of suppression (both then never suppress and are never suppressed); the returned box is the
  input box, unchanged.
* Empty inputs return empty results (zero counts).  More than 400k boxes per call are fine on every path.

Where torchvision's own CPU and CUDA builds disagree, the CPU build is followed:

1. *Threshold precision.*  The CPU kernel compares the float32 IoU with the threshold as a float64 (``ovr >
   iou_threshold`` with ``double iou_threshold``); the CUDA kernel passes it to ``devIoU(..., const float
   threshold)``, i.e. rounded to the nearest float32.  They differ when the threshold is not representable, rounds
   *up*, and an IoU equals that float32 exactly (e.g. ``0.6`` -> ``0.6000000238``: CPU suppresses at IoU
   0.6000000238, CUDA does not).  We compare against the threshold rounded towards -inf, which is the CPU rule.
2. *Contraction.*  ``devIoU`` is compiled by nvcc with its default ``--fmad=true``, so ``Sa + Sb - interS`` may be
   fused into FMAs and round differently in the last bit; the x86-64 CPU build (baseline ISA, no FMA) cannot (an
   aarch64 build compiled with GCC's default ``-ffp-contract=fast`` could).  Our Triton kernel disables FP fusion
   (``enable_fp_fusion=False``) and uses IEEE division (``div_rn``); the reference path uses one torch op per step.
3. *Half precision.*  The CUDA build accepts float16 and computes widths and heights in float16 before widening;
   the CPU build rejects float16 and bfloat16 (bfloat16 is rejected by both).  We widen the coordinates to float32
   first (exact) and compute everything in float32.
4. *Size.*  The CUDA build allocates an ``N x ceil(N / 64)`` int64 mask indexed with 32-bit ``int``: above ~370k
   boxes per call the index overflows (and 400k boxes would need 20 GB).  Our kernel needs O(N) memory.
5. *Score ties.*  Current torchvision sorts with ``stable=True`` on both devices (lower index first, as here).
   Older releases called ``scores.sort(0, descending=True)`` without it; PyTorch's default sort is not stable (on the
   CPU, equal scores already come out of order for ~100 elements), so which of two tied, overlapping boxes survived
   depended on the device, the input size and the version.

The CPU reference path hands small groups to torchvision's own kernel and decides large or many groups with a sparse,
vectorised candidate graph (see :mod:`vision.ops._nms_reference`); the Triton kernel and its memory bound are
described in :mod:`vision.ops._nms_triton`.

Example:
    >>> boxes = torch.tensor([[0.0, 0.0, 10.0, 10.0], [1.0, 1.0, 11.0, 11.0], [20.0, 20.0, 30.0, 30.0]])
    >>> scores = torch.tensor([0.9, 0.8, 0.7])
    >>> nms(boxes, scores, 0.5)
    tensor([0, 2])
"""

from __future__ import annotations

import importlib.util
import math
from typing import Literal

import torch
from torch import Tensor

from vision.ops import _nms_reference
from vision.ops._nms_common import (
    multiclass_reference,
    multiclass_sync_free,
    triton_keep_sorted,
)

__all__ = ["batched_nms", "multiclass_nms", "nms"]

Backend = Literal["auto", "triton", "reference"]
_BACKENDS = ("auto", "triton", "reference")
_HALF = (torch.float16, torch.bfloat16)


# ---------------------------------------------------------------------------------------------------------------------
# validation
# ---------------------------------------------------------------------------------------------------------------------


def _check_tensor(x: object, name: str) -> Tensor:
    if not isinstance(x, Tensor):
        raise TypeError(f"{name} must be a torch.Tensor, got {type(x).__name__}")
    return x


def _check_float(x: Tensor, name: str) -> None:
    if not x.is_floating_point():
        raise TypeError(
            f"{name} must be a floating-point tensor (float16, bfloat16, float32 or float64), got {x.dtype}"
        )


def _as_number(x: object, name: str, *, allow_nan: bool = False) -> float:
    if isinstance(x, Tensor):
        if x.numel() != 1:
            raise ValueError(f"{name} must be a number, got a tensor of shape {list(x.shape)}")
        x = x.item()
    if isinstance(x, bool) or not isinstance(x, (int, float)):
        raise TypeError(f"{name} must be a float, got {type(x).__name__}")
    x = float(x)
    if math.isnan(x) and not allow_nan:
        raise ValueError(f"{name} must not be NaN")
    return x


def _as_count(x: object, name: str, *, minimum: int = 0) -> int:
    if isinstance(x, bool) or not isinstance(x, int):
        raise TypeError(f"{name} must be an int, got {type(x).__name__}")
    if x < minimum:
        raise ValueError(f"{name} must be >= {minimum}, got {x}")
    return x


def _check_same_device(**tensors: Tensor) -> None:
    devices = {name: t.device for name, t in tensors.items()}
    if len(set(devices.values())) > 1:
        listed = ", ".join(f"{name} on {dev}" for name, dev in devices.items())
        raise ValueError(f"all inputs must be on the same device, got {listed}")


def _check_flat_inputs(boxes: object, scores: object, idxs: object | None) -> tuple[Tensor, Tensor, Tensor | None]:
    boxes = _check_tensor(boxes, "boxes")
    scores = _check_tensor(scores, "scores")
    if boxes.dim() != 2 or boxes.shape[1] != 4:
        raise ValueError(f"boxes must have shape [N, 4] as (x1, y1, x2, y2), got {list(boxes.shape)}")
    _check_float(boxes, "boxes")
    n = boxes.shape[0]
    if scores.dim() != 1 or scores.shape[0] != n:
        raise ValueError(f"scores must have shape [N] = [{n}] (one score per box), got {list(scores.shape)}")
    _check_float(scores, "scores")
    if idxs is not None:
        idxs = _check_tensor(idxs, "idxs")
        if idxs.dim() != 1 or idxs.shape[0] != n:
            raise ValueError(f"idxs must have shape [N] = [{n}] (one group id per box), got {list(idxs.shape)}")
        if idxs.is_floating_point() or idxs.is_complex() or idxs.dtype == torch.bool:
            raise TypeError(f"idxs must be an integer tensor, got {idxs.dtype}")
        _check_same_device(boxes=boxes, scores=scores, idxs=idxs)
    else:
        _check_same_device(boxes=boxes, scores=scores)
    return boxes, scores, idxs


def _check_box_values(boxes: Tensor) -> None:
    """Raise ValueError naming the first box with x1 > x2, y1 > y2 or a NaN coordinate (synchronises)."""
    x1, y1, x2, y2 = boxes.unbind(1)
    bad = ~((x2 >= x1) & (y2 >= y1))  # also true for NaN
    if not bool(bad.any()):
        return
    i = int(bad.nonzero()[0, 0])
    b = [float(v) for v in boxes[i].tolist()]
    if any(math.isnan(v) for v in b):
        why = "has a NaN coordinate"
    elif b[0] > b[2]:
        why = "has x1 > x2"
    else:
        why = "has y1 > y2"
    raise ValueError(
        f"boxes[{i}] = ({b[0]:g}, {b[1]:g}, {b[2]:g}, {b[3]:g}) {why}; boxes must be (x1, y1, x2, y2) with "
        "x1 <= x2 and y1 <= y2 (convert (x, y, w, h) or (cx, cy, w, h) boxes first)"
    )


_TRITON_FOUND: bool | None = None


def _triton_available() -> bool:
    """Whether triton can be imported (checked once, without importing it)."""
    global _TRITON_FOUND
    if _TRITON_FOUND is None:
        try:
            _TRITON_FOUND = importlib.util.find_spec("triton") is not None
        except (ImportError, ValueError):  # e.g. sys.modules["triton"] = None
            _TRITON_FOUND = False
    return _TRITON_FOUND


def _resolve_backend(backend: object, device: torch.device, *dtypes: torch.dtype) -> str:
    if backend not in _BACKENDS:
        raise ValueError(f"backend must be one of {_BACKENDS}, got {backend!r}")
    has_f64 = torch.float64 in dtypes
    if backend == "auto":
        return "triton" if device.type == "cuda" and not has_f64 and _triton_available() else "reference"
    if backend == "triton":
        if not _triton_available():
            raise RuntimeError("backend='triton' needs the triton package (pip install triton)")
        if has_f64:
            raise TypeError(
                "backend='triton' computes in float32 and cannot honour float64 inputs exactly; "
                "use backend='reference' (or 'auto', which does) or convert the inputs to float32"
            )
    return str(backend)


def _compute_dtype(boxes: Tensor) -> torch.dtype:
    return torch.float64 if boxes.dtype == torch.float64 else torch.float32


# ---------------------------------------------------------------------------------------------------------------------
# eager API
# ---------------------------------------------------------------------------------------------------------------------


def nms(boxes: Tensor, scores: Tensor, iou_threshold: float, *, backend: Backend = "auto") -> Tensor:
    """Greedy non-maximum suppression of one group of boxes (drop-in for ``torchvision.ops.nms``).

    Args:
        boxes: ``[N, 4]`` float16 / bfloat16 / float32 / float64 ``(x1, y1, x2, y2)`` boxes, ``x1 <= x2`` and
            ``y1 <= y2`` (``ValueError`` otherwise, naming the box).
        scores: ``[N]`` float scores, same device.  NaN scores are dropped.
        iou_threshold: suppress boxes whose IoU with a kept, higher-scoring box is strictly greater than this.
        backend: ``"auto"`` | ``"triton"`` | ``"reference"`` (see the module docstring).

    Returns:
        ``[K]`` int64 indices of the kept boxes, by decreasing score (ties: lower index first) — the same tensor
        ``torchvision.ops.nms`` returns.

    Example:
        >>> boxes = torch.tensor([[0.0, 0.0, 10.0, 10.0], [0.0, 0.0, 10.0, 9.0], [5.0, 5.0, 15.0, 15.0]])
        >>> nms(boxes, torch.tensor([0.5, 0.9, 0.8]), iou_threshold=0.5)
        tensor([1, 2])
    """
    if (  # the common small CPU call: validated, then straight to torchvision's kernel
        type(boxes) is Tensor
        and type(scores) is Tensor
        and type(iou_threshold) is float
        and (backend == "auto" or backend == "reference")
        and boxes.is_cpu
        and scores.is_cpu
        and boxes.dtype == torch.float32
        and scores.dtype == torch.float32
        and boxes.dim() == 2
        and boxes.shape[1] == 4
        and scores.dim() == 1
        and scores.shape[0] == boxes.shape[0]
        and 0 < boxes.shape[0] <= _nms_reference._SMALL_SEGMENT
        and iou_threshold == iou_threshold  # not NaN
    ):
        boxes, scores = boxes.detach(), scores.detach()
        _check_box_values(boxes)
        op = _nms_reference._TV_NMS or _nms_reference.torchvision_nms_op()
        if op:
            keep = op(boxes, scores, iou_threshold)
            # torchvision visits NaN scores first: a NaN score would be the first kept box
            if not math.isnan(scores[keep[0]]):
                return keep
    boxes, scores, _ = _check_flat_inputs(boxes, scores, None)
    thr = _as_number(iou_threshold, "iou_threshold")
    resolved = _resolve_backend(backend, boxes.device, boxes.dtype, scores.dtype)
    return _eager_nms(boxes, scores, None, thr, None, resolved)


def batched_nms(
    boxes: Tensor,
    scores: Tensor,
    idxs: Tensor,
    iou_threshold: float,
    *,
    max_det: int | None = None,
    backend: Backend = "auto",
) -> Tensor:
    """NMS applied independently to every group of boxes sharing an ``idxs`` value, in one call.

    Args:
        boxes: ``[N, 4]`` float ``(x1, y1, x2, y2)`` boxes (``ValueError`` for ``x1 > x2``, ``y1 > y2`` or NaN).
        scores: ``[N]`` float scores; NaN scores are dropped.
        idxs: ``[N]`` integer group id of every box (e.g. ``image * num_classes + class``); any values.
        iou_threshold: IoU above which a lower-scoring box of the same group is suppressed.
        max_det: keep at most this many boxes overall (the highest-scoring ones); ``None`` for all.
        backend: ``"auto"`` | ``"triton"`` | ``"reference"``.

    Returns:
        ``[K]`` int64 indices of the kept boxes over all groups, by decreasing score (ties: lower index first).

    Example:
        >>> boxes = torch.tensor([[0.0, 0.0, 10.0, 10.0], [1.0, 1.0, 11.0, 11.0], [1.0, 1.0, 11.0, 11.0]])
        >>> batched_nms(boxes, torch.tensor([0.9, 0.8, 0.7]), torch.tensor([0, 0, 1]), 0.5)
        tensor([0, 2])
    """
    boxes, scores, idxs = _check_flat_inputs(boxes, scores, idxs)
    thr = _as_number(iou_threshold, "iou_threshold")
    if max_det is not None:
        max_det = _as_count(max_det, "max_det")
    resolved = _resolve_backend(backend, boxes.device, boxes.dtype, scores.dtype)
    return _eager_nms(boxes, scores, idxs, thr, max_det, resolved)


def _eager_nms(
    boxes: Tensor, scores: Tensor, idxs: Tensor | None, thr: float, max_det: int | None, backend: str
) -> Tensor:
    empty = torch.empty(0, dtype=torch.int64, device=boxes.device)
    if boxes.shape[0] == 0 or max_det == 0:
        return empty
    boxes, scores = boxes.detach(), scores.detach()  # only indices come out
    _check_box_values(boxes)
    if backend == "reference" and idxs is None:
        fast = _small_cpu_nms(boxes, scores, thr)
        if fast is not None:
            return fast
    subset = None
    nan = torch.isnan(scores)
    if bool(nan.any()):
        subset = (~nan).nonzero().squeeze(1)
        if subset.numel() == 0:
            return empty
        boxes, scores = boxes.index_select(0, subset), scores.index_select(0, subset)
        idxs = None if idxs is None else idxs.index_select(0, subset)
    kept = _kept_indices(boxes, scores, idxs, thr, max_det, backend)
    if max_det is not None:
        kept = kept[:max_det]
    return kept if subset is None else subset.index_select(0, kept)


def _small_cpu_nms(boxes: Tensor, scores: Tensor, thr: float) -> Tensor | None:
    """One small group on the CPU: torchvision's kernel directly (same rule, shortest path), or None.

    torchvision sorts NaN scores first, so a NaN score shows up as the first kept box; that case (and inputs whose
    dtypes torchvision cannot take exactly) goes the general way.
    """
    if boxes.device.type != "cpu" or boxes.shape[0] > _nms_reference._SMALL_SEGMENT:
        return None
    if boxes.dtype != scores.dtype or boxes.dtype not in (torch.float32, torch.float64):
        cd = _compute_dtype(boxes)
        if not (scores.dtype in (cd, *_HALF) or cd == torch.float64):
            return None
        boxes, scores = boxes.to(cd), scores.to(cd)
    keep = _nms_reference.tv_nms(boxes, scores, thr)
    if keep.numel() and math.isnan(scores[keep[0]]):
        return None
    return keep


def _kept_indices(
    boxes: Tensor, scores: Tensor, idxs: Tensor | None, thr: float, max_det: int | None, backend: str
) -> Tensor:
    cd = _compute_dtype(boxes)
    n = boxes.shape[0]
    order = torch.sort(scores, descending=True, stable=True).indices
    seg = None
    if idxs is not None:
        order = order.index_select(0, torch.sort(idxs.index_select(0, order), stable=True).indices)
        seg = idxs.index_select(0, order).long()
    sorted_boxes = boxes.index_select(0, order).to(cd)
    if backend == "reference":
        keep = _nms_reference.keep_sorted(sorted_boxes, seg, thr)
    else:
        if seg is None:
            seg_start = torch.tensor([0, n], dtype=torch.int32, device=boxes.device)
            nseg = torch.ones(1, dtype=torch.int32, device=boxes.device)
        else:
            first = torch.ones(n, dtype=torch.bool, device=boxes.device)
            first[1:] = seg[1:] != seg[:-1]
            seg_id = first.cumsum(0) - 1
            seg_start = torch.searchsorted(seg_id, torch.arange(n + 1, device=boxes.device), out_int32=True)
            nseg = (seg_id[-1:] + 1).int()
        keep = triton_keep_sorted(sorted_boxes, seg_start, nseg, limit=max_det or n, iou_threshold=thr)
    kept = order[keep]
    if idxs is not None:  # merge the groups: decreasing score, ties by index
        kept = kept.sort().values
        kept = kept.index_select(0, torch.sort(scores.index_select(0, kept), descending=True, stable=True).indices)
    return kept


# ---------------------------------------------------------------------------------------------------------------------
# padded batch form
# ---------------------------------------------------------------------------------------------------------------------


def multiclass_nms(
    boxes: Tensor,
    scores: Tensor,
    *,
    score_threshold: float,
    iou_threshold: float,
    max_det: int,
    pre_nms_topk: int | None = None,
    return_indices: bool = False,
    backend: Backend = "auto",
) -> tuple[Tensor, ...]:
    """Per-image, per-class NMS with fixed-size padded outputs and no host synchronisation.

    For every image: candidates are the (box, class) pairs with ``score > score_threshold``; optionally only the
    ``pre_nms_topk`` highest-scoring candidates of the image are kept; NMS runs per class; the survivors of all
    classes are merged and the ``max_det`` highest-scoring ones are returned (ties: lower ``n * C + c`` first).

    Args:
        boxes: ``[B, N, 4]`` boxes shared by all classes (YOLO / SSD / RetinaNet style) or ``[B, N, C, 4]``
            class-specific boxes (Faster R-CNN box head), float, ``(x1, y1, x2, y2)``.
        scores: ``[B, N, C]`` float class scores (already sigmoid / softmax, background column removed).
        score_threshold: keep candidates with ``score > score_threshold``, compared exactly (the threshold is not
            rounded to the scores' dtype first); NaN scores never pass.
        iou_threshold: IoU above which a lower-scoring box of the same image and class is suppressed.
        max_det: number of output rows per image.
        pre_nms_topk: per image, only the top-k candidates (after the score threshold) enter NMS; ``None``: all.
        return_indices: also return the index into ``N`` of every kept row (to gather masks, keypoints, ...).
        backend: ``"auto"`` | ``"triton"`` | ``"reference"``; only ``"triton"`` (the default on CUDA) is sync-free
            and CUDA-graph capturable, ``"reference"`` compacts candidates with data-dependent shapes.

    Returns:
        ``(boxes [B, max_det, 4], scores [B, max_det], labels [B, max_det] int64, counts [B] int64)`` plus
        ``indices [B, max_det] int64`` when ``return_indices``.  Rows are sorted by decreasing score; the first
        ``counts[b]`` rows of image ``b`` are detections, the rest padding (boxes 0, scores 0, labels -1,
        indices -1).  Boxes and scores keep their input dtypes.  Invalid boxes are not rejected (that would need a
        sync): see the module docstring for how they are treated.

    Example:
        >>> boxes = torch.tensor([[[0.0, 0.0, 10.0, 10.0], [1.0, 1.0, 11.0, 11.0]]])  # B=1, N=2
        >>> scores = torch.tensor([[[0.9, 0.1], [0.8, 0.7]]])  # C=2
        >>> b, s, labels, counts = multiclass_nms(boxes, scores, score_threshold=0.5, iou_threshold=0.5, max_det=3)
        >>> labels, counts
        (tensor([[ 0,  1, -1]]), tensor([2]))
    """
    boxes = _check_tensor(boxes, "boxes")
    scores = _check_tensor(scores, "scores")
    if scores.dim() != 3:
        raise ValueError(f"scores must have shape [B, N, C] (batch, candidates, classes), got {list(scores.shape)}")
    _check_float(scores, "scores")
    B, N, C = scores.shape
    if not (
        (boxes.dim() == 3 and tuple(boxes.shape) == (B, N, 4))
        or (boxes.dim() == 4 and tuple(boxes.shape) == (B, N, C, 4))
    ):
        raise ValueError(
            f"boxes must have shape [B, N, 4] = [{B}, {N}, 4] or [B, N, C, 4] = [{B}, {N}, {C}, 4] to match scores "
            f"{list(scores.shape)}, got {list(boxes.shape)}"
        )
    _check_float(boxes, "boxes")
    _check_same_device(boxes=boxes, scores=scores)
    score_threshold = _as_number(score_threshold, "score_threshold")
    thr = _as_number(iou_threshold, "iou_threshold")
    max_det = _as_count(max_det, "max_det")
    if pre_nms_topk is not None:
        pre_nms_topk = _as_count(pre_nms_topk, "pre_nms_topk", minimum=1)
    resolved = _resolve_backend(backend, scores.device, boxes.dtype, scores.dtype)
    if B * N * C == 0 or max_det == 0:
        dev = scores.device
        out = (
            torch.zeros(B, max_det, 4, dtype=boxes.dtype, device=dev),
            torch.zeros(B, max_det, dtype=scores.dtype, device=dev),
            torch.full((B, max_det), -1, dtype=torch.int64, device=dev),
            torch.zeros(B, dtype=torch.int64, device=dev),
            torch.full((B, max_det), -1, dtype=torch.int64, device=dev),
        )
    elif resolved == "triton":
        out = multiclass_sync_free(
            boxes,
            scores,
            score_threshold=score_threshold,
            iou_threshold=thr,
            max_det=max_det,
            pre_nms_topk=pre_nms_topk,
            keep_fn=triton_keep_sorted,
        )
    else:
        out = multiclass_reference(
            boxes,
            scores,
            score_threshold=score_threshold,
            iou_threshold=thr,
            max_det=max_det,
            pre_nms_topk=pre_nms_topk,
        )
    return out if return_indices else out[:4]
