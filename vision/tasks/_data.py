"""``data=NAME`` through :data:`vision.registry.DATASETS`: the one way every task turns a registered name into its
splits, so a plugin's dataset works with ``tools/train.py data=<its name>`` like the built-in ones."""

from __future__ import annotations

import inspect
from collections.abc import Mapping
from typing import Any

from torch.utils.data import Dataset

from vision.registry import DATASETS

__all__ = ["registered_split", "split_datasets"]


def split_datasets(task: str) -> list[str]:
    """Names of the registered datasets of ``task`` whose builder takes ``split=`` (usable as ``data=NAME``)."""
    return [e.name for e in DATASETS.entries() if e.task == task and _takes(e.builder, "split")]


def _takes(builder: Any, key: str) -> bool:
    try:
        return key in inspect.signature(builder).parameters
    except (TypeError, ValueError):
        return False


def registered_split(
    name: str, task: str, split: str, offered: Mapping[str, Any], options: Mapping[str, Any] | None = None
) -> Dataset | None:
    """The ``split`` of registered dataset ``name``, or ``None`` when ``name`` is no such dataset of ``task``.

    Args:
        name: the ``data=`` value.
        task: the task asking (a dataset of another task is refused with a message naming both).
        split: ``"train"`` or ``"val"``.
        offered: arguments the task can give (``transform``, ``size``, ``masks`` ...); only those the builder's
            signature names are passed.
        options: the dataset's own keys from the recipe (e.g. ``synthetic: {train: 512}``), passed as they are.
    """
    if name not in DATASETS:
        return None
    entry = DATASETS.get(name)
    if entry.task != task and task not in entry.tags:
        raise ValueError(f"data={name!r} is a {entry.task} dataset, not one for task {task!r}")
    if not _takes(entry.builder, "split"):
        return None
    kwargs = {k: v for k, v in offered.items() if _takes(entry.builder, k)}
    return entry.builder(split=split, **kwargs, **dict(options or {}))
