"""Small pieces of the training loop: the loss module DDP wraps, seeding, parameter freezing, loader threads."""

from __future__ import annotations

import contextlib
import random
from collections.abc import Callable
from typing import Any

import numpy as np
import torch
from torch import nn

from vision.engine.task import Task
from vision.utils.parallel import usable_cpus

__all__ = ["LossModule", "amp_dtype", "cpu_workers", "freeze_parameters", "seed_everything", "single_threaded_worker"]


class LossModule(nn.Module):
    """Routes ``forward`` to the task's loss so DDP's forward hooks see the loss computation."""

    def __init__(self, model: nn.Module, task: Task) -> None:
        super().__init__()
        self.model = model
        self._compute = task.compute_loss

    def forward(self, batch: Any) -> dict[str, torch.Tensor]:
        return self._compute(self.model, batch)


def amp_dtype(amp: Any, *, cuda: bool) -> torch.dtype | None:
    """The autocast dtype of ``amp=`` (``auto``: bf16 on CUDA, off elsewhere; ``off``/``false``: ``None``)."""
    text = str(amp).lower()
    if text == "auto":
        text = "bf16" if cuda else "off"
    if text not in ("off", "false", "bf16", "fp16"):
        raise ValueError(f"amp={amp!r} is not one of auto, off, bf16, fp16")
    return {"bf16": torch.bfloat16, "fp16": torch.float16}.get(text)


def seed_everything(seed: int) -> None:
    """Seed Python, NumPy and torch."""
    random.seed(seed)
    np.random.seed(seed % (2**32))
    torch.manual_seed(seed)


def freeze_parameters(freeze: int | str | list[str], model: nn.Module) -> None:
    """``freeze=N`` (the first N declared stages) or module-name prefixes: those parameters stop training."""
    if isinstance(freeze, int):
        if freeze <= 0:
            return
        stages = getattr(model, "stages", None)
        if not stages:
            raise ValueError(f"freeze={freeze}: {type(model).__name__} has no stages; name modules instead")
        prefixes = [p for s in stages[:freeze] for p in s.modules]
    else:
        prefixes = [freeze] if isinstance(freeze, str) else list(freeze)
    names = dict(model.named_parameters())
    hit = 0
    for name, p in names.items():
        if any(name == f or name.startswith(f + ".") for f in prefixes):
            p.requires_grad_(False)
            hit += 1
    if hit == 0:
        raise ValueError(f"freeze={freeze!r} matched no parameter of {type(model).__name__}")


def cpu_workers(requested: int, device: torch.device, log: Callable[[str], Any]) -> int:
    """Data-loader workers for training on ``device``: on the CPU only as many as the cores this process may run on
    minus the training step's intra-op threads (``torch.get_num_threads()``), so that workers never share a core with
    the step; says so when it lowers ``requested``. With workers, this process is made ready to fork them
    (:func:`opencv_before_fork`).

    A worker on one of the step's cores makes every operator of the step wait for the thread that shares its core:
    on 2 cores with 2 threads, YOLO-n on BCCD at 320 px took 24.0 s per epoch with one worker and 18.9 s with the
    loading done in this process (``workers=0``, which ultralytics also uses on the CPU). Fewer threads
    (``OMP_NUM_THREADS``, ``torch.set_num_threads``) leave cores to workers.
    """
    workers = requested
    if device.type == "cpu":
        cores = len(usable_cpus())
        threads = torch.get_num_threads()
        spare = max(0, cores - threads)
        if requested > spare:
            where = "the loading runs in this process" if spare == 0 else "the other cores run the training step"
            log(f"workers={requested} on {cores} CPU cores with {threads} training threads: using {spare} ({where})")
            workers = spare
    if workers > 0:
        opencv_before_fork()
    return workers


def single_threaded_worker(_worker_id: int) -> None:
    """``worker_init_fn`` of data loaders: one torch thread inside a worker process, so that ``workers`` processes
    never start ``workers x cores`` spinning threads beside the training step (OpenCV: :func:`opencv_before_fork`)."""
    torch.set_num_threads(1)


def opencv_before_fork() -> None:
    """One OpenCV thread in this process, set before loader workers are forked (they inherit it).

    Not in the worker: a forked child calling ``cv2.setNumThreads`` waits forever for the threads of the pool the
    parent had started (e.g. by drawing the validation samples), which do not exist in the child -- a training run
    hung at its second epoch that way. Set in the parent, no pool is ever started, and the children's OpenCV calls
    (decoding, resizing) run single-threaded.
    """
    with contextlib.suppress(ImportError):
        import cv2

        cv2.setNumThreads(1)
