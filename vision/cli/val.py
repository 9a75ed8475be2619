"""``vision val`` / ``tools/val.py``: evaluate a model on a validation split without training.

Usage::

    python tools/val.py weights=runs/detection/train                      # the run's data, imgsz, model_kwargs
    python tools/val.py weights=runs/detection/train/weights/last.safetensors
    python tools/val.py model=resnet18 weights=tv_in1k data=path/to/imagefolder imgsz=224
    python tools/val.py weights=yolo_n.onnx data=bccd                     # an exported file (vision.deploy)

Keys: ``weights`` (a run folder, one written by ``vision prune`` too, a file written by training, a plain file or
tag with ``model=``, or an exported ``.onnx``), ``model``, ``data`` (default: the run's), ``split`` (``val``),
``imgsz`` (an ``.onnx`` file takes only the size it was exported for), ``batch`` (default: the run's), ``device``,
``workers``, ``project``, ``name``, ``plots``; any key of the task's training arguments (e.g. ``val_fraction=0.2``,
``synthetic.val=100``) overrides the run's.

The task of the model builds the split exactly as training's validation does (the run's ``args.yaml`` supplies every
key not given here; a key added to training since the run takes its default, and an ``args.yaml`` without ``data``,
``imgsz`` or ``batch`` is refused unless they are given) and evaluates it with the same :meth:`Task.evaluate`; the
same files as a validated training epoch (``coco_eval.txt``, ``predictions_bbox.json``, ``pr_curve.png``,
``val_predictions.png`` for detection; ``confusion_matrix.png`` for classification ...) plus ``metrics.csv`` (one
row, as training writes it) and ``metrics.json`` (full precision) go to ``<project>/<task>/<name>``
(auto-incremented). One summary line is printed; the last line names the folder. Evaluating the weights of a run's
last epoch reproduces that epoch's row of the run's ``metrics.csv``.
"""

from __future__ import annotations

import contextlib
import json
from collections.abc import Sequence
from pathlib import Path
from typing import Any

import numpy as np
import torch
from torch import Tensor, nn

from vision.cli.common import USER_ERRORS, check_onnx_model_key, command_line, fail, interrupted, user_message
from vision.utils.keys import ArgumentError, check_keys, flag, integer, override_key, parse_overrides

__all__ = ["VAL_KEYS", "VAL_SCHEMA", "OnnxAsModule", "evaluate", "main", "trained_run_args"]

VAL_KEYS: dict[str, Any] = {
    "weights": "",
    "model": "",
    "data": None,
    "split": "val",
    "imgsz": None,
    "batch": None,
    "device": "auto",
    "workers": 0,
    "project": "runs",
    "name": "val",
    "plots": True,
}

#: the type and range of each key (one ``error:`` line naming a bad one before anything is loaded)
VAL_SCHEMA = {"imgsz": integer(1), "batch": integer(1), "workers": integer(0), "plots": flag()}


class OnnxAsModule(nn.Module):
    """An exported model (``vision.deploy.load_onnx``) behind the interface :meth:`Task.evaluate` uses.

    ``forward(x normalised [B, 3, H, W]) -> logits [B, K]`` (classifiers) and ``predict(images)`` (detectors: a
    ``[B, 3, H, W]`` batch or list of float ``[3, H, W]`` in [0, 1] -> ``{boxes, scores, labels}`` with data-set
    labels) on the CPU tensors the exported model is given; ``task``, ``categories``, ``num_classes`` and
    ``background_class = False`` come from the file.
    """

    background_class = False
    has_masks = False

    def __init__(self, onnx_model: Any) -> None:
        super().__init__()
        self.onnx_model = onnx_model
        self.task = str(onnx_model.task)
        self.categories = list(onnx_model.categories or []) or None
        self.num_classes = int(onnx_model.num_classes)

    def forward(self, x: Tensor) -> Tensor:
        return torch.as_tensor(np.asarray(self.onnx_model(x.detach().float().cpu())), dtype=torch.float32)

    def predict(self, images: Tensor | Sequence[Tensor], **options: Any) -> list[dict[str, Tensor]]:
        items = list(images.unbind(0)) if isinstance(images, Tensor) else list(images)
        dets = self.onnx_model.predict([i.detach().float().cpu() for i in items], **options)
        return [
            {k: torch.as_tensor(np.asarray(d[k]), dtype=torch.int64 if k == "labels" else torch.float32)
             for k in ("boxes", "scores", "labels")}
            for d in dets
        ]  # fmt: skip


