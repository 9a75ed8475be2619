"""Timing helpers shared by the benchmark scripts: load average, a competing CPU load, alternating medians."""

from __future__ import annotations

import contextlib
import os
import statistics
import subprocess
import sys
import time
from collections.abc import Callable, Iterator
from typing import Any


def load() -> str:
    """The 1/5/15-minute load averages, ``a/b/c``."""
    return "/".join(f"{v:.2f}" for v in os.getloadavg())


@contextlib.contextmanager
def contention(procs: int) -> Iterator[None]:
    """``procs`` CPU-bound processes (a busy Python loop each) running for the duration of the block."""
    busy = [subprocess.Popen([sys.executable, "-c", "while True: pass"]) for _ in range(procs)]
    try:
        time.sleep(1.0)  # let the scheduler see them
        yield
    finally:
        for p in busy:
            p.kill()
            p.wait()


def alternate(
    fns: dict[str, Callable[[], Any]], *, warmup: int, iters: int, sync: Callable[[], None] = lambda: None
) -> dict[str, float]:
    """Median seconds per call of each function, called in turn (one call each per round, the order reversed every
    other round), so that a load change on a shared machine hits all alike. ``sync`` runs before and after each
    timed call (e.g. ``torch.cuda.synchronize``)."""
    for _ in range(warmup):
        for fn in fns.values():
            fn()
    times: dict[str, list[float]] = {name: [] for name in fns}
    for i in range(iters):
        for name, fn in list(fns.items())[:: -1 if i % 2 else 1]:
            sync()
            t0 = time.perf_counter()
            fn()
            sync()
            times[name].append(time.perf_counter() - t0)
    return {name: statistics.median(t) for name, t in times.items()}
