"""Run configuration: the keys every task shares, recipes (``zoo/*.yaml``) and their resolution.

Precedence, lowest to highest: :data:`COMMON_DEFAULTS` < the task's defaults < the recipe file < ``key=value``
arguments. The fully resolved dict is what ``args.yaml`` records.
"""

from __future__ import annotations

import os
from collections.abc import Mapping, Sequence
from pathlib import Path
from typing import Any

import yaml

from vision.utils.keys import (
    ArgumentError,
    Rule,
    auto_or_flag,
    auto_or_integer,
    check_keys,
    flag,
    integer,
    integer_or_names,
    merge,
    number,
    one_of,
    override_key,
    parse_overrides,
)

__all__ = [
    "COMMON_DEFAULTS",
    "COMMON_SCHEMA",
    "SHARED_MODEL_KEYS",
    "check_resume_epochs",
    "data_path",
    "find_recipe",
    "list_recipes",
    "resolve_args",
    "zoo_dir",
]

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
    "cpu_replicas": "auto",  # the CPU step's batch as parallel parts (vision.engine.replicas); 1: off
    # robustness and outputs
    "nan_policy": "stop",
    "nan_skip_limit": 5,  # nan_policy=skip: stop after this many consecutive skipped steps
    "save_period": 0,
    "val_period": 1,
    "plots": True,
    "tensorboard": True,
    "exist_ok": False,
    "expected": {},
    # fine-tuning: with pretrained weights= and a new head, the pretrained body trains at lr * backbone_lr_mult
    "backbone_lr_mult": 0.1,
}

#: the declared type and range of each common key (a task adds its own in ``Task.schema``); keys without a rule
#: are checked against the type of their default. Checked by :func:`resolve_args` before anything is created.
COMMON_SCHEMA: dict[str, Rule] = {
    "fraction": number(0.0, 1.0, lo_open=True),
    "epochs": integer(1),
    "batch": integer(1),
    "lr": number(0.0, lo_open=True),
    "workers": integer(0),
    "seed": integer(0),
    "deterministic": flag(),
    "imgsz": integer(1),
    "optimizer": one_of("sgd", "adamw", "adam"),
    "momentum": number(0.0, 1.0),
    "weight_decay": number(0.0),
    "schedule": one_of("cosine", "linear", "step", "constant"),
    "warmup_epochs": number(0.0),
    "min_lr_ratio": number(0.0, 1.0),
    "accumulate": integer(1),
    "clip_grad": number(0.0),
    "ema": flag(),
    "ema_decay": number(0.0, 1.0),
    "amp": one_of("auto", "off", "bf16", "fp16"),
    "channels_last": auto_or_flag(),
    "freeze": integer_or_names(0),
    "sync_bn": flag(),
    "compile": flag(),
    "cpu_replicas": auto_or_integer(1),
    "nan_policy": one_of("stop", "skip"),
    "nan_skip_limit": integer(1),
    "save_period": integer(0),
    "val_period": integer(1),
    "plots": flag(),
    "tensorboard": flag(),
    "exist_ok": flag(),
    "backbone_lr_mult": number(0.0, 1.0),
}

#: top-level keys that a model may also take as a keyword argument: one value reaches both (see
#: :func:`_one_value`)
SHARED_MODEL_KEYS = ("imgsz",)