def _load_onnx(path: str) -> Any:
    try:
        from vision.deploy import load_onnx
    except ImportError as err:
        raise ArgumentError(f"weights={path}: evaluating an .onnx file needs vision.deploy ({err})") from None
    return load_onnx(path)


#: what a run's ``args.yaml`` must hold (or the command line give) to rebuild its validation split
_SPLIT_KEYS = ("data", "imgsz", "batch")


def _saved_args(weights: str, run_dir: Path, meta: dict[str, Any], model: str, given: Sequence[str]) -> dict[str, Any]:
    """A run folder's ``args.yaml`` with the keys it lacks (added to training since it ran) at their defaults.

    Raises:
        ArgumentError: it names no task or model, or lacks one of :data:`_SPLIT_KEYS` not in ``given`` (not a
            training run's arguments, e.g. a folder of an older ``vision prune``).
    """
    from vision._loader import run_args
    from vision.engine.config import OPEN_SECTIONS, resolve_args

    run = run_args(run_dir)
    task, name = run.get("task") or meta.get("task"), model or run.get("model") or meta.get("model")
    lacking = [k for k in ("task", "model") if not (task if k == "task" else name)]
    lacking += [k for k in _SPLIT_KEYS if run.get(k) is None and k not in given]
    if lacking:
        older = " (written by an older vision prune: prune again)" if "ratio" in run and "train" in run else ""
        raise ArgumentError(
            f"weights={weights}: {run_dir / 'args.yaml'} holds no training arguments {', '.join(lacking)}{older}; "
            f"give {' '.join(f'{k}=...' for k in lacking)}"
        )
    defaults = resolve_args([f"task={task}", f"model={name}"])
    for key, value in defaults.items():
        if key not in run:
            run[key] = value
        elif isinstance(value, dict) and isinstance(run[key], dict) and key not in OPEN_SECTIONS:
            run[key] = {**value, **run[key]}
    run.update(task=task, model=name)
    return run


def trained_run_args(
    weights: str, model: str = "", *, given: Sequence[str] = ()
) -> tuple[dict[str, Any], dict[str, Any]] | None:
    """``(training arguments, metadata)`` of trained weights: ``None`` unless ``weights`` is a run folder (one written
    by ``vision prune`` too), a file inside one, or a ``.safetensors`` file written by training.

    A run's ``args.yaml`` supplies every key (one added to training since the run takes its default); a file outside a
    run gets its task's defaults with its metadata's ``imgsz``, normalisation and ``model_kwargs``. ``model`` overrides
    the stored architecture; ``given`` names the keys the command line sets (they need not be in ``args.yaml``).

    Raises:
        ArgumentError: the run's ``args.yaml`` holds no training arguments (see :func:`_saved_args`).
    """
    from vision._loader import find_trained_file
    from vision.engine.config import resolve_args
    from vision.registry import resolve_entry

    found = find_trained_file(weights) if weights else None
    if found is None:
        return None
    _, meta, run_dir = found
    if run_dir is not None:
        return _saved_args(weights, run_dir, meta, model, given), meta
    name = model or str(meta["model"])
    run = resolve_args([f"task={meta.get('task') or resolve_entry(name).task}", f"model={name}"])
    run["model_kwargs"] = dict(meta.get("model_kwargs") or {})
    if "imgsz" in meta:
        run["imgsz"] = int(meta["imgsz"])
    elif meta.get("preprocess"):
        run["imgsz"] = int(meta["preprocess"]["input_size"][-1])
        run["mean"], run["std"] = list(meta["preprocess"]["mean"]), list(meta["preprocess"]["std"])
    return run, meta


