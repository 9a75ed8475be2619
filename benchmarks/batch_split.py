"""Batch slices in threads (:func:`vision.utils.parallel.split_batch`) against PyTorch's intra-op threads, on the CPU.

For each model, the same eval-mode forward pass on the same random batch, once as one call whose operators are each
split over ``--threads`` intra-op threads (PyTorch's own way, "intra-op"), once as ``--threads`` slices of the batch
in parallel threads with one intra-op thread each ("slices", what ``predict``, validation and YOLO's ``detect`` do on
the CPU). Calls alternate, medians of ``--iters``; prints both, their ratio and the largest difference between the
two outputs. ``--contend`` repeats it beside a CPU-bound process. Random weights: nothing is downloaded.

    python benchmarks/batch_split.py --threads 2
    python benchmarks/batch_split.py --threads 2 --contend --models yolo_n
"""

from __future__ import annotations

# isort: off
import vision._openmp  # before torch: the OpenMP wait policy vision sets

# isort: on
import argparse
import contextlib
import os
from collections.abc import Callable
from typing import Any

import torch
from _timing import alternate, contention, load

import vision
from vision.utils.parallel import split_batch

CASES = {  # model -> (batch, image size)
    "yolo_n": (8, 320),
    "resnet18": (8, 224),
    "efficientnet_lite0": (8, 224),
}


def _pair(name: str, batch: int, size: int) -> tuple[Callable[[], Any], Callable[[], Any], Callable[[Any], Any]]:
    """(intra-op call, sliced call, the output to compare) for one model."""
    torch.manual_seed(0)
    x = torch.rand(batch, 3, size, size)
    if name.startswith("yolo"):
        model = vision.create_model(name, num_classes=80, imgsz=size).eval()
        opts = {"score_threshold": 0.001, "iou_threshold": 0.7, "max_det": 300, "amp": False}
        model.fused_network()
        return (lambda: model._detect(x, **opts)), (lambda: model.detect(x, **opts)), (lambda out: out[1])
    model = vision.create_model(name, num_classes=1000).eval()
    return (lambda: model(x)), (lambda: split_batch(model, x)), (lambda out: out)


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--threads", type=int, default=os.cpu_count() or 1)
    parser.add_argument("--models", default=",".join(CASES), help=f"comma-separated, from {sorted(CASES)}")
    parser.add_argument("--iters", type=int, default=20)
    parser.add_argument("--warmup", type=int, default=3)
    parser.add_argument("--contend", action="store_true", help="repeat every timing beside a CPU-bound process")
    args = parser.parse_args()
    unknown = sorted(set(args.models.split(",")) - set(CASES))
    if unknown:
        parser.error(f"--models: unknown {unknown}; choose from {sorted(CASES)}")
    torch.set_num_threads(args.threads)
    print(f"torch {torch.__version__}, {args.threads} threads, {os.cpu_count()} CPUs, load {load()}")
    for name in args.models.split(","):
        batch, size = CASES[name]
        intra, sliced, pick = _pair(name, batch, size)
        with torch.no_grad():
            diff = (pick(intra()).float() - pick(sliced()).float()).abs().max().item()
            for contended in (False, True) if args.contend else (False,):
                before = load()
                with contention(1) if contended else contextlib.nullcontext():
                    med = alternate({"intra": intra, "sliced": sliced}, warmup=args.warmup, iters=args.iters)
                tag = f"{name} b{batch} {size}px{' contended' if contended else ''}"
                print(f"{tag:<38} intra-op {med['intra'] * 1e3:7.1f} ms | slices {med['sliced'] * 1e3:7.1f} ms | "
                      f"slices {med['intra'] / med['sliced']:.2f}x faster | max |diff| {diff:.1e}  "
                      f"[load {before} -> {load()}]", flush=True)  # fmt: skip


if __name__ == "__main__":
    main()
