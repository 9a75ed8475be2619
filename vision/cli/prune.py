"""``vision prune``: structured channel pruning of classifiers and YOLO detectors, optional fine-tuning, and a
compression report.

Usage::

    vision prune model=efficientnet_lite0 weights=lukemelas_in1k ratio=0.5
    vision prune weights=runs/detection/train ratio=0.5 method=taylor recipe=yolo_n_synthetic epochs=5

Keys: ``weights`` (a run, a file written by training, a tag or a weights file with ``model=``), ``model``, ``ratio``
(fraction of the channels removed from every prunable layer, in (0, 1)), ``method`` (``l1``: L1 norm of the filters;
``taylor``: first-order Taylor importance, needs ``data=``), ``imgsz`` (the example input and the data's size;
default: the trained run's, else the model's), ``latency_runs`` (timed batch-1 CPU forwards per variant),
``calibration_batches`` (batches whose gradients feed ``taylor``), ``project``, ``name``. Every other key (``recipe``,
``data``, ``epochs``, ``lr``, ``batch``, ``device`` ...) is a ``tools/train.py`` key: with ``data=`` (or a recipe
naming it) the variants are evaluated on its validation split, and with ``epochs=N`` given (needs ``data=``) the
pruned model is fine-tuned by the normal trainer. Both use the trained run's own arguments (its ``args.yaml``, or a
trained file's input size and normalisation: ``imgsz``, ``mean``/``std``, ``synthetic.*``, ``val_fraction``, ``batch``
...) except the keys given here (and those of a ``recipe=`` given here), as ``vision val`` does. A model whose classes
are not the data's is refused before anything is pruned. An unknown key is refused with a "did you mean".

The channel bookkeeping is torch-pruning's dependency graph (https://github.com/VainF/Torch-Pruning): every layer
coupled to a pruned channel (BatchNorm, the next convolution, residual additions, concatenations, depthwise
convolutions) is pruned with it. The classifier's output layer and YOLO's prediction convolutions keep their widths;
in C2f blocks the channel slicing is not traced by the graph, so their inner widths (``expand`` and the bottleneck
chain) are kept and their outputs pruned.

Outputs in ``<project>/<task>/<name>``: ``weights/best.safetensors`` (metadata ``pruned``: :func:`vision.load_model`
rebuilds the pruned shapes, so ``tools/infer.py`` takes the folder), ``args.yaml`` (the training arguments the
variants were evaluated with, so ``vision val`` takes the folder; this command's keys under ``prune``), ``report.json``;
a fine-tuned model is its own training run (``<name>_ft``; ``resume=`` continues it with the pruned shapes). The
report lists params, GFLOPs (2 x multiply-accumulates at the example input), CPU latency at batch 1 (median) and the
validation metric of each variant next to the base model.
"""

from __future__ import annotations

import contextlib
import copy
import statistics
import sys
import time
from collections.abc import Sequence
from pathlib import Path
from typing import Any

import torch
from torch import nn

from vision.cli.common import USER_ERRORS, command_line, fail, user_message
from vision.utils.keys import (
    ArgumentError,
    check_keys,
    flatten,
    get_dotted,
    integer,
    merge,
    override_key,
    parse_overrides,
    set_dotted,
)

__all__ = ["PRUNE_KEYS", "PRUNE_SCHEMA", "compression_stats", "main", "prune_model"]

PRUNE_KEYS: dict[str, Any] = {
    "weights": "",
    "model": "",
    "ratio": 0.5,
    "method": "l1",
    "imgsz": None,
    "latency_runs": 20,
    "calibration_batches": 4,
    "project": "runs",
    "name": "prune",
}

#: the type and range of the integer keys (``ratio`` and ``method`` are checked where they are read)
PRUNE_SCHEMA = {"imgsz": integer(1), "latency_runs": integer(1), "calibration_batches": integer(1)}


def _is_yolo(model: nn.Module) -> bool:
    return all(hasattr(model, a) for a in ("forward_raw", "head", "neck", "backbone"))


def _forward_fn(model: nn.Module) -> Any:
    """What torch-pruning traces: YOLO's raw head outputs, a classifier's logits."""
    if _is_yolo(model):
        return lambda m, x: m.forward_raw(x)[:2]
    return None


class _RawOutputs(nn.Module):
    """YOLO's network without decoding and NMS (what is counted and timed)."""

    def __init__(self, model: nn.Module) -> None:
        super().__init__()
        self.model = model

    def forward(self, x: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor]:
        return self.model.forward_raw(x)[:2]


