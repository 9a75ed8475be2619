"""NMS: vision.ops against torchvision on the same detector-like inputs.

For every case the script checks that the kept detections are identical to torchvision's ``nms`` applied per
(image, class) on the CPU (the semantics vision.ops follows exactly), then prints the median time of both
implementations and the ratio.  The torchvision side is what a torchvision user runs today: ``torchvision.ops.nms``
for one class, and the per-image ``score > threshold`` / ``batched_nms`` / ``[:max_det]`` loop of torchvision's
detection heads for the multi-class cases.  Ours is ``vision.ops.nms`` / ``vision.ops.multiclass_nms``; on CUDA
the multi-class case is also timed as a CUDA-graph replay (it is sync-free).

Usage::

    python benchmarks/nms.py                   # CUDA when available, else the CPU table
    python benchmarks/nms.py --device cpu      # CPU: one class at 1k / 10k / 50k boxes + smaller batches
    python benchmarks/nms.py --device cpu --quick
    python benchmarks/nms.py --device cpu --full --threads 1   # the GPU shapes on the CPU (slow)

On a shared or busy CPU, ``--threads 1`` gives stable numbers (torchvision's CPU kernel is single-threaded anyway;
oversubscribed OpenMP makes torch's small parallel ops stall).
"""

from __future__ import annotations

import argparse
import math
import statistics
import time
from collections.abc import Callable
from dataclasses import dataclass

import torch
import torchvision

from vision.ops import multiclass_nms, nms


@dataclass(frozen=True)
class Case:
    name: str
    batch: int
    candidates: int
    classes: int
    class_specific: bool = False
    score_threshold: float = 0.05
    iou_threshold: float = 0.5
    max_det: int = 300
    pre_nms_topk: int | None = None


GPU_CASES = [
    Case("one class 1k", 1, 1_000, 1),
    Case("one class 20k", 1, 20_000, 1),
    Case("one class 100k", 1, 100_000, 1),
    Case("YOLO 16x8400x80", 16, 8_400, 80, iou_threshold=0.6),
    Case("YOLO 8x30k x80", 8, 30_000, 80, iou_threshold=0.6),
    Case("Faster R-CNN 1000x90", 8, 1_000, 90, class_specific=True, max_det=100),
]
CPU_CASES = [
    Case("one class 1k", 1, 1_000, 1),
    Case("one class 10k", 1, 10_000, 1),
    Case("one class 50k", 1, 50_000, 1),
    Case("YOLO 2x8400x80", 2, 8_400, 80, iou_threshold=0.6),
    Case("Faster R-CNN 1000x90", 2, 1_000, 90, class_specific=True, max_det=100),
]
QUICK_CASES = [
    Case("one class 1k", 1, 1_000, 1),
    Case("one class 10k", 1, 10_000, 1),
    Case("one class 50k", 1, 50_000, 1),
    Case("YOLO 1x8400x80", 1, 8_400, 80, iou_threshold=0.6),
]


# ---------------------------------------------------------------------------------------------------------------------
# inputs
# ---------------------------------------------------------------------------------------------------------------------


