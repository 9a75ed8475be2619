"""Timing helpers shared by the benchmark scripts: load average, a competing CPU load, alternating medians, and a
benchmark side in its own process (:class:`Remote`)."""

from __future__ import annotations

import contextlib
import json
import os
import statistics
import subprocess
import sys
import time
from collections.abc import Callable, Iterator, Mapping
from pathlib import Path
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


def _worker(env: Mapping[str, str] | None) -> subprocess.Popen[str]:
    return subprocess.Popen(
        [sys.executable, str(Path(__file__).with_name("_worker.py"))], stdin=subprocess.PIPE, stdout=subprocess.PIPE,
        text=True, env=dict(os.environ if env is None else env),
    )  # fmt: skip


def call_in_process(
    module: str, function: str, kwargs: Mapping[str, Any], *, threads: int, first: tuple[str, ...] = (),
    env: Mapping[str, str] | None = None,
) -> Any:  # fmt: skip
    """``module.function(**kwargs)`` run once in a Python process of its own (as :class:`Remote`); its result, which
    must be JSON, comes back (tuples as lists)."""
    spec = {"module": module, "function": function, "kwargs": dict(kwargs), "threads": threads, "first": first}
    out, _ = _worker(env).communicate(json.dumps({**spec, "once": True}) + "\n")
    if not out.strip():
        raise RuntimeError(f"benchmark worker for {module}.{function} stopped without a result")
    return json.loads(out.strip().splitlines()[-1])


class Remote:
    """A call timed in its own Python process (``_worker.py``): ``module.function(**kwargs)`` builds it there, with
    ``threads`` torch threads, after importing the modules ``first``; ``env`` is that process's environment.

    Each side of a comparison then runs with its own library's process-wide settings (OpenMP wait policy, malloc
    thresholds, thread pools) as a user's process would, and neither inherits the other's.
    """

    def __init__(
        self, module: str, function: str, kwargs: Mapping[str, Any], *, threads: int, first: tuple[str, ...] = (),
        env: Mapping[str, str] | None = None,
    ) -> None:  # fmt: skip
        self._name = f"{module}.{function}"
        self._proc = _worker(env)
        spec = {"module": module, "function": function, "kwargs": dict(kwargs), "threads": threads, "first": first}
        self._ask(json.dumps(spec), expect="ready")

    def _ask(self, line: str, expect: str | None = None) -> str:
        assert self._proc.stdin is not None
        assert self._proc.stdout is not None
        self._proc.stdin.write(line + "\n")
        self._proc.stdin.flush()
        answer = self._proc.stdout.readline().strip()
        if not answer or (expect is not None and answer != expect):
            if answer:  # something other than the protocol's answer: the worker is not to be trusted further
                self._proc.kill()
            self._proc.wait()
            raise RuntimeError(f"benchmark worker for {self._name} stopped (exit code {self._proc.returncode})")
        return answer

    def timed(self) -> float:
        """Seconds one call took in the worker."""
        return float(self._ask("run"))

    def close(self) -> None:
        if self._proc.poll() is None:
            assert self._proc.stdin is not None
            self._proc.stdin.close()
            try:
                self._proc.wait(timeout=30)
            except subprocess.TimeoutExpired:
                self._proc.kill()
                self._proc.wait()


def alternate(
    fns: Mapping[str, Callable[[], Any] | Remote],
    *,
    warmup: int,
    iters: int,
    sync: Callable[[], None] = lambda: None,
    pause: float = 0.0,
) -> dict[str, float]:
    """Median seconds per call of each function, called in turn (one call each per round, the order reversed every
    other round), so that a load change on a shared machine hits all alike. ``sync`` runs before and after each
    timed call (e.g. ``torch.cuda.synchronize``); a :class:`Remote` times itself in its process. ``pause`` seconds
    pass before each call of a :class:`Remote`, so that its process starts on a machine the previous side has left
    idle (as a user's only process would), not in the CPU-time window of that side's call."""

    def timed(fn: Callable[[], Any] | Remote) -> float:
        if isinstance(fn, Remote):
            time.sleep(pause)
            return fn.timed()
        sync()
        t0 = time.perf_counter()
        fn()
        sync()
        return time.perf_counter() - t0

    for _ in range(warmup):
        for fn in fns.values():
            timed(fn)
    times: dict[str, list[float]] = {name: [] for name in fns}
    for i in range(iters):
        for name, fn in list(fns.items())[:: -1 if i % 2 else 1]:
            times[name].append(timed(fn))
    return {name: statistics.median(t) for name, t in times.items()}
