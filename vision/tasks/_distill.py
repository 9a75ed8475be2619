"""What both distilling tasks share: the ``teacher=`` / ``distill.*`` keys and loading a frozen teacher.

``teacher=`` may name a training run (or a file written by training), a plain weights file with
``distill.teacher_model=ARCH``, a registry name with a weight tag (``resnet50.tv2_in1k``) or a registry name alone (its
default pretrained weights). The teacher is loaded with :func:`vision.load_model`, put in eval mode and frozen
(``requires_grad=False``); it is held by the task, outside the student, so it is neither optimised, nor saved, nor
wrapped by DDP (every rank loads its own copy).
"""

from __future__ import annotations

from collections.abc import Sequence
from typing import Any

from torch import nn

from vision.tasks._data import check_class_names
from vision.utils.keys import ArgumentError

__all__ = ["DISTILL_KEYS", "check_teacher_classes", "distill_options", "load_teacher", "refuse_distill_without_teacher"]

#: ``distill.*`` keys (both tasks): KD weight, softening temperature, architecture of a plain teacher file, and the
#: weight of the feature-imitation term (detection only; 0 switches the 1x1 adapters off)
DISTILL_KEYS: dict[str, Any] = {"alpha": 0.5, "temperature": 4.0, "teacher_model": "", "features": 0.0}


def refuse_distill_without_teacher(args: dict[str, Any]) -> None:
    """``ArgumentError`` when a run sets ``distill.*`` keys (away from their defaults) but no ``teacher=``: they would
    be ignored."""
    if args.get("teacher"):
        return
    given = sorted(k for k, v in dict(args.get("distill") or {}).items() if k in DISTILL_KEYS and v != DISTILL_KEYS[k])
    if given:
        keys = ", ".join(f"distill.{k}=" for k in given)
        raise ArgumentError(f"{keys} {'applies' if len(given) == 1 else 'apply'} to distillation, which needs "
                            "teacher= (a run, a weights file or NAME.TAG of the teacher)")  # fmt: skip


def distill_options(args: dict[str, Any]) -> dict[str, Any]:
    """The checked ``distill.*`` options of a run: ``alpha`` in [0, 1], ``temperature`` > 0, ``features`` >= 0."""
    opts = {**DISTILL_KEYS, **dict(args.get("distill") or {})}
    alpha, temperature, features = float(opts["alpha"]), float(opts["temperature"]), float(opts["features"])
    if not 0.0 <= alpha <= 1.0:
        raise ValueError(f"distill.alpha={alpha} must be in [0, 1]")
    if temperature <= 0:
        raise ValueError(f"distill.temperature={temperature} must be > 0")
    if features < 0:
        raise ValueError(f"distill.features={features} must be >= 0")
    return {**opts, "alpha": alpha, "temperature": temperature, "features": features}


def load_teacher(teacher: str, *, model: str = "", task: str = "") -> nn.Module:
    """A frozen teacher in eval mode on the CPU (see the module docstring for what ``teacher`` may be).

    Raises:
        ValueError: ``teacher`` is neither a run, a weights file, nor a registry name (or has no pretrained weights),
            names a path where nothing is, or is a model of another task than ``task`` (when given).
    """
    from pathlib import Path

    from vision._loader import find_trained_file, load_model
    from vision.registry import UnknownNameError, resolve_entry, split_name

    spec = str(teacher)
    try:
        found = find_trained_file(spec)
    except FileNotFoundError as err:  # a path that names nothing: said of teacher=, not weights=
        raise ValueError(str(err).replace("weights=", "teacher=", 1)) from None
    if found is not None:
        net = load_model(spec, model=model or None)
    elif Path(spec).is_file() or model:
        if not model:
            from vision.hub.download import load_state_dict_file

            load_state_dict_file(spec)  # a file that holds no weights is said to be that (WeightsFileError)
            raise ValueError(f"teacher={spec} is a plain weights file: give its architecture as distill.teacher_model=")
        net = load_model(spec, model=model)
    else:
        arch, tag = split_name(spec)
        try:
            entry = resolve_entry(arch)
        except UnknownNameError as err:
            raise ValueError(f"teacher={spec!r} is neither a run, a weights file nor a model name ({err})") from None
        tag = tag or entry.default_tag
        if not tag:
            raise ValueError(f"teacher={spec!r} has no pretrained weights; give a training run or NAME.TAG")
        net = load_model(tag, model=arch)
    if task and getattr(net, "task", task) != task:
        raise ValueError(f"teacher={spec} is a {net.task} model ({type(net).__name__}); distilling a {task} model "
                         f"needs a {task} teacher")  # fmt: skip
    net.eval()
    net.requires_grad_(False)
    return net


def check_teacher_classes(teacher: nn.Module, classes: Sequence[str]) -> None:
    """``ValueError`` naming both lists when the teacher's class names (its ``categories``, where it has them) are
    not the data's ``classes``."""
    check_class_names(getattr(teacher, "categories", None), classes, model_label="the teacher", data_label="the data")
