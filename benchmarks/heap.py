"""The heap settings :mod:`vision` applies at import (``vision._heap``) against glibc's defaults, on the CPU.

Each measurement runs in its own process, since malloc settings are per process: YOLO-n ``predict`` on the same
random images with random weights, for each ``--cases`` entry ``BxS`` and each ``--threads`` count, once with
glibc's defaults (``VISION_MALLOC=0``) and once with vision's settings, the two processes alternating for
``--rounds`` rounds. Prints, per case: the median latency of each (the median over rounds of each process's median of
``--iters`` calls), their ratio, the minor page faults per call of each, and whether the detections are identical.
The load average is printed before and after.

    python benchmarks/heap.py                      # batch 1 at 640 px and batch 8 at 320 px, 1 and 2 threads
    python benchmarks/heap.py --threads 1 --cases 1x640 --rounds 5
"""

from __future__ import annotations

import argparse
import json
import os
import statistics
import subprocess
import sys
import time

from _timing import load


def _worker(batch: int, size: int, threads: int, iters: int) -> None:
    """One process's measurement, printed as one JSON line."""
    import resource

    import torch

    import vision  # applies vision._heap unless VISION_MALLOC=0

    torch.set_num_threads(threads)
    torch.manual_seed(0)
    model = vision.create_model("yolo_n", num_classes=80, imgsz=size).eval()
    x = torch.rand(batch, 3, size, size, generator=torch.Generator().manual_seed(1))

    def call() -> list:
        return model.predict(x, score_threshold=0.001, iou_threshold=0.7, max_det=300)

    for _ in range(3):
        call()
    faults = resource.getrusage(resource.RUSAGE_SELF).ru_minflt
    times = []
    for _ in range(iters):
        t0 = time.perf_counter()
        out = call()
        times.append(time.perf_counter() - t0)
    faults = resource.getrusage(resource.RUSAGE_SELF).ru_minflt - faults
    boxes = torch.cat([d["boxes"].flatten() for d in out] + [d["scores"] for d in out]).tolist()
    print(json.dumps({"ms": statistics.median(times) * 1e3, "faults": faults / iters, "out": boxes}))


def _measure(case: str, threads: int, iters: int, tuned: bool) -> dict:
    env = dict(os.environ, VISION_MALLOC="1" if tuned else "0", VISION_FIT_THREADS="0")
    cmd = [sys.executable, __file__, "--worker", case, "--threads", str(threads), "--iters", str(iters)]
    proc = subprocess.run(cmd, env=env, capture_output=True, text=True, check=True)
    return json.loads(proc.stdout.strip().splitlines()[-1])


def main() -> None:
    p = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    p.add_argument("--cases", default="1x640,8x320", help="comma-separated BATCHxSIZE")
    p.add_argument("--threads", default="1,2", help="comma-separated thread counts")
    p.add_argument("--iters", type=int, default=20, help="timed calls per process (after 3 warm-up calls)")
    p.add_argument("--rounds", type=int, default=3, help="process pairs per case (order alternating)")
    p.add_argument("--worker", default="", help=argparse.SUPPRESS)
    args = p.parse_args()
    if args.worker:
        batch, size = (int(v) for v in args.worker.split("x"))
        _worker(batch, size, int(args.threads), args.iters)
        return
    print(f"python {sys.version.split()[0]}, {os.cpu_count()} CPUs")
    for case in args.cases.split(","):
        for threads in (int(t) for t in args.threads.split(",")):
            before = load()
            runs: dict[bool, list[dict]] = {False: [], True: []}
            for r in range(args.rounds):
                for tuned in (False, True) if r % 2 == 0 else (True, False):
                    runs[tuned].append(_measure(case, threads, args.iters, tuned))
            ms = {k: statistics.median(m["ms"] for m in v) for k, v in runs.items()}
            faults = {k: statistics.median(m["faults"] for m in v) for k, v in runs.items()}
            same = all(m["out"] == runs[False][0]["out"] for v in runs.values() for m in v)
            print(
                f"yolo_n b{case.replace('x', ' ')}px {threads} thr  glibc defaults {ms[False]:7.1f} ms "
                f"{faults[False]:6.0f} faults/call | vision {ms[True]:7.1f} ms {faults[True]:6.0f} faults/call | "
                f"{ms[False] / ms[True]:.2f}x faster, detections {'identical' if same else 'DIFFER'}  "
                f"[load {before} -> {load()}]",
                flush=True,
            )


if __name__ == "__main__":
    main()
