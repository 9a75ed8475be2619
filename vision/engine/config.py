"""Run configuration: the keys every task shares, recipes (``zoo/*.yaml``) and their resolution.

Precedence, lowest to highest: :data:`COMMON_DEFAULTS` < the task's defaults < the recipe file < ``key=value``
arguments. The fully resolved dict is what ``args.yaml`` records.
"""

from __future__ import annotations

import os
from collections.abc import Sequence
from pathlib import Path
from typing import Any

import yaml

from vision.utils.keys import ArgumentError, merge, parse_overrides

__all__ = ["COMMON_DEFAULTS", "find_recipe", "list_recipes", "resolve_args", "zoo_dir"]

COMMON_DEFAULTS: dict[str, Any] = {
    # keys every task shares (scripts rely on them)
    "recipe": "",
    "task": "",
    "model": "",
    "data": "",
    "fraction": 1.0,
    "epochs": 10,
    "batch": 32,
    "lr": 0.01,
    "device": "auto",
    "workers": 2,
    "weights": "",
    "resume": "",
    "seed": 0,
    "deterministic": False,
    "project": "runs",
    "name": "train",
    # model and optimisation
    "model_kwargs": {},
    "imgsz": 224,
    "optimizer": "sgd",
    "momentum": 0.9,
    "weight_decay": 5e-4,
    "schedule": "cosine",
    "warmup_epochs": 0.0,
    "min_lr_ratio": 0.01,
    "accumulate": 1,
    "clip_grad": 0.0,
    "ema": False,
    "ema_decay": 0.9998,
    "amp": "auto",
    "channels_last": "auto",
    "freeze": 0,
    "sync_bn": False,
    "compile": False,
    # robustness and outputs
    "nan_policy": "stop",
    "nan_skip_limit": 5,  # nan_policy=skip: stop after this many consecutive skipped steps
    "save_period": 0,
    "val_period": 1,
    "plots": True,
    "tensorboard": True,
    "exist_ok": False,
    "expected": {},
}

_OPEN_SECTIONS = ("model_kwargs", "expected", "augment")


def zoo_dir() -> Path:
    """The folder of recipes: ``$VISION_ZOO``, else ``zoo/`` of the source checkout, else the copy installed with the
    package (``vision/zoo``)."""
    env = os.environ.get("VISION_ZOO")
    if env:
        return Path(env)
    package = Path(__file__).resolve().parents[1]
    checkout = package.parent / "zoo"
    return checkout if checkout.is_dir() else package / "zoo"


def list_recipes() -> list[str]:
    folder = zoo_dir()
    return sorted(p.stem for p in folder.glob("*.yaml")) if folder.is_dir() else []


def find_recipe(name: str) -> Path:
    """A recipe by name (``zoo/<name>.yaml``) or path."""
    p = Path(name)
    if p.suffix in (".yaml", ".yml") and p.is_file():
        return p
    candidate = zoo_dir() / f"{name}.yaml"
    if candidate.is_file():
        return candidate
    from vision.registry import close_matches

    hint = close_matches(name, list_recipes())
    raise ArgumentError(
        f"unknown recipe {name!r}" + (f"; did you mean {hint[0]!r}?" if hint else "") + f" Recipes: {list_recipes()}"
    )


def _load_recipe(name: str) -> dict[str, Any]:
    path = find_recipe(name)
    data = yaml.safe_load(path.read_text(encoding="utf-8")) or {}
    if not isinstance(data, dict):
        raise ArgumentError(f"recipe {path} must be a mapping of keys to values")
    data["recipe"] = name
    return data


RESUME_OVERRIDABLE = ("resume", "device", "workers", "epochs", "save_period", "tensorboard", "plots")


def _resume_args(target: str, argv: Sequence[str]) -> dict[str, Any]:
    """The arguments of the run being resumed, with the few keys a resume may change applied."""
    from vision.engine.checkpoint import resume_args

    saved = resume_args(target)  # the newest complete checkpoint's, else args.yaml of a run without one yet
    for arg in argv:
        key = arg.split("=", 1)[0].strip()
        if key not in RESUME_OVERRIDABLE:
            raise ArgumentError(
                f"{key}= cannot change when resuming (the run continues with its own arguments); "
                f"a resume may only set {', '.join(RESUME_OVERRIDABLE)}"
            )
    args = parse_overrides(argv, saved, open_sections=_OPEN_SECTIONS)
    args["resume"] = str(target)
    return args


def _task_of_model(model: str | None) -> str:
    if not model:
        raise ArgumentError("no task: give recipe=NAME, or model=NAME (its registered task is used), or task=NAME")
    from vision.registry import resolve_entry

    task = resolve_entry(str(model)).task
    if not task:
        raise ArgumentError(f"model={model} has no registered task; give task=NAME")
    return task


def resolve_args(argv: Sequence[str], *, default_recipe: str = "") -> dict[str, Any]:
    """Resolve ``key=value`` arguments against the defaults, the task's keys and the recipe.

    With no ``recipe=`` (and no ``model=``/``task=`` instead) ``default_recipe`` is used (the command line passes the
    built-in default). The task is ``task=``, else the recipe's, else the registered task of ``model=``.
    """
    from vision.engine.task import get_task

    pre = {}
    for arg in argv:
        if "=" not in arg:
            raise ArgumentError(f"argument {arg!r} is not of the form key=value")
        key, value = arg.split("=", 1)
        pre[key.strip()] = value
    if pre.get("resume"):
        return _resume_args(pre["resume"], argv)
    recipe_name = pre.get("recipe") or ("" if ("model" in pre or "task" in pre) else default_recipe)
    recipe = _load_recipe(recipe_name) if recipe_name else {}
    task_name = pre.get("task") or recipe.get("task") or _task_of_model(pre.get("model") or recipe.get("model"))
    task_cls = get_task(task_name)
    defaults = merge(COMMON_DEFAULTS, task_cls.defaults, strict=False)
    for section in _OPEN_SECTIONS:
        defaults.setdefault(section, {})
    opened = {k: recipe.pop(k) for k in _OPEN_SECTIONS if k in recipe}
    try:
        defaults = merge(defaults, recipe, strict=True)
        for key, value in opened.items():  # a recipe's open section replaces the default one as a whole
            if not isinstance(value, dict):
                raise ArgumentError(f"{key} must be a mapping, got {value!r}")
            defaults[key] = value
    except ArgumentError as err:
        raise ArgumentError(f"recipe {recipe_name}: {err}") from None
    args = parse_overrides(argv, defaults, open_sections=_OPEN_SECTIONS)
    args["task"] = task_name
    return args
