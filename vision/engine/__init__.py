"""The training engine: one loop for every task (see :mod:`vision.engine.trainer`)."""

from pathlib import Path
from typing import Any

from vision.engine.task import TASKS, Task, register_task
from vision.engine.trainer import NonFiniteLossError, Trainer

__all__ = ["TASKS", "NonFiniteLossError", "Task", "Trainer", "register_task", "train"]


def train(argv: list[str] | None = None, **overrides: Any) -> Path:
    """Python entry point: ``train(["recipe=resnet18_digits"], epochs=3)`` -> run folder."""
    from vision.engine.config import resolve_args

    args = list(argv or []) + [f"{k}={v}" for k, v in overrides.items()]
    return Trainer(resolve_args(args)).fit()
