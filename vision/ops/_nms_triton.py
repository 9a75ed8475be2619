"""Triton kernel for sync-free, segmented greedy NMS (one launch for every (image, class) segment).

Imported lazily (only when the Triton backend runs), so ``import vision.ops`` never imports triton.

Input contract (prepared with torch ops by :mod:`vision.ops._nms_common`, all on the device, no host sync):

* ``boxes``  ``[M, 4]`` float32, sorted by (segment, decreasing score, increasing index) — NMS priority order;
* ``seg_start`` ``[S + 1]`` int32: segment ``s`` occupies rows ``seg_start[s] : seg_start[s + 1]`` (rows past
  ``seg_start[nseg]`` are padding and never touched);
* ``tile_start`` ``[S + 1]`` int32: exclusive prefix sum of ``ceil(len(s) / BLOCK)``, the tiles of every segment;
* ``nseg`` ``[1]`` int32: number of segments actually present (``<= S``), read on the device.

Design
------
Every segment is cut into tiles of ``BLOCK`` consecutive boxes; tiles are numbered segment-major, and a fixed grid of
persistent programs takes tiles in that order from an atomic ticket counter.  A program processing tile ``k`` of
segment ``s``:

1. *cross phase* — streams the boxes already kept by tiles ``0..k-1`` of ``s`` (a per-segment compacted list in
   ``kept_ptr``) in chunks of ``BLOCK`` and drops every box of its tile that a kept box overlaps with IoU > thr.
   Tiles of a segment publish their results strictly in order through one int64 word per segment,
   ``state[s] = (tiles_done << 32) | kept_count`` (release/acquire atomics), so the program consumes chunks as soon as
   they are complete and waits only for the tile just before it.  Tickets are handed out in order, so the tile a
   program waits for belongs to a program that is already running: no deadlock, whatever the grid size;
2. *in-tile phase* — greedy NMS among its surviving boxes from the ``BLOCK x BLOCK`` IoU matrix: ``keep = alive &
   ~any_i(keep_i & M[i, j])`` (``M`` strictly upper-triangular) is iterated to its unique fixpoint, which the
   iteration reaches after at most ``BLOCK`` steps (typically 2-4);
3. appends its kept boxes to the segment's kept list, writes its keep flags and publishes ``state[s]``.

The hand-over is the classic flag pattern: every thread fences (``fence.acq_rel.gpu``) after its stores, a CTA
barrier, then one thread releases ``state[s]``; the reader acquires it, fences, and loads the kept list with
``.cg`` (L2, never a stale L1 line).  ``BLOCK = 64`` with 8 warps keeps the 64 x 64 IoU temporaries in registers
(198 registers, no spills, on sm_80 and sm_90); the grid is two programs per SM.

A per-segment ``limit`` (``max_det``) stops a segment once it has kept that many boxes (the rest can never reach
the final top-``max_det``).  Extra memory is O(M + S): the kept list (``M x 4`` floats), ``keep`` flags and the
segment words — no N x N mask.  The IoU is torchvision's CPU formula in float32 with IEEE division (``div_rn``)
and no FMA contraction (``enable_fp_fusion=False``), compared with the threshold rounded towards -inf, so the kept
set is bit-identical to torchvision's CPU ``nms`` on float32 boxes.

On CPU tensors the same kernel source runs under Triton's interpreter (wrapped at call time, see
:func:`_interpreted`), which is how the test-suite exercises it without a GPU.
"""

from __future__ import annotations

import contextlib
import threading
from collections.abc import Iterator

import numpy as np
import torch
import triton
import triton.language as tl
from torch import Tensor
from triton.runtime.jit import JITFunction

__all__ = ["BLOCK", "compile_for", "keep_sorted_triton", "launch_count"]

BLOCK = 64
_NUM_WARPS = 8  # 64 x 64 tiles: 8 warps keep every IoU temporary in registers (no spills on sm_80 / sm_90)
_PROGRAMS_PER_SM = 2
_launches = 0  # incremented per kernel launch (the tests check that the kernel really ran)


def launch_count() -> int:
    """Number of kernel launches so far in this process (compiled or interpreted)."""
    return _launches