def _run_args(args: dict[str, Any], onnx_model: Any | None) -> tuple[dict[str, Any], dict[str, Any]]:
    """The training arguments to rebuild the validation split with, and the weights' metadata."""
    from vision.engine.config import resolve_args
    from vision.registry import resolve_entry

    weights, model = str(args["weights"]), str(args["model"] or "")
    if onnx_model is not None:
        pre = dict(getattr(onnx_model, "preprocess", None) or {})
        run = _exporting_run(weights, onnx_model.task, args) or resolve_args([f"task={onnx_model.task}"])
        size = pre.get("input_size")
        if size:
            run["imgsz"] = int(size[-1] if isinstance(size, list | tuple) else size)
        for key in ("mean", "std"):
            if pre.get(key) is not None and key in run:
                run[key] = list(pre[key])
        return run, {"classes": list(onnx_model.categories or [])}
    trained = trained_run_args(weights, model, given=[k for k in _SPLIT_KEYS if args[k] is not None])
    if trained is not None:
        return trained
    if not model:
        raise ArgumentError("model= is required (e.g. model=resnet18) unless weights= names a run or a trained file")
    return resolve_args([f"task={resolve_entry(model).task or 'classification'}", f"model={model}"]), {}


def _exporting_run(weights: str, task: str, args: dict[str, Any]) -> dict[str, Any] | None:
    """The training arguments of the run an exported file sits in (``<run>/weights/<file>.onnx``, where ``vision
    export`` writes it), so that its validation split is the run's (``synthetic.*``, ``val_fraction`` ...), as for the
    run's own weights; ``None`` for a file elsewhere or in a run of another task. The file's input size and
    normalisation still win (the caller applies them)."""
    folder = Path(weights).resolve().parent
    if folder.name != "weights" or not (folder.parent / "args.yaml").is_file():
        return None
    given = [k for k in _SPLIT_KEYS if args[k] is not None]
    run = _saved_args(weights, folder.parent, {"task": task}, "", given)
    if run.get("task") != task:
        return None
    print(f"weights={weights}: validation data from its run's {folder.parent / 'args.yaml'}")
    return run


def _task_keys(argv: list[str], run: dict[str, Any]) -> dict[str, Any]:
    """``run`` with the task's training keys of ``argv`` applied, each checked against its declared type and range."""
    from vision.engine.config import COMMON_SCHEMA
    from vision.engine.task import get_task

    given = [override_key(a) for a in argv]
    try:
        updated = parse_overrides(argv, run, open_sections=("model_kwargs",))
    except ArgumentError:  # an unknown key: suggested and listed among val's own keys too (splt= is split=)
        parse_overrides(argv, {**VAL_KEYS, **run}, open_sections=("model_kwargs",))
        raise
    return check_keys(updated, {**COMMON_SCHEMA, **get_task(str(run["task"])).schema}, run, only=given)


