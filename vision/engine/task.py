"""The task contract: a task supplies data, the model, evaluation and plots; the :class:`Trainer` owns the loop.

Each task registers itself with :func:`register_task` and declares the extra ``key=value`` keys it accepts
(``Task.defaults``) on top of the keys every task shares (:data:`vision.engine.config.COMMON_DEFAULTS`).

The model's side of the contract:

- ``model.loss(batch) -> dict[str, Tensor]``: scalar losses, summed for the backward pass (a task may call the model
  differently by overriding :meth:`Task.compute_loss`, e.g. ``model.loss(images, targets)``); or, for models that
  run several optimisers (GANs),
- ``model.configure_optimizers(args) -> dict[str, Optimizer]`` and
  ``model.train_step(batch, optimizers, *, step, autocast) -> dict[str, float]`` (the model steps its optimisers).
"""

from __future__ import annotations

import os
from collections.abc import Callable, Mapping
from pathlib import Path
from typing import Any, ClassVar

import torch
from torch import nn
from torch.utils.data import DataLoader, Dataset

from vision.registry import TASKS, Entry, UnknownNameError, close_matches

__all__ = ["TASKS", "Task", "get_task", "move_to", "register_task"]


def register_task(cls: type[Task]) -> type[Task]:
    """Class decorator: register a task in :data:`vision.registry.TASKS` under ``cls.name`` (the builder is the
    class), so that ``tools/train.py task=NAME``, ``tools/infer.py`` and plugins find it."""
    known = TASKS._entries.get(cls.name)
    if known is not None:
        if known.builder is cls:
            return cls
        raise ValueError(f"task {cls.name!r} is already registered by {known.source}")
    TASKS.add(Entry(name=cls.name, builder=cls, task=cls.name, source=cls.__module__))
    return cls


def get_task(name: str) -> type[Task]:
    """The task class registered as ``name`` (built-in tasks are imported on first use)."""
    try:
        return TASKS.get(name).builder
    except UnknownNameError:
        close = close_matches(str(name), TASKS, n=1)
        hint = f" (did you mean {close[0]!r}?)" if close else ""
        raise ValueError(f"unknown task {name!r}{hint}; known tasks: {', '.join(TASKS)}") from None


def move_to(obj: Any, device: torch.device, *, non_blocking: bool = True) -> Any:
    """Move tensors inside nested lists/tuples/dicts to ``device``."""
    if isinstance(obj, torch.Tensor):
        return obj.to(device, non_blocking=non_blocking)
    if isinstance(obj, Mapping):
        return {k: move_to(v, device, non_blocking=non_blocking) for k, v in obj.items()}
    if isinstance(obj, list | tuple):
        moved = [move_to(v, device, non_blocking=non_blocking) for v in obj]
        return type(obj)(moved) if isinstance(obj, tuple) and not hasattr(obj, "_fields") else moved
    return obj