def _nms_tiles_kernel(
    boxes_ptr,
    seg_start_ptr,
    tile_start_ptr,
    nseg_ptr,
    state_ptr,
    ticket_ptr,
    kept_ptr,
    keep_ptr,
    limit,
    thr,
    BLOCK: tl.constexpr,
    FENCE: tl.constexpr,
):
    offs = tl.arange(0, BLOCK)
    nseg = tl.load(nseg_ptr)
    total = tl.load(tile_start_ptr + nseg)
    zero64 = tl.full([], 0, tl.int64)
    t = tl.atomic_add(ticket_ptr, 1)
    while t < total:
        # segment of tile t: the largest s < nseg with tile_start[s] <= t (binary search)
        lo = 0
        hi = nseg
        while hi - lo > 1:
            mid = (lo + hi) // 2
            go = tl.load(tile_start_ptr + mid) <= t
            lo = tl.where(go, mid, lo)
            hi = tl.where(go, hi, mid)
        s = lo
        k = t - tl.load(tile_start_ptr + s)
        base = tl.load(seg_start_ptr + s)
        end = tl.load(seg_start_ptr + s + 1)
        rows = base + k * BLOCK + offs
        valid = rows < end
        bx1 = tl.load(boxes_ptr + rows * 4 + 0, mask=valid, other=0.0)
        by1 = tl.load(boxes_ptr + rows * 4 + 1, mask=valid, other=0.0)
        bx2 = tl.load(boxes_ptr + rows * 4 + 2, mask=valid, other=0.0)
        by2 = tl.load(boxes_ptr + rows * 4 + 3, mask=valid, other=0.0)
        barea = (bx2 - bx1) * (by2 - by1)
        alive = valid

        # ---- cross phase: boxes kept by the earlier tiles of this segment --------------------------------------
        used = 0  # kept-list entries consumed
        kc = 0  # kept-list length once every earlier tile is done
        waiting = k > 0
        while waiting:
            st = tl.atomic_add(state_ptr + s, zero64, sem="acquire", scope="gpu")
            if FENCE:  # every thread, not only the one that performed the acquire, orders its kept-list loads
                tl.inline_asm_elementwise("fence.acq_rel.gpu; mov.b32 $0, $1;", "=r,r", [offs], tl.int32, False, 1)
            done64 = st >> 32
            done = done64.to(tl.int32)
            kc = (st - (done64 << 32)).to(tl.int32)
            finished = done == k
            avail = kc - used
            while (avail >= BLOCK) | (finished & (avail > 0)):
                n_alive = tl.sum(alive.to(tl.int32), axis=0)
                if (n_alive > 0) & (kc < limit):
                    krows = base + used + offs
                    kvalid = offs < avail
                    kx1 = tl.load(kept_ptr + krows * 4 + 0, mask=kvalid, other=0.0, cache_modifier=".cg")
                    ky1 = tl.load(kept_ptr + krows * 4 + 1, mask=kvalid, other=0.0, cache_modifier=".cg")
                    kx2 = tl.load(kept_ptr + krows * 4 + 2, mask=kvalid, other=0.0, cache_modifier=".cg")
                    ky2 = tl.load(kept_ptr + krows * 4 + 3, mask=kvalid, other=0.0, cache_modifier=".cg")
                    karea = (kx2 - kx1) * (ky2 - ky1)
                    w = tl.maximum(tl.minimum(kx2[:, None], bx2[None, :]) - tl.maximum(kx1[:, None], bx1[None, :]), 0.0)
                    h = tl.maximum(tl.minimum(ky2[:, None], by2[None, :]) - tl.maximum(ky1[:, None], by1[None, :]), 0.0)
                    inter = w * h
                    iou = tl.math.div_rn(inter, (karea[:, None] + barea[None, :]) - inter)
                    hit = tl.where(kvalid[:, None] & (iou > thr), 1, 0)
                    sup = tl.max(hit, axis=0)
                    alive = alive & (sup == 0)
                used += tl.minimum(avail, BLOCK)
                avail = kc - used
            waiting = ~finished

        # ---- in-tile phase: greedy NMS among the survivors ---------------------------------------------------
        alive = alive & (kc < limit)
        w = tl.maximum(tl.minimum(bx2[:, None], bx2[None, :]) - tl.maximum(bx1[:, None], bx1[None, :]), 0.0)
        h = tl.maximum(tl.minimum(by2[:, None], by2[None, :]) - tl.maximum(by1[:, None], by1[None, :]), 0.0)
        inter = w * h
        iou = tl.math.div_rn(inter, (barea[:, None] + barea[None, :]) - inter)
        edge = (offs[:, None] < offs[None, :]) & (iou > thr)
        keep = alive
        changed = True
        while changed:
            sup = tl.max(tl.where(edge & keep[:, None], 1, 0), axis=0)
            nxt = alive & (sup == 0)
            changed = tl.sum((nxt != keep).to(tl.int32), axis=0) > 0
            keep = nxt
        # rank of every kept box among the kept boxes of the tile (1-based), then the segment's limit
        rank = tl.sum(tl.where((offs[:, None] <= offs[None, :]) & keep[:, None], 1, 0), axis=0)
        keep = keep & (kc + rank <= limit)
        n_keep = tl.sum(keep.to(tl.int32), axis=0)
        tl.store(keep_ptr + rows, keep.to(tl.int8), mask=valid)
        dst = base + kc + rank - 1
        tl.store(kept_ptr + dst * 4 + 0, bx1, mask=keep)
        tl.store(kept_ptr + dst * 4 + 1, by1, mask=keep)
        tl.store(kept_ptr + dst * 4 + 2, bx2, mask=keep)
        tl.store(kept_ptr + dst * 4 + 3, by2, mask=keep)
        if FENCE:  # make this thread's stores visible device-wide before the flag goes up
            tl.inline_asm_elementwise("fence.acq_rel.gpu; mov.b32 $0, $1;", "=r,r", [offs], tl.int32, False, 1)
        tl.debug_barrier()  # every thread's stores precede the release below
        word = ((k + 1).to(tl.int64) << 32) | (kc + n_keep).to(tl.int64)
        tl.atomic_xchg(state_ptr + s, word, sem="release", scope="gpu")
        t = tl.atomic_add(ticket_ptr, 1)


