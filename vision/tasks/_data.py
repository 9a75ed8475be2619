"""``data=NAME`` through :data:`vision.registry.DATASETS`: the one way every task turns a registered name into its
splits, so a plugin's dataset works with ``tools/train.py data=<its name>`` like the built-in ones."""

from __future__ import annotations

import inspect
from collections.abc import Mapping, Sequence
from pathlib import Path
from typing import Any

from torch.utils.data import Dataset

from vision.registry import DATASETS
from vision.utils.keys import ArgumentError

__all__ = ["check_class_names", "folder_splits", "registered_split", "split_datasets"]


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


def _shown(names: Sequence[str]) -> str:
    return str(list(names)) if len(names) <= 12 else f"{list(names)[:12]} ... ({len(names)} classes)"


def check_class_names(
    model: Sequence[str] | None, data: Sequence[str] | None, *, model_label: str, data_label: str
) -> None:
    """Refuse a model whose class list is not the data's: label ``i`` must mean the same class to both.

    Names are compared in order, ignoring case and surrounding spaces; nothing is checked when either list is
    unknown (empty or ``None``).

    Args:
        model: the model's class names (e.g. ``model.categories``, a teacher's).
        data: the data set's class names, in label order.
        model_label, data_label: how the message names the two (``"the model"``, ``"data=bccd"``).

    Raises:
        ArgumentError: one line naming both lists: a different count, the same classes in another order, or other
            classes.
    """
    if not model or not data:
        return
    a, b = [str(n).strip().casefold() for n in model], [str(n).strip().casefold() for n in data]
    if a == b:
        return
    if len(a) != len(b):
        why = f"{model_label} has {len(a)} classes {_shown(model)}, {data_label} has {len(b)}: {_shown(data)}"
    elif sorted(a) == sorted(b):
        i = next(i for i, (x, y) in enumerate(zip(a, b)) if x != y)
        why = (f"{model_label}'s classes {_shown(model)} are {data_label}'s {_shown(data)} in another order (label {i} "
               f"is {model[i]!r} to one, {data[i]!r} to the other)")  # fmt: skip
    else:
        other = ", ".join(sorted(set(a) - set(b)))
        why = f"{model_label}'s classes {_shown(model)} are not {data_label}'s {_shown(data)} ({other} unknown there)"
    raise ArgumentError(f"{why}: label i must mean the same class to both")


def folder_splits(root: Path, data: str) -> tuple[Path, Path | None]:
    """Where the training and validation images of the folder ``root`` (given as ``data=<data>``) are.

    ``train/`` and ``val/`` give ``(root/train, root/val)``; ``train/`` alone gives ``(root/train, None)`` and so
    does a folder without ``train/`` (``(root, None)``): the caller holds out ``val_fraction`` of it. ``train/``
    beside other folders but no ``val/`` (``valid/``, ``test/`` ...) is refused rather than trained without
    validation: which of them is meant is the user's call.

    Raises:
        ArgumentError: ``train/`` beside other folders and no ``val/``, naming them.
    """
    train, val = root / "train", root / "val"
    if not train.is_dir():
        return root, None
    if val.is_dir():
        return train, val
    others = sorted(p.name for p in root.iterdir() if p.is_dir() and not p.name.startswith(".") and p.name != "train")
    if others:
        found = ", ".join(f"{n}/" for n in ["train", *others])
        raise ArgumentError(
            f"data={data}: found folders {found} but no val/; expected train/ and val/ class folders (rename "
            f"{others[0]}/ to val/ to validate on it), train/ alone (split by val_fraction) or one folder of "
            "class folders"
        )
    return train, None