def _ignored_layers(model: nn.Module) -> list[nn.Module]:
    """Layers whose output channels are kept: the classifier's output, YOLO's prediction convolutions, and the C2f
    internals whose slicing the graph does not trace."""
    if _is_yolo(model):
        from vision.backbones.csp_darknet import C2f

        ignored: list[nn.Module] = [b[-1] for b in model.head.box] + [c[-1] for c in model.head.cls]
        for m in model.modules():
            if isinstance(m, C2f):
                ignored += [m.expand, m.chain]
        return ignored
    num_classes = int(getattr(model, "num_classes", 0) or 0)
    return [
        m
        for m in model.modules()
        if (isinstance(m, nn.Linear) and m.out_features == num_classes)
        or (isinstance(m, nn.Conv2d) and m.out_channels == num_classes)
    ]


def prune_model(
    model: nn.Module,
    example: torch.Tensor,
    *,
    ratio: float,
    method: str = "l1",
    loss_fn: Any = None,
) -> nn.Module:
    """Prune ``ratio`` of the channels of every prunable layer of ``model`` in place (torch-pruning dependency graph).

    Args:
        model: a classifier (``[B, 3, H, W] -> [B, K]``) or a YOLO detector.
        example: an input ``[1, 3, H, W]`` for tracing.
        ratio: fraction of channels removed, in (0, 1).
        method: ``l1`` (filter L1 norm) or ``taylor`` (needs ``loss_fn``).
        loss_fn: ``model -> scalar loss`` over calibration data (``taylor`` only); its gradients rank the channels.

    Returns:
        ``model``, with fewer channels; its class outputs and YOLO's prediction layers keep their shapes.
    """
    import torch_pruning as tp

    if not 0.0 < ratio < 1.0:
        raise ValueError(f"ratio={ratio} must be in (0, 1)")
    if method == "l1":
        importance = tp.importance.MagnitudeImportance(p=1)
    elif method == "taylor":
        if loss_fn is None:
            raise ValueError("method=taylor needs data= (its gradients rank the channels)")
        importance = tp.importance.TaylorImportance()
    else:
        raise ValueError(f"method={method!r} is not one of l1, taylor")
    model.eval()
    pruner = tp.pruner.MetaPruner(
        model,
        example,
        importance=importance,
        pruning_ratio=float(ratio),
        ignored_layers=_ignored_layers(model),
        forward_fn=_forward_fn(model),
    )
    if method == "taylor":
        model.zero_grad()
        loss_fn(model).backward()
    pruner.step()
    model.zero_grad(set_to_none=True)
    return model


def compression_stats(model: nn.Module, example: torch.Tensor, *, runs: int = 20) -> dict[str, float]:
    """``{"params", "gflops", "latency_ms"}`` of ``model`` on the CPU: parameters, GFLOPs (2 x multiply-accumulates of
    one forward of ``example``) and the median latency of ``runs`` batch-1 forwards (after two warm-up calls)."""
    import torch_pruning as tp

    model = copy.deepcopy(model).cpu().eval()
    example = example[:1].cpu()
    call = _RawOutputs(model) if _is_yolo(model) else model
    with torch.no_grad():
        macs, params = tp.utils.count_ops_and_params(call, example)
        times = []
        for i in range(int(runs) + 2):
            t0 = time.perf_counter()
            call(example)
            if i >= 2:
                times.append(time.perf_counter() - t0)
    return {
        "params": float(params),
        "gflops": 2.0 * float(macs) / 1e9,
        "latency_ms": 1e3 * statistics.median(times) if times else float("nan"),
    }


