"""Batch parallelism for inference on the CPU: independent slices of a batch run side by side in threads.

PyTorch parallelises each operator over its intra-op threads, with a barrier at the end of every operator. A small
convolutional network runs a few hundred such barriers per forward pass; whenever one thread is late (its core is
busy with another process, or its share of the work was smaller), the others wait, and depthwise or small
convolutions split poorly in the first place. Splitting the *batch* instead — each thread runs the whole network on
its own slice with one intra-op thread — removes those barriers: the threads meet once, at the end. Measured on 2
cores (``benchmarks/batch_split.py --threads 2``, batch 8): YOLO-n at 320 px 1.18x faster (1.25x beside a competing
CPU-bound process), ResNet-18 1.17x (1.35x), EfficientNet-Lite0 1.67x (1.60x), with equal outputs.

:func:`split_batch` does that for any function whose outputs are tensors (or tuples/lists of tensors) with the
batch in the first dimension. The caller's grad mode, inference mode and CPU autocast hold in the worker threads.
It falls back to a plain call when there is nothing to gain (one image, one intra-op thread, a non-CPU tensor, or a
call that is already inside a slice), so it is safe to wrap any inference path with it.

A batch that cannot be split (one image) runs with PyTorch's per-operator threads, and there a busy core hurts most:
beside one CPU-bound process on 2 cores, the thread that shares its core with that process finishes every operator
late and YOLO-n at 640 px runs *slower* on 2 threads than on 1 (148-162 ms against 140-155 ms; 88-106 ms idle).
So the plain call runs with the intra-op threads fitted to the cores that other processes have left free lately
(:func:`fitted_threads`: from ``/proc/stat`` and this process's own CPU time over the last quarter second), never
more than the caller's ``torch.get_num_threads()``. ``VISION_FIT_THREADS=0`` turns that off.

Example:
    >>> logits = split_batch(model, images)  # images [B, 3, H, W] on the CPU; same result as model(images)
"""

from __future__ import annotations

import os
import threading
import time
from collections.abc import Callable, Sequence
from concurrent.futures import ThreadPoolExecutor, wait
from typing import Any

import torch
from torch import Tensor

__all__ = ["CpuShare", "fitted_threads", "split_batch", "usable_cpus"]

_state = threading.local()  # .inside: this thread is running a slice
_pool: ThreadPoolExecutor | None = None
_pool_key: tuple[int, int] = (-1, 0)  # (pid, threads) of the pool
_pool_lock = threading.Lock()


def usable_cpus() -> set[int]:
    """The CPUs this process may run on (its affinity mask; all of them where the OS has none)."""
    if hasattr(os, "sched_getaffinity"):
        return os.sched_getaffinity(0)
    return set(range(os.cpu_count() or 1))


def _busy_seconds(cpus: set[int], stat: str = "/proc/stat") -> float | None:
    """CPU seconds the CPUs ``cpus`` have spent busy since boot (everything but idle and iowait; time the hypervisor
    stole counts as busy), from ``/proc/stat``; None where it cannot be read (not Linux)."""
    try:
        with open(stat, encoding="ascii") as f:
            lines = f.read().splitlines()
    except OSError:
        return None
    ticks = 0
    for line in lines:
        name, *fields = line.split()
        if name[:3] == "cpu" and name[3:].isdigit() and int(name[3:]) in cpus:
            values = [int(v) for v in fields[:8]]  # user nice system idle iowait irq softirq steal
            ticks += sum(values) - values[3] - values[4]
    return ticks / os.sysconf("SC_CLK_TCK")


class CpuShare:
    """How many of this process's CPUs other processes have kept busy lately.

    A :meth:`busy_elsewhere` call at least ``window`` seconds after the last sample takes a new one: the CPU seconds
    the CPUs spent busy minus this process's own CPU seconds, per second of wall time since the last sample. Calls in
    between return the last estimate; until two samples exist, and where ``/proc/stat`` cannot be read, it is 0.

    Args:
        window: shortest wall time, in seconds, between two samples (``/proc/stat`` counts in 10 ms ticks).
        read: returns ``(busy CPU seconds of the CPUs or None, own CPU seconds)``; by default ``/proc/stat`` for
            :func:`os.sched_getaffinity`'s CPUs and ``time.process_time()``.
        clock: wall time in seconds (``time.monotonic``).
    """

    def __init__(
        self,
        window: float = 0.25,
        read: Callable[[], tuple[float | None, float]] | None = None,
        clock: Callable[[], float] = time.monotonic,
    ) -> None:
        self.window = window
        self._read = read or (lambda: (_busy_seconds(usable_cpus()), time.process_time()))
        self._clock = clock
        self._last: tuple[float, float, float] | None = None  # (wall, busy, own) of the last sample
        self._estimate = 0.0
        self._pid = os.getpid()
        self._lock = threading.Lock()

    def busy_elsewhere(self) -> float:
        """Cores' worth of CPU time other processes used per second over the last window (>= 0)."""
        with self._lock:
            if self._pid != os.getpid():  # a forked child: the parent's sample counts the parent's own CPU time
                self._last, self._estimate, self._pid = None, 0.0, os.getpid()
            wall = self._clock()
            if self._last is not None and wall - self._last[0] < self.window:
                return self._estimate
            busy, own = self._read()
            if busy is None:
                return 0.0
            if self._last is not None:
                last_wall, last_busy, last_own = self._last
                self._estimate = max(0.0, (busy - last_busy) - (own - last_own)) / (wall - last_wall)
            self._last = (wall, busy, own)
            return self._estimate


