"""Data-parallel training step on the CPU inside one process: the batch is cut into equal parts, each part runs its
forward and backward pass on its own copy of the model in its own thread, and the gradients are summed into the
model in a fixed order.

Why: a training step whose every operator is split over all cores waits, at the end of each operator, for the slowest
core. When another process shares a core, every operator of the step is late (measured for YOLO-n on 2 cores beside
one busy process: convolution backward 2.2x slower, the step 1.7x); and even alone, operator-level splitting of a
small model leaves cores idle (1 thread -> 2 threads: 1.55x). Parts that run whole forward/backward passes on one
core each meet only once per step, so a busy neighbour costs a fair share of the cores instead of a time slice per
operator (the step 1.4x slower instead of 1.7x), and alone the step is ~12 % faster. Numbers in
``benchmarks/yolo.py`` and the README.

What stays the same: the gradient is the mean of the parts' gradients (each part's loss is scaled by ``1 / parts``
before its backward pass), which equals the whole batch's for losses that are means over the batch; the optimizer,
EMA, scheduler, checkpoints and everything after the backward pass are untouched. What changes, as with
``DistributedDataParallel``: batch norm normalises each part with that part's statistics, and the running statistics
are those of the first part (DDP keeps rank 0's). Each part computes with a fixed thread count, so a run is as
reproducible as before (same weights for the same seed, machine and ``cpu_replicas``) and independent of the load;
the result depends on ``cpu_replicas`` as it depended on the thread count.

Used only where it is exact to do so: the CPU, one process, a task that can cut its batches
(:meth:`~vision.engine.task.Task.cut_batch`), no ``compile``, no model-driven step, and a model whose loss draws no
random numbers (dropout, drop-path, random proposal sampling): random draws from several threads would arrive in a
different order in each run, so a model that draws any (found by running the loss once on a copy before training)
trains as before.
"""

from __future__ import annotations

import contextlib
import copy
import random
from collections.abc import Callable, Sequence
from concurrent.futures import ThreadPoolExecutor, wait
from typing import Any

import numpy as np
import torch
from torch import Tensor, nn
from torch.utils.data import DataLoader

from vision.engine._rng import capture_rng, restore_rng
from vision.engine.task import Task
from vision.utils.keys import ArgumentError

__all__ = [
    "CpuReplicas",
    "batch_norm_starved",
    "cut_tensors",
    "draws_random_numbers",
    "make_replicas",
    "plan_parts",
    "refuse_one_image_steps",
]

#: images each part keeps at least (batch norm over fewer is noisy)
MIN_PART_IMAGES = 4
#: parts ``cpu_replicas=auto`` uses at most (each adds Python work that holds the GIL)
MAX_AUTO_PARTS = 4


