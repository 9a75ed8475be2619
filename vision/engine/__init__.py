"""The training engine: one loop for every task (see :mod:`vision.engine.trainer`)."""

from vision.engine.task import TASKS, Task, register_task
from vision.engine.trainer import NonFiniteLossError, Trainer, train

__all__ = ["TASKS", "NonFiniteLossError", "Task", "Trainer", "register_task", "train"]