_compiled = None
_interpreted_kernel = None
_patch_lock = threading.Lock()


def _compiled_kernel():
    global _compiled
    if _compiled is None:
        _compiled = triton.jit(_nms_tiles_kernel)
    return _compiled


@contextlib.contextmanager
def _interpreted() -> Iterator[object]:
    """Run the kernel source under Triton's interpreter, decided at call time.

    ``TRITON_INTERPRET=1`` only takes effect when triton is imported (it decides what ``@triton.jit`` returns, also
    for triton's own standard library), so it cannot be switched on for one call in a process that also compiles
    GPU kernels.  Instead the kernel is wrapped in :class:`triton.runtime.interpreter.InterpretedFunction`, and for
    the duration of the call the ``@triton.jit`` functions of ``triton.language`` are swapped for interpreted twins
    (exactly what the environment variable would have produced), then restored.
    """
    global _interpreted_kernel
    from triton.runtime.interpreter import InterpretedFunction

    if _interpreted_kernel is None:
        _interpreted_kernel = InterpretedFunction(_nms_tiles_kernel)
        # Modules that triton imports lazily on a first launch and that insist on finding the compiled versions of
        # the standard library must be imported before it is swapped.
        with contextlib.suppress(ImportError):
            import triton.experimental.gluon  # noqa: F401
    # What is swapped here, and whatever the interpreter itself patches without undoing it (its nested calls patch
    # ``triton.language.core`` and never restore it), is put back from a snapshot afterwards, so kernels compiled
    # later in the process see the real language again.
    patched = [tl, tl.core, tl.standard, tl.math, tl.tensor, tl.dtype, tl.core.tensor_descriptor_base]
    with _patch_lock:
        snapshot = [(obj, dict(vars(obj))) for obj in patched]
        try:
            for mod in (tl, tl.standard, tl.math):
                for name, obj in list(vars(mod).items()):
                    if isinstance(obj, JITFunction):
                        setattr(mod, name, InterpretedFunction(obj.fn))
            yield _interpreted_kernel
        finally:
            for obj, before in snapshot:  # names the interpreter added (its helpers) stay: its cached code uses them
                for name, value in before.items():
                    if vars(obj).get(name, _MISSING) is not value:
                        setattr(obj, name, value)