def plan_parts(requested: int | str, *, threads: int, local_batch: int) -> tuple[int, int]:
    """``(parts, threads per part)`` for ``cpu_replicas=requested`` with ``threads`` intra-op threads available.

    ``auto``: as many parts as threads, at most :data:`MAX_AUTO_PARTS`, each with at least :data:`MIN_PART_IMAGES`
    images, and a divisor of the batch; the threads are shared out evenly. An integer is taken as given (it must
    divide the batch). 1 part means the usual step.

    Raises:
        ValueError: an integer that does not divide ``local_batch``.
    """
    if requested == "auto":
        limit = max(1, min(threads, MAX_AUTO_PARTS, local_batch // MIN_PART_IMAGES))
        parts = max(k for k in range(1, limit + 1) if local_batch % k == 0)
    else:
        parts = int(requested)
        if local_batch % parts:
            raise ValueError(f"cpu_replicas={parts} does not divide the batch of {local_batch} images per process")
    return parts, max(1, threads // parts)


def draws_random_numbers(model: nn.Module, task: Task, batch: Any) -> bool:
    """Whether ``task.compute_loss`` of ``batch`` on a training-mode copy of ``model`` draws from Python's, NumPy's or
    torch's global random generator (the caller restores their states; ``model`` is not touched)."""
    before = random.getstate(), np.random.get_state(), torch.get_rng_state()
    task.compute_loss(copy.deepcopy(model).train(), batch)
    after = random.getstate(), np.random.get_state(), torch.get_rng_state()
    same_numpy = all(np.array_equal(x, y) for x, y in zip(before[1][1:3], after[1][1:3]))
    return before[0] != after[0] or not same_numpy or not torch.equal(before[2], after[2])


class _StarvedError(Exception):
    """Stops the probe of :func:`batch_norm_starved` at the first layer that would fail."""


def batch_norm_starved(model: nn.Module, task: Task, batch: Any) -> str | None:
    """The name of the first batch-norm layer to which ``task.compute_loss`` of ``batch`` on a training-mode copy of
    ``model`` gives one value per channel (PyTorch then stops training: "Expected more than 1 value per channel when
    training"), or ``None``. ``model`` is not touched; the caller keeps the random states. ``SyncBatchNorm`` is
    left out (it counts the values of every process).

    Example:
        >>> net = nn.Sequential(nn.Conv2d(3, 4, 3), nn.AdaptiveAvgPool2d(1), nn.BatchNorm2d(4))  # doctest: +SKIP
        >>> batch_norm_starved(net, task, one_image_batch)  # doctest: +SKIP
        '2'
    """

    def norms(net: nn.Module) -> dict[nn.Module, str]:
        return {m: name or type(m).__name__ for name, m in net.named_modules()
                if isinstance(m, nn.modules.batchnorm._BatchNorm) and not isinstance(m, nn.SyncBatchNorm)}  # fmt: skip

    if not norms(model):
        return None
    probe = copy.deepcopy(model).train()
    names, found = norms(probe), []

    def check(module: nn.Module, inputs: tuple[Any, ...]) -> None:
        x = inputs[0] if inputs else None
        if isinstance(x, Tensor) and x.dim() >= 2 and x.numel() <= x.shape[1]:
            found.append(names[module])
            raise _StarvedError

    handles = [m.register_forward_pre_hook(check) for m in names]
    try:
        task.compute_loss(probe, batch)
    except _StarvedError:
        pass
    finally:
        for handle in handles:
            handle.remove()
    return found[0] if found else None


def _first_batch(loader: DataLoader, task: Task, device: torch.device, size: int) -> Any:
    """The loader's first ``size`` images of epoch 0, collated and prepared for training."""
    data = loader.dataset
    items = [data[i] for i in range(min(len(data), size))]  # type: ignore[arg-type]
    return task.prepare_batch(loader.collate_fn(items), device, train=True)


def refuse_one_image_steps(
    model: nn.Module, task: Task, *, loader: DataLoader, device: torch.device, batch: int, world_size: int
) -> None:
    """Refuse, before training starts, a training step of one image (``batch`` over ``world_size`` processes) for
    a model whose batch norm would get one value per channel from it (:func:`batch_norm_starved`). Only a step of one
    image is probed; the loader drops a last incomplete batch, so every step has the full batch.

    Raises:
        ArgumentError: naming ``batch=``, the layer and the smallest ``batch=`` that works.
    """
    if loader.batch_size != 1:
        return
    state = capture_rng()
    try:
        layer = batch_norm_starved(model, task, _first_batch(loader, task, device, 1))
    finally:
        restore_rng(state)
    if layer is not None:
        each = f" over {world_size} processes" if world_size > 1 else ""
        raise ArgumentError(
            f"batch={batch}{each} makes training steps of 1 image, which give the batch-norm layer {layer} one value "
            f"per channel: it cannot train on that; give batch={2 * world_size} or more"
        )


class CpuReplicas:
    """``parts`` copies of ``model`` (the first is ``model`` itself) that run one training step's parts in threads.

    Args:
        model: the model being trained (receives the summed gradients; the copies follow its weights and buffers).
        task: the task, for :meth:`~vision.engine.task.Task.cut_batch` and
            :meth:`~vision.engine.task.Task.compute_loss`.
        parts: copies, >= 2.
        threads: intra-op threads of each part.
    """

    def __init__(self, model: nn.Module, task: Task, parts: int, threads: int) -> None:
        if parts < 2:
            raise ValueError(f"CpuReplicas needs >= 2 parts, got {parts}")
        self.model, self.task, self.parts, self.threads = model, task, parts, threads
        self.copies = [copy.deepcopy(model) for _ in range(parts - 1)]
        self._pool = ThreadPoolExecutor(parts - 1, thread_name_prefix="vision-part")
        self._source = [*model.parameters(), *model.buffers()]
        self._targets = [[*c.parameters(), *c.buffers()] for c in self.copies]

    def _sync(self) -> None:
        """The copies take the model's current weights and buffers (after an optimizer step, a resume, a restore)."""
        with torch.no_grad():
            for targets in self._targets:
                torch._foreach_copy_(targets, self._source)

    def _run(self, i: int, part: Any, backward: Callable[[Tensor], None], autocast: Callable[[], Any]) -> Any:
        torch.set_num_threads(self.threads)  # this thread's OpenMP team size (per thread)
        model = self.model if i == 0 else self.copies[i - 1]
        with autocast():
            losses = self.task.compute_loss(model, part)
        loss = sum(losses.values())
        backward(loss / self.parts)
        return {k: v.detach() for k, v in losses.items()}, loss.detach()

    def step(
        self, batch: Any, backward: Callable[[Tensor], None], autocast: Callable[[], Any] = contextlib.nullcontext
    ) -> tuple[dict[str, Tensor], Tensor] | None:
        """Forward and backward passes of one prepared batch, its parts in parallel; the model's ``.grad`` gets the
        sum of the parts' gradients of ``loss / parts`` (added to what it holds: gradient accumulation works).

        Args:
            batch: a prepared batch (:meth:`~vision.engine.task.Task.prepare_batch`).
            backward: called with each part's scaled loss (e.g. ``lambda l: scaler.scale(l / accumulate).backward()``).
            autocast: a context-manager factory entered in each part's thread (autocast is per thread).

        Returns:
            ``(losses, loss)``: the parts' mean of each loss and of their sum, or ``None`` when the task cannot cut
            this batch (the caller runs its usual step).
        """
        cut = self.task.cut_batch(batch, self.parts)
        if cut is None:
            return None
        self._sync()
        outer = torch.get_num_threads()
        futures = [self._pool.submit(self._run, i, cut[i], backward, autocast) for i in range(1, self.parts)]
        try:
            results = [self._run(0, cut[0], backward, autocast)] + [f.result() for f in futures]
        finally:
            wait(futures)  # a failed part: the others finish before the caller's thread count comes back
            torch.set_num_threads(outer)
        self._gather_grads()
        losses = {k: sum(r[0][k] for r in results) / self.parts for k in results[0][0]}
        return losses, sum(r[1] for r in results) / self.parts

    def _gather_grads(self) -> None:
        with torch.no_grad():
            params = list(self.model.parameters())
            for c in self.copies:  # in order: the same sums in every run
                for p, q in zip(params, c.parameters()):
                    if q.grad is None:
                        continue
                    p.grad = q.grad if p.grad is None else p.grad.add_(q.grad)
                    q.grad = None


def make_replicas(
    model: nn.Module,
    task: Task,
    *,
    requested: int | str,
    local_batch: int,
    single_cpu_process: bool,
    plain_step: bool,
    loader: DataLoader,
    device: torch.device,
    log: Callable[[str], Any],
) -> CpuReplicas | None:
    """The :class:`CpuReplicas` of a training run, or ``None`` for the usual step; says which, when it matters.

    Args:
        requested: ``cpu_replicas`` (``auto`` or a number of parts; 1 turns the parallel step off).
        local_batch: images per step in this process.
        single_cpu_process: training on the CPU in one process (no DDP).
        plain_step: the trainer's own forward/backward step (not a model's ``train_step``, not ``compile``).
        loader: the training loader: its first ``local_batch`` images, prepared, are the batch the random-number
            probe runs (only when parts would be used; the random states are left as they were).
        device: where the batch goes.
        log: prints one line.
    """
    if not (single_cpu_process and plain_step):
        if requested not in ("auto", 1):
            log(f"cpu_replicas={requested} is used only by the trainer's own step on the CPU in one process: ignored")
        return None
    parts, threads = plan_parts(requested, threads=torch.get_num_threads(), local_batch=local_batch)
    if parts < 2:
        return None
    state = capture_rng()
    try:
        batch = _first_batch(loader, task, device, local_batch)
        cut = task.cut_batch(batch, parts)
        cuts = cut is not None
        draws = cuts and draws_random_numbers(model, task, batch)
        starved = (
            cut is not None and not draws and local_batch // parts == 1 and batch_norm_starved(model, task, cut[0])
        )
    finally:
        restore_rng(state)
    if starved:  # a part of one image: the batch norm of each part would get one value per channel
        fits = max(k for k in range(1, local_batch + 1) if local_batch % k == 0 and local_batch // k >= 2)
        raise ArgumentError(
            f"cpu_replicas={requested} cuts each step's {local_batch} images into parts of 1 image, which give the "
            f"batch-norm layer {starved} one value per channel: it cannot train on that; give cpu_replicas={fits} or "
            f"fewer (parts of 2 images or more), or batch={2 * parts} or more"
        )
    if not cuts:
        why = f"the {task.name} task's batches cannot be cut into parts"
    elif draws:
        why = "the model draws random numbers in its training loss (e.g. dropout)"
    else:
        log(f"cpu_replicas={parts}: each step's batch runs as {parts} parts of {local_batch // parts} images on "
            f"{threads} thread(s) each, in parallel")  # fmt: skip
        return CpuReplicas(model, task, parts, threads)
    if requested != "auto":
        log(f"cpu_replicas={requested}: one part ({why})")
    return None


def cut_tensors(items: Sequence[Any], parts: int) -> list[tuple[Any, ...]] | None:
    """A batch tuple cut into ``parts`` tuples: each of ``items`` (a tensor or list with the batch as first dimension,
    or a dict of them) sliced into equal consecutive parts; ``None`` when the batch does not divide or an item is of
    another kind."""
    sizes = {_length(x) for x in items}
    if len(sizes) != 1 or None in sizes:
        return None
    n = sizes.pop()
    if n % parts or n // parts == 0:
        return None
    step = n // parts
    return [tuple(_slice(x, i * step, (i + 1) * step) for x in items) for i in range(parts)]


def _length(x: Any) -> int | None:
    if isinstance(x, Tensor) and x.dim() > 0:
        return x.shape[0]
    if isinstance(x, list):
        return len(x)
    if isinstance(x, dict) and x:
        lengths = {_length(v) for v in x.values()}
        return lengths.pop() if len(lengths) == 1 else None
    return None


def _slice(x: Any, a: int, b: int) -> Any:
    if isinstance(x, dict):
        return {k: _slice(v, a, b) for k, v in x.items()}
    return x[a:b]