def _example(model: nn.Module, imgsz: int) -> torch.Tensor:
    if _is_yolo(model):
        stride = model.size_divisibility
        size = -(-(imgsz or int(model.imgsz)) // stride) * stride
        if imgsz and size != imgsz:
            print(f"note: imgsz={imgsz} was rounded up to {size} (a multiple of the model's stride {stride})",
                  file=sys.stderr)  # fmt: skip
    else:
        card = getattr(model, "card", None)
        size = imgsz or (int(card.preprocess.input_size[0]) if card is not None else 224)
    return torch.rand(1, 3, size, size)


def _stored_kwargs(meta: dict[str, Any]) -> dict[str, Any]:
    return {k: meta[k] for k in ("model_kwargs", "label_offset", "imgsz", "teacher") if k in meta}


#: keys of the trained run that belong to that run rather than to its data, input size and optimisation (its
#: distillation teacher with its ``distill.*`` settings, and recipe expectations too): the command line's values
#: (else the defaults) apply
_RUN_OWN_KEYS = ("weights", "resume", "name", "project", "exist_ok", "epochs", "device", "workers", "teacher",
                 "distill", "expected")  # fmt: skip


def _train_args(task_name: str, model_name: str, train_argv: list[str], source: dict[str, Any] | None) -> dict:
    """The training arguments the variants are evaluated and fine-tuned with.

    From a trained run (``source``: its ``args.yaml``, or a trained file's metadata) its data, input size,
    normalisation, ``synthetic.*``, split and optimisation keys, with each key given on the command line (and each
    key of a ``recipe=`` given there) applied; the weights' architecture (``model``, ``model_kwargs``) stays. Without
    a trained run, ``tools/train.py``'s resolution of the command line.
    """
    import yaml

    from vision.engine.config import find_recipe, resolve_args

    given = resolve_args([f"task={task_name}", f"model={model_name}", *train_argv])  # every key checked
    if source is None:
        return given
    explicit = [override_key(a) for a in train_argv]
    if "recipe" in explicit:
        explicit += flatten(yaml.safe_load(find_recipe(str(given["recipe"])).read_text(encoding="utf-8")) or {})
    args = {k: copy.deepcopy(v) for k, v in source.items() if k not in ("prune", "pruned")}
    for key in (*_RUN_OWN_KEYS, *explicit):
        if key.split(".")[0] in ("model", "task", "model_kwargs") or (value := get_dotted(given, key, ...)) is ...:
            continue
        if key.startswith("augment.") and "augment.name" in explicit:  # another augmentation, from its own defaults
            key, value = "augment", given["augment"]
        set_dotted(args, key, copy.deepcopy(value))
    return {**args, "task": task_name, "model": model_name}


def _metadata(model: nn.Module, name: str, task: str, stored: dict[str, Any], pruned: dict[str, Any]) -> dict:
    from vision.models.detection.common import label_offset

    meta: dict[str, Any] = {"model": name, "task": task, "model_kwargs": dict(stored.get("model_kwargs") or {})}
    if getattr(model, "categories", None):
        meta["classes"] = list(model.categories)
        meta["label_offset"] = int(stored.get("label_offset", label_offset(model)))
    elif getattr(model, "num_classes", None):
        meta["model_kwargs"]["num_classes"] = int(model.num_classes)
    card = getattr(model, "card", None)
    if card is not None and task == "classification":
        pre = card.preprocess
        meta["preprocess"] = {"input_size": list(pre.input_size), "resize_size": pre.resize_size,
                              "interpolation": pre.interpolation, "mean": list(pre.mean), "std": list(pre.std),
                              "crop": pre.crop}  # fmt: skip
    if "imgsz" in stored:
        meta["imgsz"] = stored["imgsz"]
    meta["pruned"] = pruned
    return meta


class _Evaluator:
    """The validation metric of a variant on the data of ``args`` (``None`` without ``data=``: ``args`` is ``None``)."""

    def __init__(self, args: dict[str, Any] | None) -> None:
        self.args = args
        self.task: Any = None
        self.loader: Any = None
        if args is None:
            return
        from torch.utils.data import DataLoader

        from vision.engine.task import get_task

        self.task = get_task(str(args["task"]))(self.args)
        train, val = self.task.build_datasets()
        self.train = train
        if val is None:
            raise ArgumentError(f"data={self.args['data']} has no validation split to evaluate the variants on")
        collate = self.task.collate_fn()
        self.loader = DataLoader(val, batch_size=int(self.args["batch"]), shuffle=False, collate_fn=collate)

    def check_classes(self, model: nn.Module) -> None:
        """Refuse a model whose classes are not the data's (as ``vision val`` does), before anything is pruned."""
        from vision.models.detection.common import label_offset
        from vision.tasks._data import check_class_names

        if self.task is None:
            return
        classes, data = list(getattr(self.task, "classes", []) or []), f"data={self.args['data'] or 'the default data'}"
        check_class_names(getattr(model, "categories", None), classes, model_label="the model", data_label=data)
        outputs = int(getattr(model, "num_classes", 0) or 0)
        if classes and not getattr(model, "categories", None) and outputs != len(classes) + label_offset(model):
            raise ArgumentError(f"the model has {outputs} class outputs and no class names, {data} has "
                                f"{len(classes)} classes: label i must mean the same class to both")  # fmt: skip

    def __call__(self, model: nn.Module) -> float | None:
        if self.task is None:
            return None
        metrics = self.task.evaluate(
            model.cpu().eval(), self.loader, torch.device("cpu"), autocast=contextlib.nullcontext
        )
        return float(metrics[self.task.main_metric])

    def calibration_loss(self, batches: int) -> Any:
        """``model -> loss`` summed over ``batches`` training batches (for Taylor importance)."""
        from torch.utils.data import DataLoader

        loader = DataLoader(
            self.train, batch_size=int(self.args["batch"]), shuffle=True, collate_fn=self.task.collate_fn()
        )

        def loss_fn(model: nn.Module) -> torch.Tensor:
            model.train()
            total = torch.zeros(())
            for i, batch in enumerate(loader):
                if i >= batches:
                    break
                batch = self.task.prepare_batch(batch, torch.device("cpu"), train=False)
                total = total + sum(self.task.compute_loss(model, batch).values())
            model.eval()
            return total

        return loss_fn


def _fine_tune(pruned: nn.Module, args: dict[str, Any], meta: dict, name: str) -> Path:
    """Train the pruned model with the normal trainer (``args``: :func:`_train_args`). Its arguments' ``pruned`` puts
    the ``pruned`` metadata into the weights it saves and makes a resume rebuild the pruned shapes."""
    from vision.engine.trainer import Trainer
    from vision.tasks._data import check_class_names

    trainer = Trainer({**args, "name": name, "model_kwargs": dict(meta["model_kwargs"]), "pruned": meta["pruned"]})
    task = trainer.task

    def build_model() -> nn.Module:
        names = getattr(pruned, "categories", None)  # never renamed: another class list is refused
        check_class_names(names, task.classes, model_label="the model",
                          data_label=f"data={args['data'] or 'the default data'}")  # fmt: skip
        pruned.categories = list(names or task.classes)
        if hasattr(task, "model"):
            task.model = pruned
        return pruned

    task.build_model = build_model  # the pruned architecture, not a fresh one
    return trainer.fit()


def _report(rows: list[tuple[str, dict[str, float], float | None]], metric: str) -> str:
    base = rows[0][1]
    lines = [f"{'variant':<22} {'params (M)':>10} {'GFLOPs':>8} {'x fewer':>8} {'CPU ms (b=1)':>13} {metric:>8}"]
    for label, s, value in rows:
        shown = f"{value:.4f}" if value is not None else "-"
        lines.append(
            f"{label:<22} {s['params'] / 1e6:>10.3f} {s['gflops']:>8.3f} {base['gflops'] / s['gflops']:>8.2f} "
            f"{s['latency_ms']:>13.2f} {shown:>8}"
        )
    return "\n".join(lines)


def main(argv: Sequence[str] | None = None) -> int:
    """Entry point of ``vision prune``."""
    import importlib.util

    argv = command_line(argv, __doc__)
    if argv is None:
        return 0
    if importlib.util.find_spec("torch_pruning") is None:
        fail("vision prune needs torch-pruning: pip install 'vision-zoo[compress]'")
    try:
        return _run(argv)
    except (*USER_ERRORS, OSError, RuntimeError, NotImplementedError) as err:  # one error line, exit 2
        fail(user_message(err))
    return 2


def _check_train_keys(train_argv: list[str]) -> None:
    """Refuse a key that is neither ``vision prune``'s nor ``tools/train.py``'s (with a "did you mean"), and
    ``epochs=`` without data to fine-tune on."""
    from vision.engine.config import COMMON_DEFAULTS, COMMON_SCHEMA, OPEN_SECTIONS
    from vision.engine.task import get_task

    keys = dict(COMMON_DEFAULTS)
    for task in ("classification", "detection"):
        keys = merge(keys, get_task(task).defaults, strict=False)
    parse_overrides(train_argv, {**keys, **PRUNE_KEYS}, open_sections=OPEN_SECTIONS)
    epochs = [a.split("=", 1)[1] for a in train_argv if override_key(a) == "epochs"]
    if epochs:
        n = COMMON_SCHEMA["epochs"].check("epochs", epochs[-1].strip())
        if not any(override_key(a) in ("data", "recipe") for a in train_argv):
            raise ArgumentError(f"epochs={n} needs data= (or a recipe= naming it) to fine-tune the pruned model on")


def _run(argv: list[str]) -> int:
    import vision
    from vision.utils import increment_dir, save_yaml
    from vision.utils.files import save_json

    for arg in argv:
        if "=" not in arg:
            raise ArgumentError(f"argument {arg!r} is not of the form key=value")
    own = [a for a in argv if override_key(a) in PRUNE_KEYS]
    train_argv = [a for a in argv if override_key(a) not in PRUNE_KEYS or override_key(a) == "imgsz"]
    args = check_keys(parse_overrides(own, PRUNE_KEYS), PRUNE_SCHEMA)
    _check_train_keys(train_argv)
    if not args["weights"] and not args["model"]:
        raise ArgumentError("weights= is required (a run, a file written by training, or a tag with model=)")
    try:
        ratio = float(args["ratio"])
    except (TypeError, ValueError):
        raise ArgumentError(f"ratio={args['ratio']!r} is not a number") from None
    if not 0.0 < ratio < 1.0:
        raise ArgumentError(f"ratio={ratio} must be a fraction of channels in (0, 1)")
    if args["method"] not in ("l1", "taylor"):
        raise ArgumentError(f"method={args['method']!r} is not one of l1, taylor")
    base = vision.load_model(str(args["weights"]) or None, model=str(args["model"]) or None)
    task_name = str(base.task)
    if task_name == "detection" and not _is_yolo(base):
        raise ArgumentError(f"{type(base).__name__}: vision prune takes classifiers and YOLO detectors")
    if task_name not in ("classification", "detection"):
        raise ArgumentError(f"vision prune takes classifiers and YOLO detectors, not task {task_name!r}")
    from vision.cli.val import trained_run_args

    given = [override_key(a) for a in train_argv]
    trained = trained_run_args(str(args["weights"]), str(args["model"]), given=given) if args["weights"] else None
    stored = _stored_kwargs(trained[1] if trained else {})
    model_name = str(args["model"] or (trained[1].get("model") if trained else "") or getattr(base, "name", ""))
    # the run's own data settings (input size, normalisation, synthetic.* ...) unless the command line sets them
    train_args = _train_args(task_name, model_name, train_argv, trained[0] if trained else None)
    example = _example(base, int(args["imgsz"] or (train_args["imgsz"] if trained else 0)))
    evaluator = _Evaluator(train_args if any(k in ("data", "recipe") for k in given) else None)
    evaluator.check_classes(base)  # a model of other classes: refused before anything is pruned or written
    if args["method"] == "taylor" and evaluator.task is None:
        raise ArgumentError("method=taylor needs data= (or a recipe naming it): its gradients rank the channels")
    loss_fn = evaluator.calibration_loss(int(args["calibration_batches"])) if args["method"] == "taylor" else None
    pruned = prune_model(copy.deepcopy(base), example, ratio=ratio, method=str(args["method"]), loss_fn=loss_fn)
    info = {"ratio": ratio, "method": str(args["method"]), "base": str(args["weights"] or args["model"])}
    meta = _metadata(base, model_name, task_name, stored, info)
    out = increment_dir(Path(args["project"]) / task_name, str(args["name"]))
    from vision.engine.checkpoint import save_weights

    (out / "weights").mkdir(parents=True, exist_ok=True)
    save_weights(out / "weights" / "best.safetensors", pruned.state_dict(), meta)
    train_args["model_kwargs"] = dict(meta["model_kwargs"])
    prune = {**args, "model": model_name, "train": train_argv}  # this command; the training arguments for vision val
    save_yaml(out / "args.yaml", {**train_args, "weights": "", "project": str(args["project"]), "name": out.name,
                                  "pruned": info, "prune": prune})  # fmt: skip
    runs = int(args["latency_runs"])
    rows = [("base", compression_stats(base, example, runs=runs), evaluator(base))]
    reloaded = vision.load_model(out)  # what users get: checks the stored shapes rebuild
    rows.append(
        (f"pruned {ratio:g} ({args['method']})", compression_stats(reloaded, example, runs=runs), evaluator(reloaded))
    )
    if evaluator.task is not None and "epochs" in given:
        run = _fine_tune(pruned, {**train_args, "project": args["project"]}, meta, f"{out.name}_ft")
        tuned = vision.load_model(run)
        rows.append(("pruned + fine-tuned", compression_stats(tuned, example, runs=runs), evaluator(tuned)))
    metric = evaluator.task.main_metric if evaluator.task is not None else "metric"
    print(_report(rows, metric))
    save_json(out / "report.json", [{"variant": label, **s, metric: value} for label, s, value in rows])
    print(f"pruned model saved to {out}")
    return 0