def evaluate(argv: Sequence[str]) -> tuple[Path, dict[str, float]]:
    """Run ``vision val`` on ``key=value`` arguments; returns the output folder and the scalar metrics."""
    from torch.utils.data import DataLoader

    from vision._loader import load_model
    from vision.engine.reporting import MetricsLogger
    from vision.engine.task import get_task
    from vision.tasks._data import check_class_names
    from vision.utils import increment_dir, pick_device

    own = [a for a in argv if override_key(a) in VAL_KEYS]
    args = check_keys(parse_overrides(own, VAL_KEYS), VAL_SCHEMA, VAL_KEYS)
    if not args["weights"]:
        raise ArgumentError("weights= is required (a run folder, a weights file, a tag or an .onnx file)")
    if str(args["split"]) != "val":
        raise ArgumentError(f"split={args['split']}: only split=val can be evaluated")
    is_onnx = str(args["weights"]).lower().endswith(".onnx")
    if is_onnx and not Path(str(args["weights"])).is_file():
        raise ArgumentError(f"weights={args['weights']}: no such file")
    onnx_model = _load_onnx(str(args["weights"])) if is_onnx else None
    if onnx_model is not None:
        check_onnx_model_key(str(args["model"] or ""), str(args["weights"]), onnx_model)
        if args["imgsz"] is not None:
            from vision.deploy.runtime import check_exported_imgsz

            check_exported_imgsz(int(args["imgsz"]), str(args["weights"]), onnx_model)
    run, meta = _run_args(args, onnx_model)
    for key in ("data", "imgsz", "batch"):
        if args[key] is not None:
            run[key] = args[key]
    run.update(weights="", resume="", workers=int(args["workers"]), plots=bool(args["plots"]))
    others = [a for a in argv if a not in own]  # the task's data keys (synthetic.val=..., val_fraction=...)
    run = _task_keys(others, run)
    task = get_task(str(run["task"]))(run)
    _, val_set = task.build_datasets()
    if val_set is None or len(val_set) == 0:  # type: ignore[arg-type]
        raise ArgumentError(f"data={run['data'] or 'the default data'} has no validation split")
    device = pick_device(str(args["device"]))
    if onnx_model is not None:
        model: nn.Module = OnnxAsModule(onnx_model)
        device = torch.device("cpu")
    else:
        model = load_model(str(args["weights"]), model=str(args["model"] or "") or None, device=device)
    classes = list(getattr(task, "classes", []) or [])
    names = getattr(model, "categories", None)
    check_class_names(names, classes, model_label="the model", data_label=f"data={run['data'] or 'the default data'}")
    loader = DataLoader(val_set, batch_size=int(run["batch"]), shuffle=False, num_workers=int(args["workers"]),
                        collate_fn=task.collate_fn())  # fmt: skip
    amp = str(run.get("amp", "auto")).lower()
    dtype = {"bf16": torch.bfloat16, "fp16": torch.float16}.get("bf16" if amp == "auto" else amp)
    use_amp = device.type == "cuda" and dtype is not None

    def autocast() -> contextlib.AbstractContextManager:
        return torch.autocast(device_type="cuda", dtype=dtype) if use_amp else contextlib.nullcontext()

    metrics = task.evaluate(model, loader, device, autocast=autocast)
    scalars = task.scalar_metrics(metrics)
    out_dir = increment_dir(Path(str(args["project"])) / str(run["task"]), str(args["name"]))
    epoch = int(meta.get("epoch", 0) or 0)
    task.on_epoch_end(out_dir, epoch, metrics, model)
    logger = MetricsLogger(out_dir, tensorboard=False)
    logger.log({"epoch": epoch, **scalars})
    logger.close()
    summary = {"weights": str(args["weights"]), "data": run["data"], "split": "val", "imgsz": run["imgsz"],
               "images": len(val_set), "epoch": epoch, "metrics": scalars}  # fmt: skip
    (out_dir / "metrics.json").write_text(json.dumps(summary, indent=2), encoding="utf-8")
    shown = "  ".join(f"{k} {v:.4f}" for k, v in scalars.items())
    print(f"val {args['weights']} on {run['data'] or 'the default data'} ({len(val_set)} images): {shown}")
    return out_dir, scalars


def main(argv: Sequence[str] | None = None) -> int:
    """Entry point of ``tools/val.py`` and ``vision val``."""
    argv = command_line(argv, __doc__)
    if argv is None:
        return 0
    try:
        out_dir, _ = evaluate(argv)
    except (*USER_ERRORS, OSError, RuntimeError, NotImplementedError) as err:  # one error line, exit 2
        fail(user_message(err))
    except KeyboardInterrupt:  # tools/val.py
        interrupted()
    print(f"results saved to {out_dir}")
    return 0