_share = CpuShare()


def fitted_threads(threads: int, share: CpuShare | None = None) -> int:
    """``threads`` lowered to the cores of this process's CPU set that other processes left free lately (rounded,
    at least 1); ``threads`` itself when ``VISION_FIT_THREADS=0`` or ``threads < 2``."""
    if threads < 2 or os.environ.get("VISION_FIT_THREADS", "1") == "0":
        return threads
    free = len(usable_cpus()) - (share or _share).busy_elsewhere()
    return max(1, min(threads, int(free + 0.5)))


def _workers(n: int) -> ThreadPoolExecutor:
    """A pool of at least ``n`` threads, made in this process (a forked child does not inherit the threads)."""
    global _pool, _pool_key
    with _pool_lock:
        pid, size = _pool_key
        if pid != os.getpid() or size < n:
            if _pool is not None and pid == os.getpid():
                _pool.shutdown(wait=False)
            _pool = ThreadPoolExecutor(max_workers=n, thread_name_prefix="vision-batch")
            _pool_key = (os.getpid(), n)
        assert _pool is not None
        return _pool


def _modes() -> tuple[bool, bool, bool, torch.dtype]:
    """The calling thread's thread-local modes: grad, inference, CPU autocast and its dtype."""
    return (
        torch.is_grad_enabled(),
        torch.is_inference_mode_enabled(),
        torch.is_autocast_enabled("cpu"),
        torch.get_autocast_dtype("cpu"),
    )


def _run(fn: Callable[[Tensor], Any], part: Tensor, threads: int, modes: tuple[bool, bool, bool, torch.dtype]) -> Any:
    """``fn(part)`` with ``threads`` intra-op threads and the caller's modes (:func:`_modes`), marked as inside a
    slice."""
    grad, inference, autocast, dtype = modes
    torch.set_num_threads(threads)
    _state.inside = True
    try:
        with (
            torch.inference_mode(inference),
            torch.set_grad_enabled(grad),
            torch.autocast("cpu", dtype=dtype, enabled=autocast),
        ):
            return fn(part)
    finally:
        _state.inside = False


def _concat(parts: Sequence[Any], where: str = "output") -> Any:
    """The slices' outputs joined along the batch dimension (tuples/lists element-wise)."""
    first = parts[0]
    if isinstance(first, Tensor):
        return torch.cat(parts)
    if isinstance(first, (tuple, list)):
        joined = [_concat([p[i] for p in parts], f"{where}[{i}]") for i in range(len(first))]
        return type(first)(joined)
    raise TypeError(f"split_batch: {where} is a {type(first).__name__}; the function must return tensors")


def split_batch(fn: Callable[[Tensor], Any], x: Tensor, *, min_per_slice: int = 1) -> Any:
    """``fn(x)``, computed as ``fn`` on slices of the batch in parallel threads when that can pay off.

    Args:
        fn: maps a batch ``[b, ...]`` to a tensor or a (nested) tuple/list of tensors whose first dimension is ``b``,
            each image's result independent of the other images (eval-mode networks, per-image NMS). It must be
            safe to call from several threads at once (no caches filled during the call).
        x: the batch ``[B, ...]``.
        min_per_slice: fewest images per slice.

    Returns:
        What ``fn(x)`` returns, outputs of the slices concatenated in batch order. Run as a plain ``fn(x)`` when
        ``x`` is not on the CPU, ``torch.get_num_threads() < 2``, ``B < 2 * min_per_slice``, or when called from
        inside a slice; on the CPU with :func:`fitted_threads` intra-op threads. With ``T`` intra-op threads,
        ``min(T, B // min_per_slice)`` slices each get ``T // slices`` threads; the caller's thread runs the first
        slice and its thread count is restored afterwards.
    """
    threads = torch.get_num_threads()
    slices = min(threads, x.shape[0] // max(1, min_per_slice)) if x.dim() else 0
    if x.device.type != "cpu" or getattr(_state, "inside", False):
        return fn(x)
    if slices < 2:
        fitted = fitted_threads(threads)
        if fitted == threads:
            return fn(x)
        torch.set_num_threads(fitted)
        try:
            return fn(x)
        finally:
            torch.set_num_threads(threads)
    inner = max(1, threads // slices)
    parts = x.tensor_split(slices)
    modes = _modes()
    pool = _workers(slices - 1)
    futures = [pool.submit(_run, fn, part, inner, modes) for part in parts[1:]]
    try:
        first = _run(fn, parts[0], inner, modes)
    finally:
        wait(futures)  # every slice has finished, also when the first one failed
        torch.set_num_threads(threads)  # MKL's thread count is process-wide: restore the caller's
    return _concat([first, *(f.result() for f in futures)])
