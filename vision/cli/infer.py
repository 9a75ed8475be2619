"""``tools/infer.py``: run a model on images, folders or globs and write annotated results plus JSON.

Usage::

    python tools/infer.py model=efficientnet_lite0 weights=lukemelas_in1k source=cat.jpg topk=5

Keys: ``model``, ``weights`` (tag, path, URL or a training run folder), ``source`` (image, folder, glob), ``topk``,
``batch``, ``device``, ``project``, ``name``. Each task adds its own keys (detection: ``conf``, ``classes`` ...).
Results go to ``<project>/<task>/<name>`` (auto-incremented); the last line printed names that folder.
"""

from __future__ import annotations

import json
import sys
from collections.abc import Callable, Sequence
from pathlib import Path
from typing import Any

import torch

from vision.cli.args import ArgumentError, parse_overrides
from vision.cli.common import fail, increment_dir, pick_device

__all__ = ["COMMON_KEYS", "main", "register_inference"]

COMMON_KEYS: dict[str, Any] = {
    "model": "",
    "weights": "",
    "source": "",
    "device": "auto",
    "batch": 16,
    "project": "runs",
    "name": "infer",
    "topk": 5,
}

_TASKS: dict[str, tuple[dict[str, Any], Callable[[dict[str, Any]], Path]]] = {}


def register_inference(task: str, keys: dict[str, Any]) -> Callable[[Callable[[dict[str, Any]], Path]], Any]:
    """Register the inference routine of a task and the extra keys it accepts."""

    def decorator(fn: Callable[[dict[str, Any]], Path]) -> Callable[[dict[str, Any]], Path]:
        _TASKS[task] = (keys, fn)
        return fn

    return decorator


def _task_of(model: str) -> str:
    from vision._api import resolve_entry

    return resolve_entry(model).task or "classification"


def load_model_for_inference(args: dict[str, Any], device: torch.device) -> torch.nn.Module:
    """Build ``args["model"]`` with ``args["weights"]`` (tag, path, URL, or a training run) on ``device``, eval mode."""
    import vision

    run = _run_dir(args.get("weights") or "")
    if run is not None:
        from vision.engine.checkpoint import load_run_model

        model = load_run_model(run, weights=args["weights"], model=args.get("model") or None)
    else:
        if not args["model"]:
            raise ArgumentError("model= is required (e.g. model=resnet50), unless weights= names a training run")
        weights: Any = args["weights"] or None
        model = vision.create_model(args["model"], weights=weights)
    return model.to(device).eval()


def _run_dir(weights: str) -> Path | None:
    """The run folder if ``weights`` is a run folder or a file inside its ``weights/`` folder."""
    if not weights:
        return None
    p = Path(weights)
    for candidate in (p, p.parent.parent if p.parent.name == "weights" else None):
        if candidate is not None and (candidate / "args.yaml").is_file() and (candidate / "weights").is_dir():
            return candidate
    return None


@register_inference("classification", {})
def infer_classification(args: dict[str, Any]) -> Path:
    """Top-k classes for each image; prints them and writes ``predictions.json``."""
    from vision.io import expand_source, read_image

    device = pick_device(args["device"])
    model = load_model_for_inference(args, device)
    files = expand_source(args["source"])
    transform = model.eval_transforms()
    out_dir = increment_dir(Path(args["project"]) / "classification", args["name"])
    results = []
    batch = max(1, int(args["batch"]))
    for start in range(0, len(files), batch):
        chunk = files[start : start + batch]
        x = torch.stack([transform(read_image(f)) for f in chunk]).to(device)
        for path, top in zip(chunk, model.predict(x, topk=int(args["topk"]))):
            results.append(
                {"file": str(path), "top": [{"label": i, "name": n, "prob": round(p, 6)} for i, n, p in top]}
            )
            shown = ", ".join(f"{n} ({i}) {p:.3f}" for i, n, p in top)
            print(f"{path}: {shown}")
    (out_dir / "predictions.json").write_text(json.dumps(results, indent=2), encoding="utf-8")
    return out_dir


def main(argv: Sequence[str] | None = None) -> int:
    """Entry point of ``tools/infer.py``."""
    argv = list(sys.argv[1:] if argv is None else argv)
    if any(a in ("-h", "--help", "help") for a in argv):
        print(__doc__)
        return 0
    try:
        import vision.models  # noqa: F401  (registers task inference routines)

        pre = {a.split("=", 1)[0]: a.split("=", 1)[1] for a in argv if "=" in a}
        model_name = pre.get("model", "")
        run = _run_dir(pre.get("weights", ""))
        if run is not None and not model_name:
            import yaml

            model_name = (yaml.safe_load((run / "args.yaml").read_text()) or {}).get("model", "")
        task = _task_of(model_name) if model_name else "classification"
        if task not in _TASKS:
            raise ArgumentError(f"inference for task {task!r} ({model_name}) is not available")
        extra, fn = _TASKS[task]
        args = parse_overrides(argv, {**COMMON_KEYS, **extra})
        if not args["source"] and task != "generation":
            raise ArgumentError("source= is required (an image, a folder or a glob)")
        out_dir = fn(args)
    except (ArgumentError, OSError, ValueError, KeyError, RuntimeError) as err:
        fail(str(err))
    print(f"results saved to {out_dir}")
    return 0
