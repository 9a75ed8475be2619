"""``tools/infer.py``: run a model on images, folders, globs or videos and write its results to a run folder.

What is written depends on the task: a detector, each image or video annotated plus JSON (``labels/<stem>.json``,
``predictions_coco.json``); a classifier, ``predictions.json`` (the top-k classes of each image); a generator, the
images it draws (PNG files, a grid, ``samples.json``); with ``explain=``, a heat map per image. In a folder or glob,
unreadable images are skipped with a warning.

Usage::

    python tools/infer.py model=efficientnet_lite0 weights=lukemelas_in1k source=cat.jpg topk=5
    python tools/infer.py weights=runs/detection/train source=cells/ conf=0.4

Keys: ``model``, ``weights`` (tag, path, URL, a training run folder or a file written by training), ``source``
(image, folder, glob), ``batch``, ``device``, ``project``, ``name``. Each task adds its own keys (classification:
``topk``; detection: ``conf``, ``iou``, ``max_det``, ``classes`` ...; generation: ``n``, ``seed``, ``steps`` ...).
Results go to ``<project>/<task>/<name>`` (auto-incremented); the last line printed names that folder.

The model is loaded by :func:`vision.load_model`; the task (found in :data:`vision.registry.TASKS`) runs the
inference, so a task that a plugin registers works here too.
"""

from __future__ import annotations

import sys
from collections.abc import Sequence
from typing import Any

from vision.cli.common import USER_ERRORS, check_onnx_model_key, command_line, fail, interrupted, user_message
from vision.utils.keys import ArgumentError, check_keys, integer, number, override_key, parse_overrides

__all__ = ["COMMON_KEYS", "main"]

COMMON_KEYS: dict[str, Any] = {
    "model": "",
    "weights": "",
    "source": "",
    "device": "auto",
    "batch": 16,
    "project": "runs",
    "name": "infer",
}


#: declared types and ranges of the inference keys (others: the type of their default)
INFER_SCHEMA = {
    "batch": integer(1),
    "topk": integer(1),
    "conf": number(0.0, 1.0),
    "iou": number(0.0, 1.0),
    "max_det": integer(1),
    "imgsz": integer(1),
    "line_width": integer(1),
    "n": integer(1),
    "steps": integer(1),
    "nrow": integer(0),
    "guidance_scale": number(0.0),
    "eta": number(0.0, 1.0),
}


def _task_name(model: str, weights: str) -> str:
    """The task of the model named by ``model=`` or stored with ``weights=`` (a run or a file written by training)."""

    from vision._loader import find_trained_file, run_args
    from vision.registry import resolve_entry

    found = find_trained_file(weights) if weights else None
    if found is not None:
        _, meta, run = found
        args = run_args(run)
        task = meta.get("task") or args.get("task")
        if task:
            return str(task)
        model = model or str(meta.get("model") or args.get("model") or "")
    if not model:
        raise ArgumentError("model= is required (e.g. model=resnet50), unless weights= names a training run")
    return resolve_entry(model).task or "classification"


def main(argv: Sequence[str] | None = None) -> int:
    """Entry point of ``tools/infer.py``."""
    argv = command_line(argv, __doc__)
    if argv is None:
        return 0
    try:
        from vision.engine.task import get_task

        pre = {override_key(a): a.split("=", 1)[1] for a in argv if "=" in a}  # --weights=x is weights=x
        onnx_model = None
        if pre.get("weights", "").lower().endswith(".onnx"):  # an exported file: onnxruntime, no model code
            from vision.deploy import load_onnx

            onnx_model = load_onnx(pre["weights"])
            check_onnx_model_key(pre.get("model", ""), pre["weights"], onnx_model)
        task = get_task(onnx_model.task if onnx_model else _task_name(pre.get("model", ""), pre.get("weights", "")))
        keys = {**COMMON_KEYS, **task.infer_keys}
        args = check_keys(parse_overrides(argv, keys), INFER_SCHEMA, keys)
        if onnx_model is not None:
            if args.get("explain"):
                raise ArgumentError(
                    f"explain={args['explain']} needs the PyTorch model (a run or a weights file), not the exported "
                    f"{pre['weights']}"
                )
            args["_model"] = onnx_model
        if not args["source"] and task.name != "generation":
            raise ArgumentError("source= is required (an image, a folder or a glob)")
        if args["source"] and task.name == "generation":
            raise ArgumentError(
                f"source={args['source']} does not apply to a generator: it draws new images (n= sets how many)"
            )
        out_dir = task.infer(args)
    except (*USER_ERRORS, OSError, RuntimeError, NotImplementedError) as err:
        fail(user_message(err))
    except KeyboardInterrupt:  # tools/infer.py; a folder of files written so far stays
        interrupted()
    if _random_weights(args, onnx_model):  # said with the results, on stderr (a refused run says only its error)
        sys.stdout.flush()
        print(f"warning: model={args['model']} without weights=: its weights are random, so are its predictions; "
              "give weights= (a tag, a file or a training run)", file=sys.stderr, flush=True)  # fmt: skip
    print(f"results saved to {out_dir}")
    return 0


def _random_weights(args: dict[str, Any], onnx_model: Any) -> bool:
    """Whether the model runs with random weights: ``model=resnet18`` without ``weights=`` (``resnet18.tv_in1k``,
    an exported file and a run carry theirs)."""
    from vision.registry import split_name

    return not args["weights"] and onnx_model is None and not split_name(str(args["model"]))[1]