def detector_like(case: Case, *, seed: int = 0, image_size: float = 640.0) -> tuple[torch.Tensor, torch.Tensor]:
    """Clustered candidates around a few objects per image, like a detector's raw output.

    Returns ``boxes [B, N, 4]`` (or ``[B, N, C, 4]``) and ``scores [B, N, C]`` on the CPU, float32.  85% of the
    candidates are jittered copies of an object box scoring high on the object's class; the rest are background.
    Other classes score low (most below 0.05).  One-class cases scale the object count with N.
    """
    g = torch.Generator().manual_seed(seed)
    B, N, C = case.batch, case.candidates, case.classes

    def rnd(*shape: int) -> torch.Tensor:
        return torch.rand(*shape, generator=g)

    n_obj = max(8, N // 150) if C == 1 else 24
    centre = rnd(B, n_obj, 2) * image_size
    size = torch.exp(math.log(16) + rnd(B, n_obj, 2) * (math.log(400) - math.log(16)))
    obj_cls = torch.randint(0, C, (B, n_obj), generator=g)
    obj = torch.randint(0, n_obj, (B, N), generator=g)
    on_object = rnd(B, N) < 0.85
    pick = obj.unsqueeze(-1).expand(B, N, 2)
    wh = size.gather(1, pick) * torch.exp(torch.randn(B, N, 2, generator=g) * 0.15)
    ctr = centre.gather(1, pick) + torch.randn(B, N, 2, generator=g) * wh * 0.12
    bg_wh = torch.exp(math.log(8) + rnd(B, N, 2) * (math.log(300) - math.log(8)))
    bg_ctr = rnd(B, N, 2) * image_size
    wh = torch.where(on_object.unsqueeze(-1), wh, bg_wh)
    ctr = torch.where(on_object.unsqueeze(-1), ctr, bg_ctr)
    boxes = torch.cat([ctr - wh / 2, ctr + wh / 2], -1)
    scores = rnd(B, N, C) ** 6 * 0.08
    quality = 0.3 + 0.7 * rnd(B, N) ** 0.5
    if C == 1:
        scores[..., 0] = torch.where(on_object, quality, rnd(B, N) * 0.3)
    else:
        cls = obj_cls.gather(1, obj)
        true_score = torch.where(on_object, quality, scores.gather(2, cls.unsqueeze(-1)).squeeze(-1))
        scores.scatter_(2, cls.unsqueeze(-1), true_score.unsqueeze(-1))
    if case.class_specific:
        boxes = boxes.unsqueeze(2) + torch.randn(B, N, C, 4, generator=g) * wh.repeat(1, 1, 2).unsqueeze(2) * 0.03
    return boxes, scores


# ---------------------------------------------------------------------------------------------------------------------
# the two implementations and the exact reference
# ---------------------------------------------------------------------------------------------------------------------


def torchvision_postprocess(boxes: torch.Tensor, scores: torch.Tensor, case: Case) -> list[torch.Tensor]:
    """torchvision detection-head style: per image, threshold, (top-k), ``batched_nms``, ``[:max_det]``."""
    B, _, C = scores.shape
    out = []
    for b in range(B):
        s = scores[b].reshape(-1)
        f = torch.where(s > case.score_threshold)[0]
        if case.pre_nms_topk is not None and f.numel() > case.pre_nms_topk:
            f = f[s[f].topk(case.pre_nms_topk).indices]
        n, c = f // C, f % C
        bx = boxes[b, n] if boxes.dim() == 3 else boxes[b, n, c]
        keep = torchvision.ops.batched_nms(bx, s[f], c, case.iou_threshold)[: case.max_det]
        out.append(f[keep])
    return out


def exact_reference(boxes: torch.Tensor, scores: torch.Tensor, case: Case) -> list[torch.Tensor]:
    """torchvision's CPU ``nms`` per (image, class), merged by (decreasing score, increasing n * C + c)."""
    boxes, scores = boxes.cpu(), scores.cpu()
    B, _, C = scores.shape
    out = []
    for b in range(B):
        s = scores[b].reshape(-1)
        f = torch.where(s.double() > case.score_threshold)[0]  # exact comparison, as vision.ops does
        if case.pre_nms_topk is not None:
            f = f[torch.sort(s[f], descending=True, stable=True).indices[: case.pre_nms_topk]]
        n, c = f // C, f % C
        bx = boxes[b, n] if boxes.dim() == 3 else boxes[b, n, c]
        order = torch.argsort(c, stable=True)
        bounds = torch.searchsorted(c[order], torch.arange(C + 1))
        kept = []
        for k in range(C):
            m = order[bounds[k] : bounds[k + 1]]
            if m.numel():
                kept.append(m[torchvision.ops.nms(bx[m], s[f[m]], case.iou_threshold)])
        kf = f[torch.cat(kept)].sort().values if kept else f[:0]
        out.append(kf[torch.sort(s[kf], descending=True, stable=True).indices][: case.max_det])
    return out


def ours_postprocess(boxes: torch.Tensor, scores: torch.Tensor, case: Case) -> tuple[torch.Tensor, ...]:
    return multiclass_nms(
        boxes,
        scores,
        score_threshold=case.score_threshold,
        iou_threshold=case.iou_threshold,
        max_det=case.max_det,
        pre_nms_topk=case.pre_nms_topk,
        return_indices=True,
    )


def ours_as_flat(out: tuple[torch.Tensor, ...], classes: int) -> list[torch.Tensor]:
    _, _, labels, counts, indices = out
    flat = (indices * classes + labels).cpu()
    return [flat[b, : int(k)] for b, k in enumerate(counts.cpu())]


# ---------------------------------------------------------------------------------------------------------------------
# timing
# ---------------------------------------------------------------------------------------------------------------------


def median_ms(fn: Callable[[], object], device: torch.device, repeats: int, warmup: int = 2) -> float:
    for _ in range(warmup):
        fn()
    times = []
    for _ in range(repeats):
        if device.type == "cuda":
            torch.cuda.synchronize(device)
        t0 = time.perf_counter()
        fn()
        if device.type == "cuda":
            torch.cuda.synchronize(device)
        times.append((time.perf_counter() - t0) * 1e3)
    return statistics.median(times)


def graph_ms(case: Case, boxes: torch.Tensor, scores: torch.Tensor, repeats: int) -> float | None:
    """Median replay time of ``multiclass_nms`` captured in a CUDA graph (None if capture is not possible)."""
    try:
        static_boxes, static_scores = boxes.clone(), scores.clone()
        side = torch.cuda.Stream()
        side.wait_stream(torch.cuda.current_stream())
        with torch.cuda.stream(side):
            ours_postprocess(static_boxes, static_scores, case)
        torch.cuda.current_stream().wait_stream(side)
        graph = torch.cuda.CUDAGraph()
        with torch.cuda.graph(graph):
            ours_postprocess(static_boxes, static_scores, case)
    except RuntimeError as e:  # pragma: no cover - reported, not fatal
        print(f"  (CUDA graph capture failed for {case.name}: {e})")
        return None
    return median_ms(graph.replay, boxes.device, repeats)


def run_case(case: Case, device: torch.device, repeats: int) -> dict[str, object]:
    """Check and time one case: ``{"case", "shape", "kept", "identical" (to the exact reference, in order),
    "same set as torchvision" (kept set of torchvision's nms / batched_nms on the same device), "torchvision" and
    "ours" (median ms), and on CUDA for multi-class cases "ours (graph)" (median ms of a CUDA-graph replay, None
    when the capture failed)}``."""
    boxes_cpu, scores_cpu = detector_like(case)
    boxes, scores = boxes_cpu.to(device), scores_cpu.to(device)
    row: dict[str, object] = {"case": case.name}
    if case.classes == 1:
        b, s = boxes[0], scores[0, :, 0]
        row["shape"] = f"{case.candidates} boxes"
        kept = nms(b, s, case.iou_threshold)
        expected = torchvision.ops.nms(boxes_cpu[0], scores_cpu[0, :, 0], case.iou_threshold)
        row["kept"] = int(kept.numel())
        row["identical"] = bool(torch.equal(kept.cpu(), expected))
        theirs = torchvision.ops.nms(b, s, case.iou_threshold)  # on the device, as a torchvision user runs it
        row["same set as torchvision"] = set(kept.tolist()) == set(theirs.tolist())
        row["torchvision"] = median_ms(lambda: torchvision.ops.nms(b, s, case.iou_threshold), device, repeats)
        row["ours"] = median_ms(lambda: nms(b, s, case.iou_threshold), device, repeats)
    else:
        shape = f"{case.batch}x{case.candidates}x{case.classes}"
        row["shape"] = shape + ("x4 (per-class boxes)" if case.class_specific else "")
        out = ours_postprocess(boxes, scores, case)
        got = ours_as_flat(out, case.classes)
        expected = exact_reference(boxes_cpu, scores_cpu, case)
        row["kept"] = int(sum(k.numel() for k in got))
        row["identical"] = all(torch.equal(a, e) for a, e in zip(got, expected))
        theirs = torchvision_postprocess(boxes, scores, case)  # batched_nms on the device
        row["same set as torchvision"] = all(set(a.tolist()) == set(t.tolist()) for a, t in zip(got, theirs))
        row["torchvision"] = median_ms(lambda: torchvision_postprocess(boxes, scores, case), device, repeats)
        row["ours"] = median_ms(lambda: ours_postprocess(boxes, scores, case), device, repeats)
        if device.type == "cuda":
            row["ours (graph)"] = graph_ms(case, boxes, scores, repeats)
    return row


def print_table(rows: list[dict[str, object]], device: torch.device) -> None:
    graph = any("ours (graph)" in r for r in rows)
    head = ["case", "shape", "kept", "identical", "torchvision ms", "ours ms", "speed-up"]
    if graph:
        head += ["ours graph ms", "speed-up (graph)"]
    table = []
    for r in rows:
        tv, ours = float(r["torchvision"]), float(r["ours"])
        line = [r["case"], r["shape"], str(r["kept"]), "yes" if r["identical"] else "NO", f"{tv:.2f}", f"{ours:.2f}"]
        line.append(f"{tv / ours:.2f}x")
        if graph:
            g = r.get("ours (graph)")
            line += [f"{g:.2f}", f"{tv / g:.2f}x"] if g else ["-", "-"]
        table.append(line)
    widths = [max(len(h), *(len(t[i]) for t in table)) for i, h in enumerate(head)]
    print(f"\nNMS on {device} ({describe(device)}), median ms; speed-up = torchvision time / ours")
    print("  ".join(h.ljust(w) for h, w in zip(head, widths)))
    print("  ".join("-" * w for w in widths))
    for t in table:
        print("  ".join(c.ljust(w) for c, w in zip(t, widths)))


def describe(device: torch.device) -> str:
    if device.type == "cuda":
        return torch.cuda.get_device_name(device)
    return f"{torch.get_num_threads()} threads, torch {torch.__version__}, torchvision {torchvision.__version__}"


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--device", default="cuda" if torch.cuda.is_available() else "cpu")
    parser.add_argument("--quick", action="store_true", help="fewer, smaller cases and repeats (CPU smoke run)")
    parser.add_argument("--full", action="store_true", help="the GPU shapes even on the CPU (slow)")
    parser.add_argument("--repeats", type=int, default=None, help="timed runs per measurement (median)")
    parser.add_argument("--threads", type=int, default=None, help="torch CPU threads")
    args = parser.parse_args(argv)
    device = torch.device(args.device)
    if args.threads:
        torch.set_num_threads(args.threads)
    if device.type == "cuda" or args.full:
        cases = GPU_CASES
    else:
        cases = QUICK_CASES if args.quick else CPU_CASES
    repeats = args.repeats or (20 if device.type == "cuda" else (3 if args.quick else 5))
    rows = []
    for case in cases:
        t0 = time.perf_counter()
        rows.append(run_case(case, device, repeats))
        print(f"  {case.name}: done in {time.perf_counter() - t0:.1f}s", flush=True)
    print_table(rows, device)
    return 0 if all(r["identical"] for r in rows) else 1


if __name__ == "__main__":
    raise SystemExit(main())