OPEN_SECTIONS = ("model_kwargs", "expected", "augment")


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
    where = "no such file; " if p.suffix in (".yaml", ".yml") else ""
    raise ArgumentError(
        f"unknown recipe {name!r} ({where}a recipe is a zoo name or a .yaml file)"
        + (f"; did you mean {hint[0]!r}?" if hint else "")
        + f" Recipes: {', '.join(list_recipes())}"
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
        key = override_key(arg)
        if key not in RESUME_OVERRIDABLE:
            raise ArgumentError(
                f"{key}= cannot change when resuming (the run continues with its own arguments); "
                f"a resume may only set {', '.join(RESUME_OVERRIDABLE)}"
            )
    args = parse_overrides(argv, saved, open_sections=OPEN_SECTIONS)
    args["resume"] = str(target)
    return _checked(args, saved)


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
    ``augment.name=`` on the command line starts that augmentation from its own defaults (the recipe's ``augment.*``
    arguments belong to the recipe's augmentation). Every value is checked against its declared type and range
    (:data:`COMMON_SCHEMA`, ``Task.schema``) before anything is created.
    """
    from vision.engine.task import get_task

    pre = {}
    for arg in argv:
        if "=" not in arg:
            raise ArgumentError(f"argument {arg!r} is not of the form key=value")
        pre[override_key(arg)] = arg.split("=", 1)[1]  # --recipe=x is recipe=x, as parse_overrides reads it
    if pre.get("resume"):
        return _resume_args(pre["resume"], argv)
    recipe_name = pre.get("recipe") or ("" if ("model" in pre or "task" in pre) else default_recipe)
    recipe = _load_recipe(recipe_name) if recipe_name else {}
    task_name = pre.get("task") or recipe.get("task") or _task_of_model(pre.get("model") or recipe.get("model"))
    task_cls = get_task(task_name)
    defaults = merge(COMMON_DEFAULTS, task_cls.defaults, strict=False)
    for section in OPEN_SECTIONS:
        defaults.setdefault(section, {})
    opened = {k: recipe.pop(k) for k in OPEN_SECTIONS if k in recipe}
    try:
        defaults = merge(defaults, recipe, strict=True)
        for key, value in opened.items():  # a recipe's open section replaces the default one as a whole
            if not isinstance(value, dict):
                raise ArgumentError(f"{key} must be a mapping, got {value!r}")
            defaults[key] = value
    except ArgumentError as err:
        raise ArgumentError(f"recipe {recipe_name}: {err}") from None
    args = parse_overrides(argv, defaults, open_sections=OPEN_SECTIONS)
    args["task"] = task_name
    _check_model_task(str(args.get("model") or ""), task_name)
    _one_value(args, pre, recipe={**recipe, **opened}, recipe_name=recipe_name)
    if "augment.name" in pre:  # another augmentation: the recipe's arguments of its own one do not carry over
        given = {k.split(".", 1)[1] for k in pre if k.startswith("augment.")}
        args["augment"] = {k: v for k, v in (args.get("augment") or {}).items() if k in given}
    if args.get("expected") and recipe.get("data") and "data" not in args["expected"]:
        args["expected"]["data"] = recipe["data"]  # expectations hold for the data set they were measured on
    args["data"] = data_path(args.get("data"))  # a resume or vision val from another folder finds the same data
    if isinstance(args.get("expected"), dict) and "data" in args["expected"]:
        args["expected"]["data"] = data_path(args["expected"]["data"])
    return _checked(args, defaults, task_cls.schema)


def data_path(data: Any) -> Any:
    """``data=`` as a run records it: a relative path to an existing file or folder made absolute (the current folder
    is not recorded, so ``resume=`` and ``vision val`` from elsewhere would miss it); a registered data set's name,
    a mapping, or a path that does not exist (refused later, naming it) is kept as given.

    Example:
        >>> data_path("digits"), data_path("data/flowers")  # doctest: +SKIP
        ('digits', '/home/me/project/data/flowers')
    """
    if not isinstance(data, str) or not data.strip():
        return data
    from vision.registry import DATASETS

    if data in DATASETS or not os.path.exists(os.path.expanduser(data)):
        return data
    return os.path.abspath(os.path.expanduser(data))


def check_resume_epochs(epochs: int, state: Mapping[str, Any], run: str | os.PathLike[str]) -> str | None:
    """What is left to train when the run folder ``run`` resumes from its checkpoint ``state`` with ``epochs``.

    Returns:
        ``None`` when epochs are left; the one line to say when the run has finished its own epochs and ``epochs``
        asks for no more (nothing to resume: e.g. a run killed after its last save, resumed as a killed run is).

    Raises:
        ArgumentError: ``epochs=`` lowered to or below the epochs the checkpoint has completed, naming the
            ``epochs=`` that would train on.
    """
    done = int(state["epoch"])
    if epochs > done:
        return None
    more, counted = f"give epochs={done + 1} or more to train it further", f"{done} epoch{'s' * (done != 1)}"
    if epochs == int((state.get("args") or {}).get("epochs", -1)):
        return f"{run} has finished its {counted}: nothing to resume; {more}"
    if epochs < done:
        raise ArgumentError(f"epochs={epochs} is fewer than the {counted} {run} has done; {more}")
    raise ArgumentError(f"epochs={epochs}: {run} has done {counted} already, nothing is left to train; {more}")


def _checked(args: dict[str, Any], defaults: dict[str, Any], task_schema: dict[str, Rule] | None = None) -> dict:
    """``args`` with every key checked against its declared type and range (one line naming a bad key)."""
    if task_schema is None:
        from vision.engine.task import get_task

        task_schema = get_task(str(args["task"])).schema
    # augment.* values are checked knob by knob where the augmentation is built (vision.data.knobs), not by the type of
    # a recipe's default: a recipe's augment.scale=0.5 must not refuse a range augment.scale=[0.8,1.2]
    typed = {k: v for k, v in defaults.items() if k != "augment"}
    return check_keys(args, {**COMMON_SCHEMA, **task_schema}, typed)


def _check_model_task(model: str, task: str) -> None:
    """``model=`` must name a registered model of ``task`` (a classifier cannot train as a detector)."""
    if not model:
        return
    from vision.registry import UnknownNameError, resolve_entry, split_name

    try:
        entry = resolve_entry(split_name(model)[0])
    except UnknownNameError as err:
        raise ArgumentError(f"model={model}: {str(err).strip(chr(34) + chr(39))}") from None
    if entry.task and entry.task != task:
        raise ArgumentError(
            f"model={model} is a {entry.task} model, not a {task} one; "
            f"give task={entry.task}, or a {task} model (vision list --task {task})"
        )


def _builder_takes(model: str, key: str) -> bool:
    """Whether the builder of ``model`` takes the keyword ``key``: by name, or through ``**kwargs`` passed on to the
    class its return annotation names (``def yolo_n(**kwargs) -> YOLO``)."""
    import inspect
    import typing

    from vision.registry import resolve_entry, split_name

    try:
        builder = resolve_entry(split_name(model)[0]).builder
        params = inspect.signature(builder).parameters
        if key in params:
            return True
        if not any(p.kind is inspect.Parameter.VAR_KEYWORD for p in params.values()):
            return False
        returned = typing.get_type_hints(builder).get("return")
        return isinstance(returned, type) and key in inspect.signature(returned).parameters
    except (KeyError, NameError, TypeError, ValueError):
        return False


def _one_value(args: dict[str, Any], given: dict[str, str], *, recipe: dict[str, Any], recipe_name: str) -> None:
    """Make a top-level key and its ``model_kwargs`` spelling one value (:data:`SHARED_MODEL_KEYS`).

    The spelling given on the command line wins; both given with different values is an error, as is a recipe that
    sets the two differently. A model keyword the recipe does not set follows the top-level key when the model's
    builder names it.
    """
    kwargs = args.setdefault("model_kwargs", {})
    in_recipe = recipe.get("model_kwargs") or {}
    for key in SHARED_MODEL_KEYS:
        nested = f"model_kwargs.{key}"
        top_cli, nested_cli = key in given, nested in given
        if top_cli and nested_cli:
            if str(args[key]) != str(kwargs.get(key)):
                raise ArgumentError(
                    f"{key}={given[key]} and {nested}={given[nested]} name one value; give one of them (or the same)"
                )
        elif nested_cli:
            args[key] = kwargs[key]
        elif top_cli:
            if key in kwargs or _builder_takes(str(args.get("model") or ""), key):
                kwargs[key] = args[key]
        elif key in in_recipe and key in recipe and str(recipe[key]) != str(in_recipe[key]):
            raise ArgumentError(
                f"recipe {recipe_name}: {key}: {recipe[key]} and model_kwargs.{key}: {in_recipe[key]} differ; "
                "they are one value"
            )
        elif key in kwargs:
            args[key] = kwargs[key]
        elif _builder_takes(str(args.get("model") or ""), key):
            kwargs[key] = args[key]