class Task:
    """Base class of a training task.

    A task is one folder under ``vision/tasks/`` (or a plugin's module) that registers its subclass with
    :func:`register_task`; the engine finds it by name and never imports it.

    Attributes:
        name: the task's name (``args["task"]``).
        main_metric: the validation metric that picks ``best`` (a key of :meth:`evaluate`'s result).
        maximize: whether a larger ``main_metric`` is better.
        defaults: extra ``key=value`` keys of this task with their defaults.
        schema: the declared type and range of those keys.
    """

    name: ClassVar[str] = "base"
    main_metric: ClassVar[str] = "loss"
    maximize: ClassVar[bool] = False
    defaults: ClassVar[dict[str, Any]] = {}
    #: declared types and ranges of this task's keys (``vision.utils.keys`` rules); undeclared keys are checked
    #: against the type of their default
    schema: ClassVar[dict[str, Any]] = {}
    #: extra ``key=value`` keys of ``tools/infer.py`` for this task (on top of the common ones)
    infer_keys: ClassVar[dict[str, Any]] = {}

    @classmethod
    def infer(cls, args: dict[str, Any]) -> Path:
        """Inference on files (``tools/infer.py``): run the model of ``args`` on ``args["source"]``, write the results
        into a new run folder and return it."""
        raise NotImplementedError(f"task {cls.name!r} has no inference on files")

    def __init__(self, args: dict[str, Any]) -> None:
        self.args = args

    # ----------------------------------------------------------------------------------------------- data and model
    def build_datasets(self) -> tuple[Dataset, Dataset | None]:
        """``(train, val)`` datasets (``val`` may be ``None``)."""
        raise NotImplementedError

    def preflight(self) -> None:
        """Check, before any run folder is created and before the first epoch, the resources the run will need later
        (e.g. an evaluation network's weights); raise ``FileNotFoundError``/``ValueError`` naming what is missing."""

    def collate_fn(self) -> Callable[[list[Any]], Any] | None:
        """The DataLoader collate function (``None``: PyTorch's default)."""
        return None

    def train_collate_fn(self, device: torch.device, workers: int) -> Callable[[list[Any]], Any] | None:
        """The training loader's collate function (default: :meth:`collate_fn`). With ``workers > 0`` a task may move
        per-batch work here (e.g. batch augmentation when training on the CPU), to run in the loader workers beside
        the training step instead of before it."""
        return self.collate_fn()

    def build_model(self) -> nn.Module:
        """The model, with pretrained weights loaded as ``args["weights"]`` asks."""
        raise NotImplementedError

    def prepare_batch(self, batch: Any, device: torch.device, *, train: bool) -> Any:
        """Move a collated batch to ``device`` and finish it there (GPU augmentation, normalisation ...)."""
        return move_to(batch, device)

    def compute_loss(self, model: nn.Module, batch: Any) -> dict[str, torch.Tensor]:
        """The training losses of one prepared batch (default: ``model.loss(batch)``)."""
        return model.loss(batch)

    def cut_batch(self, batch: Any, parts: int) -> list[Any] | None:
        """A prepared batch cut into ``parts`` equal batches of the same form, each a valid argument of
        :meth:`compute_loss` whose loss is a mean over its images (the CPU step runs them in parallel, see
        :mod:`vision.engine.replicas`); ``None`` (the default) when this task's batches cannot be cut."""
        return None

    # ----------------------------------------------------------------------------------------------- evaluation
    def evaluate(self, model: nn.Module, loader: DataLoader, device: torch.device, *, autocast: Any) -> dict[str, Any]:
        """Validation metrics, reduced over all ranks (every rank returns the same dict)."""
        raise NotImplementedError

    def scalar_metrics(self, metrics: Mapping[str, Any]) -> dict[str, float]:
        """The numbers of :meth:`evaluate`'s result that go to ``metrics.csv``."""
        return {k: float(v) for k, v in metrics.items() if isinstance(v, int | float)}

    # ----------------------------------------------------------------------------------------------- outputs
    def metadata(self) -> dict[str, Any]:
        """Stored in the weights file's header (class names, preprocessing) for inference."""
        return {}

    def on_epoch_start(self, epoch: int, model: nn.Module) -> None:
        """Every rank, before epoch ``epoch`` (0-based) trains: e.g. switch mosaic off for the last epochs."""

    def on_step_end(self, run_dir: Path, step: int, model: nn.Module) -> None:
        """Rank 0 only, after optimiser step ``step`` (1-based): e.g. save a sample grid every N steps. ``model`` is
        the model to evaluate (the EMA copy when EMA is on)."""

    def on_epoch_end(self, run_dir: Path, epoch: int, metrics: Mapping[str, Any], model: nn.Module) -> None:
        """Rank 0 only: task-specific artefacts (confusion matrix, sample predictions)."""

    def say(self, line: str) -> None:
        """Print one line about the run's set-up (its data, its model) on rank 0 only (``RANK`` as torchrun sets it,
        so this works before the process group exists)."""
        if int(os.environ.get("RANK", "0")) == 0:
            print(line, flush=True)

    def say_no_validation(self, why: str) -> None:
        """Say in one line that the run trains without validation; ``why`` starts it (e.g. ``data=X has no val
        split``)."""
        self.say(f"{why}: training runs without validation (weights/last.safetensors only)")

    def require_methods(self, model: nn.Module, methods: Mapping[str, str], hint: str = "") -> None:
        """Refuse, in one line naming ``model=``, a model that lacks a method this task calls (``methods``: name ->
        its signature, shown in the message); e.g. a plugin's plain ``nn.Module`` registered for a task whose
        training needs its ``loss``. ``hint`` ends the message (what to build instead)."""
        missing = [f"{name}()" for name in methods if not callable(getattr(model, name, None))]
        if missing:
            from vision.utils.keys import ArgumentError

            needs = " and ".join(f"{name}{signature}" for name, signature in methods.items())
            raise ArgumentError(f"model={self.args.get('model')} ({type(model).__name__}) has no "
                                f"{' and no '.join(missing)}: a {self.name} model needs {needs}{hint}")  # fmt: skip

    def trained_weights(self, run_dir: Path) -> Path:
        """The weights file of ``run_dir`` that inference should use: ``weights/best.safetensors`` when the run wrote
        one (it validated), else ``weights/last.safetensors`` (a run without validation writes no best)."""
        best = Path(run_dir) / "weights" / "best.safetensors"
        return best if best.is_file() else best.with_name("last.safetensors")

    def inference_hint(self, run_dir: Path) -> str:
        """The command that runs inference with the trained weights (:meth:`trained_weights`)."""
        return f"python tools/infer.py weights={self.trained_weights(run_dir)} source=<images>"