_MISSING = object()


def compile_for(capability: int) -> object:
    """Compile the kernel for ``sm_<capability>`` without a GPU (PTX and cubin; used by the tests).

    Returns triton's compiled-kernel object (``.asm["ptx"]``, ``.asm["cubin"]``).
    """
    from triton.backends.compiler import GPUTarget
    from triton.compiler import ASTSource

    signature = {
        "boxes_ptr": "*fp32",
        "seg_start_ptr": "*i32",
        "tile_start_ptr": "*i32",
        "nseg_ptr": "*i32",
        "state_ptr": "*i64",
        "ticket_ptr": "*i32",
        "kept_ptr": "*fp32",
        "keep_ptr": "*i8",
        "limit": "i32",
        "thr": "fp32",
        "BLOCK": "constexpr",
        "FENCE": "constexpr",
    }
    src = ASTSource(fn=_compiled_kernel(), signature=signature, constexprs={"BLOCK": BLOCK, "FENCE": True})
    options = {"num_warps": _NUM_WARPS, "enable_fp_fusion": False}
    return triton.compile(src, target=GPUTarget("cuda", capability, 32), options=options)


def _grid_size(boxes: Tensor, max_tiles: int) -> int:
    if boxes.device.type != "cuda":
        return 1
    props = torch.cuda.get_device_properties(boxes.device)
    return max(1, min(max_tiles, props.multi_processor_count * _PROGRAMS_PER_SM))


def keep_sorted_triton(boxes: Tensor, seg_start: Tensor, nseg: Tensor, *, limit: int, thr: float) -> Tensor:
    """Keep flags ``[M]`` (bool) for boxes sorted by segment and priority; see the module docstring.

    Args:
        boxes: ``[M, 4]`` float32, contiguous.
        seg_start: ``[S + 1]`` int32, segment offsets (non-decreasing).
        nseg: ``[1]`` int32 on the device, number of segments in use (``<= S``).
        limit: stop a segment after it kept this many boxes.
        thr: float32 threshold, already rounded towards -inf (``threshold_for_dtype``).
    """
    global _launches
    m = boxes.shape[0]
    s_max = seg_start.shape[0] - 1
    if m >= 2**29:
        raise ValueError(f"the Triton NMS kernel supports fewer than 2**29 boxes per call, got {m}")
    dev = boxes.device
    keep = torch.zeros(m, dtype=torch.int8, device=dev)
    if m == 0 or s_max == 0 or limit <= 0:
        return keep.bool()
    lens = (seg_start[1:] - seg_start[:-1]).clamp_(min=0)
    tiles = (lens + (BLOCK - 1)) // BLOCK
    tile_start = torch.zeros(s_max + 1, dtype=torch.int32, device=dev)
    tile_start[1:] = torch.cumsum(tiles, 0)
    state = torch.zeros(s_max, dtype=torch.int64, device=dev)
    ticket = torch.zeros(1, dtype=torch.int32, device=dev)
    kept = torch.empty((m, 4), dtype=torch.float32, device=dev)
    max_tiles = (m + BLOCK - 1) // BLOCK + s_max
    args = (boxes, seg_start, tile_start, nseg, state, ticket, kept, keep, int(min(limit, 2**31 - 1)), float(thr))
    grid = (_grid_size(boxes, max_tiles),)
    if dev.type == "cuda":
        kernel = _compiled_kernel()
        fence = isinstance(kernel, JITFunction)  # False under a global TRITON_INTERPRET=1 (interpreted)
        kernel[grid](*args, BLOCK=BLOCK, FENCE=fence, num_warps=_NUM_WARPS, enable_fp_fusion=False)
    else:
        with _interpreted() as kernel, np.errstate(invalid="ignore", divide="ignore"):  # 0/0 IoU is NaN by design
            kernel[grid](*args, BLOCK=BLOCK, FENCE=False)
    _launches += 1
    return keep.bool()
