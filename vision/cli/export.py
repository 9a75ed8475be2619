"""``vision export`` / ``tools/export.py``: write a model as ONNX with decoding and NMS inside, check it, quantise it.

Usage::

    vision export weights=runs/detection/train format=onnx        # -> runs/detection/train/weights/best.onnx
    vision export model=efficientnet_lite0 weights=lukemelas_in1k source=photos/ int8=true data=photos/
    vision export weights=runs/detection/train int8=true data=bccd imgsz=640
    vision export weights=runs/detection/train int8=true data=synthetic synthetic.val=32   # the run's synthetic.*

Keys: ``weights`` (run folder, weights file, tag or URL), ``model`` (architecture, when ``weights`` does not name it),
``format`` (``onnx``), ``imgsz`` (square input side; default the model's; YOLO rounds it up to its stride, with a
note; a classifier keeps its card's crop ratio), ``batch`` (1), ``dynamic`` (dynamic batch axis; an R-CNN file always
takes any image size), ``opset`` (17 to the highest the installed torch's TorchScript exporter writes, 20; an R-CNN
on a ViT backbone needs 18), ``conf``/``iou`` (in [0, 1]) and ``max_det`` (detector post-processing baked into the
graph; default the model's), ``source`` (images for the onnxruntime check; default ``data``'s val images, else
scikit-image's sample photos), ``check_images`` (8), ``int8`` (also write ``<file>.int8.onnx``, static QDQ), ``data``
(check and calibration images: a registered dataset of the model's task, e.g. ``bccd`` for a detector or ``digits``
for a classifier, a detection data spec, or a folder/glob), ``calib`` (calibration images, 300), ``file`` (output
path); any key of the task's training arguments that shapes the data (``synthetic.val=32``, ``val_fraction=0.1``
...). A bad value (including a ``data=`` of another task and a ``file=`` that cannot be written) stops the command
with one ``error:`` line before anything is written; so does a model the ONNX exporter cannot write (its reason in
that line; the exporter's own output, the traced graph, is not shown).

With ``weights=`` a training run (or a file in its ``weights/``) and ``data=`` the run's own data, the check,
calibration and int8 report images are the run's splits rebuilt from its ``args.yaml``, as ``vision val`` rebuilds
them (``synthetic.*``, ``imgsz``, ``val_fraction`` ...), each key given here overriding the run's; a ``data=`` other
than the run's is built from its own defaults and the keys given here.

The command prints the onnxruntime check against the PyTorch model (classifier: the same top-5 labels, and logits
within ``1e-4 + 1e-5 * max|logit|`` per image, reported separately; detector: boxes at IoU >= 0.99, scores within
1e-3, near ties of NMS and at the ``max_det``/``conf`` cut-off counted; YOLO on the file's letterboxed square canvas,
see :mod:`vision.deploy.check`) and exits 1 when it fails (a detector with no detection on either side says that
nothing was compared, exit 0); with ``int8=true`` it also prints the accuracy (top-1 agreement with fp32) or mAP
delta of int8 against fp32 on the validation split.
"""

from __future__ import annotations

import os
import sys
from collections.abc import Mapping, Sequence
from pathlib import Path
from typing import Any

import numpy as np
import torch

from vision.cli.common import USER_ERRORS, command_line, fail, user_message
from vision.utils.keys import ArgumentError, check_keys, flag, integer, number, override_key, parse_overrides

__all__ = ["KEYS", "SCHEMA", "main"]

KEYS: dict[str, Any] = {
    "model": "",
    "weights": "",
    "format": "onnx",
    "imgsz": None,
    "batch": 1,
    "dynamic": False,
    "opset": 17,
    "conf": None,
    "iou": None,
    "max_det": None,
    "source": "",
    "check_images": 8,
    "int8": False,
    "data": "",
    "calib": 300,
    "file": "",
}

#: the type and range of each key: a bad value stops the command with one line before anything is loaded or written
SCHEMA = {
    "imgsz": integer(1),
    "batch": integer(1),
    "dynamic": flag(),
    "opset": integer(17),
    "conf": number(0.0, 1.0),
    "iou": number(0.0, 1.0),
    "max_det": integer(1),
    "check_images": integer(1),
    "int8": flag(),
    "calib": integer(1),
}


def _output_path(args: dict[str, Any], model: Any) -> Path:
    if args["file"]:
        return Path(args["file"])
    from vision._loader import find_trained_file

    found = find_trained_file(args["weights"]) if args["weights"] else None
    if found is not None:
        return found[0].with_suffix(".onnx")
    w = Path(str(args["weights"]))
    if args["weights"] and w.is_file():
        return w.with_suffix(".onnx")
    tag = f".{args['weights']}" if args["weights"] else ""
    return Path(f"{args['model'] or getattr(model, 'name', 'model')}{tag}.onnx")


def _check_output(path: Path, given: bool) -> None:
    """``ArgumentError`` naming ``file=`` when ``path`` cannot be written (a folder, under a file, read-only)."""
    key = f"file={path}" if given else f"the output {path} (choose another with file=)"
    if path.is_dir():
        raise ArgumentError(f"{key} is a folder: name the .onnx file to write")
    parent = path.absolute().parent
    while not parent.exists():
        parent = parent.parent
    if not parent.is_dir():
        raise ArgumentError(f"{key} cannot be written: {parent} is a file, not a folder")
    if not os.access(path if path.exists() else parent, os.W_OK):
        raise ArgumentError(f"{key} cannot be written: {path if path.exists() else parent} is read-only")


def _check_data_name(data: str) -> None:
    """Before the model is loaded: ``data=`` must be a registered dataset, a data spec, or match images."""
    from vision.registry import DATASETS

    if data in DATASETS:
        return
    from vision.tasks.detection.data import load_data_spec

    try:
        load_data_spec(data)
        return
    except (ValueError, OSError, KeyError):
        _image_files(data, "data")


#: the data a task trains on when its ``data`` is empty (to tell whether ``data=`` names a run's own data)
_DEFAULT_DATA = {"detection": "synthetic", "classification": "digits"}


def _same_data(given: str, ran: str) -> bool:
    """Whether ``data=given`` names the data a run recorded as ``ran`` (the same name, or the same file or folder)."""
    if given == ran:
        return True
    a, b = Path(given), Path(ran)
    return a.exists() and b.exists() and a.resolve() == b.resolve()


def _trained_run(args: dict[str, Any], task: str) -> dict[str, Any] | None:
    """The training arguments of ``weights=`` (a run folder, a file in its ``weights/``, or a ``.safetensors`` file
    written by training; see :func:`vision.cli.val.trained_run_args`) when ``data=`` names that run's own data."""
    from vision.cli.val import trained_run_args

    if not args["weights"] or not args["data"]:
        return None
    trained = trained_run_args(str(args["weights"]), str(args["model"] or ""), given=("data", "imgsz", "batch"))
    ran = trained[0].get("data") if trained is not None else None
    if not isinstance(ran, str) or not _same_data(str(args["data"]), ran or _DEFAULT_DATA.get(task, "")):
        return None
    return trained[0]


def _runs_data(args: dict[str, Any]) -> str:
    """The ``data`` a training run named by ``weights=`` trained on (its task's default data when it recorded none),
    or ``""`` when ``weights=`` names no training run."""
    from vision.cli.val import trained_run_args

    trained = trained_run_args(str(args["weights"]), str(args["model"] or "")) if args["weights"] else None
    if trained is None:
        return ""
    run = trained[0]
    return str(run.get("data") or _DEFAULT_DATA.get(str(run.get("task")), ""))


def _data_args(args: dict[str, Any], task_argv: Sequence[str], task: str) -> dict[str, Any]:
    """The training arguments that shape ``data=``'s splits (:func:`_data_split`): a trained run's own (when
    ``data=`` names its data, :func:`_trained_run`) with the command line's keys applied, else only the command
    line's (``imgsz=`` and the task's keys in ``task_argv``, e.g. ``synthetic.val=32``).

    Raises:
        ArgumentError: a key of ``task_argv`` that the task's training arguments lack, or a bad value.
    """
    from vision.engine.config import COMMON_SCHEMA, resolve_args
    from vision.engine.task import get_task

    run = _trained_run(args, task)
    base = run if run is not None else resolve_args([f"task={task}"])
    given = [override_key(a) for a in task_argv]
    known = {**KEYS, **base}  # a misspelt key is told the closest of the export's and the task's keys
    shaped = {k: v for k, v in parse_overrides(task_argv, known, open_sections=("model_kwargs",)).items() if k in base}
    shaped = check_keys(shaped, {**COMMON_SCHEMA, **get_task(task).schema}, base, only=given)
    if args["imgsz"] is not None:
        shaped["imgsz"], given = int(args["imgsz"]), [*given, "imgsz"]
    return shaped if run is not None else {k: shaped[k] for k in {g.split(".")[0] for g in given}}


def _data_split(data: str, task: str, split: str, shaping: Mapping[str, Any] | None = None) -> Any | None:
    """The ``split`` of a registered dataset of ``task`` (or of a detection data spec), items ``(uint8 [3, H, W],
    target)``; ``None`` when ``data`` is neither (a folder or glob); ``ValueError`` for a dataset of another task.

    ``shaping`` (:func:`_data_args`) gives what the task gives the dataset: ``imgsz`` and ``val_fraction`` for a
    classification dataset, the ``synthetic`` section for ``data=synthetic``; a key it lacks keeps the dataset's
    default."""
    from vision.tasks._data import registered_split

    shaping = shaping or {}
    offered: dict[str, Any] = {"transform": None}
    options: dict[str, Any] = {}
    if task == "classification":
        offered |= {name: shaping[key] for key, name in (("imgsz", "size"), ("val_fraction", "val_fraction"))
                    if shaping.get(key) is not None}  # fmt: skip
    elif data == "synthetic":
        options = dict(shaping.get("synthetic") or {})
    ds = registered_split(data, task, split, offered, options)
    if ds is not None or task != "detection":
        return ds
    from vision.tasks.detection.data import load_data_spec

    try:
        spec = load_data_spec(data)
    except (ValueError, OSError, KeyError):
        return None
    from vision.data import CocoDetection

    return CocoDetection(*spec[split]) if split in spec else None


def _image_files(source: str | list[str], key: str = "source") -> list[Path]:
    """The image files of ``source``; a path that matches nothing is named as the user's ``key=`` (``data=``)."""
    from vision.io import expand_source

    try:
        return expand_source(source)
    except FileNotFoundError as err:
        if key == "source":
            raise
        detail = str(err).removeprefix(f"source {source!r} ")
        if key == "data" and detail.startswith("is not "):
            detail = "is not a registered dataset, a data spec, " + detail.removeprefix("is not ")
        raise ArgumentError(f"{key}={source} {detail}") from None


def _sample_photos() -> list[torch.Tensor]:
    """scikit-image's colour sample photos (and scikit-learn's), uint8 ``[3, H, W]``."""
    photos: list[np.ndarray] = []
    try:
        import skimage.data as sk

        for name in ("astronaut", "chelsea", "coffee", "rocket", "cat", "retina", "immunohistochemistry"):
            fn = getattr(sk, name, None)
            if fn is not None:
                try:
                    photos.append(fn())
                except Exception:
                    continue
    except ImportError:
        pass
    try:
        from sklearn.datasets import load_sample_images

        photos.extend(load_sample_images().images)
    except ImportError:
        pass
    return [torch.from_numpy(np.array(p[..., :3])).permute(2, 0, 1) for p in photos if p.ndim == 3]


def _images(
    args: dict[str, Any], split: str, limit: int, task: str, shaping: Mapping[str, Any] | None = None
) -> list[torch.Tensor]:
    """Up to ``limit`` uint8 ``[3, H, W]`` images: ``source`` (check) or ``data``'s ``split`` (a dataset of the
    model's ``task``, shaped by ``shaping``: :func:`_data_split`), else sample photos."""
    from vision.io import read_image

    where = args["source"] if split == "check" else ""
    data = str(args["data"] or "")
    if not where and data:
        ds = _data_split(data, task, "val" if split in ("check", "val") else "train", shaping)
        if ds is not None:
            n = min(limit, len(ds))
            idx = np.linspace(0, len(ds) - 1, n).round().astype(int) if split == "check" else range(n)
            return [ds[int(i)][0] for i in idx]
        where = data
    if where:
        files = _image_files(where, "source" if split == "check" and args["source"] else "data")
        if not files:
            raise ArgumentError(f"no images in {where!r}")
        return [read_image(f) for f in files[:limit]]
    photos = _sample_photos()
    if not photos:
        raise ArgumentError("source= is required for the onnxruntime check (a folder or glob of real images)")
    return photos[:limit]


def _calibration(onnx_model: Any, images: Sequence[torch.Tensor]) -> list[np.ndarray]:
    if onnx_model.kind == "classifier":
        t = onnx_model.eval_transforms()
        return [t(im)[None].numpy() for im in images]
    if onnx_model.kind == "rcnn":
        return [(im.float() / 255).numpy() for im in images]
    out = []
    for im in images:
        x, _ = onnx_model.prepare([im.float() / 255])
        out.append(np.repeat(x.numpy(), onnx_model.fixed_batch or 1, 0))
    return out


def _int8_report(args: dict[str, Any], fp32: Any, int8: Any, shaping: Mapping[str, Any] | None = None) -> str:
    """Accuracy or mAP of int8 against fp32 on the validation split (shaped by ``shaping``: :func:`_data_split`), or
    on the check images."""
    data = str(args["data"] or "")
    ds = _data_split(data, fp32.task, "val", shaping) if data else None  # None for a folder or glob: no val split
    if ds is not None and fp32.task == "detection":
        from vision.tasks.detection.coco_eval import COCOEvaluator, coco_from_dataset

        gt = coco_from_dataset(ds)
        maps = []
        for model in (fp32, int8):
            ev = COCOEvaluator(gt, label_to_cat_id=getattr(ds, "label_to_cat_id", None))
            for i in range(len(ds)):
                image, target = ds[i]
                ev.update(model.predict([image.float() / 255]), [int(target["image_id"])])
            maps.append(ev.evaluate(synchronize=False))
        a, b = maps
        return (f"int8 vs fp32 on {data} val ({len(ds)} images): mAP50-95 {b['map'] * 100:.2f} vs {a['map'] * 100:.2f} "
                f"(delta {(b['map'] - a['map']) * 100:+.2f} points), mAP50 {b['map50'] * 100:.2f} vs "
                f"{a['map50'] * 100:.2f} (delta {(b['map50'] - a['map50']) * 100:+.2f})")  # fmt: skip
    images = _images(args, "val" if data else "check", 200, fp32.task, shaping)
    if not data:
        where = f"{len(images)} check images"
    elif ds is not None:
        where = f"{data} val ({len(images)} images)"
    else:  # a folder or glob has no validation split: the images are (some of) the calibration images
        where = f"{len(images)} images of data={data}, which also calibrated it (no validation split)"
    if fp32.task == "classification":
        t = fp32.eval_transforms()
        x = torch.stack([t(im) for im in images])
        same = (fp32(x).argmax(-1) == int8(x).argmax(-1)).float().mean().item()
        return f"int8 vs fp32 on {where}: same top-1 on {same * 100:.1f}%"
    floats = [im.float() / 255 for im in images]
    n32 = sum(len(d["scores"]) for d in fp32.predict(floats))
    n8 = sum(len(d["scores"]) for d in int8.predict(floats))
    return f"int8 vs fp32 on {where}: {n8} vs {n32} detections"


def _size_note(imgsz: int | None, onnx_model: Any) -> None:
    """Say on stderr when the file does not take ``imgsz`` x ``imgsz`` inputs (rounded to the stride, or R-CNN)."""
    if imgsz is None:
        return
    if onnx_model.kind == "rcnn":
        print(f"note: imgsz={imgsz} is not used: an R-CNN file resizes each image inside the graph", file=sys.stderr)
    elif int(onnx_model.imgsz) != imgsz:
        stride = (onnx_model.preprocess or {}).get("stride")
        why = f"a multiple of the model's stride {stride}" if stride else "the size the model takes"
        print(f"note: imgsz={imgsz} was rounded up to {onnx_model.imgsz} ({why}): the file takes "
              f"{onnx_model.imgsz}x{onnx_model.imgsz} inputs", file=sys.stderr)  # fmt: skip


def run(args: dict[str, Any], task_argv: Sequence[str] = ()) -> tuple[Path, bool]:
    """Export, check (and quantise) as the keys say (``task_argv``: the task's data keys, e.g. ``synthetic.val=32``);
    returns ``(fp32 file, check passed)``."""
    import vision
    from vision.deploy import check_export, export_onnx, load_onnx, quantize_int8
    from vision.deploy.export import MIN_OPSET, max_opset, model_kind

    if str(args["format"]).lower() != "onnx":
        raise ArgumentError(f"format={args['format']!r} is not supported (only format=onnx)")
    if not args["weights"] and not args["model"]:
        raise ArgumentError("weights= is required (a run folder, a weights file or a tag; model= for a plain file)")
    if int(args["opset"]) > max_opset():
        raise ArgumentError(f"opset={args['opset']} is not supported: the TorchScript ONNX exporter of torch "
                            f"{torch.__version__} writes opsets {MIN_OPSET} to {max_opset()}")  # fmt: skip
    if args["int8"] and not args["data"]:
        args["data"] = _runs_data(args)
        if not args["data"]:
            raise ArgumentError("int8=true needs data= (calibration images: a dataset name, a data spec or a folder)")
        print(f"int8=true: calibration and report on the run's data={args['data']} (data= chooses other images)")
    if args["file"]:
        _check_output(Path(args["file"]), True)
    if args["data"]:
        _check_data_name(str(args["data"]))  # a bad data= is named before the model is loaded
    if args["source"]:
        _image_files(args["source"])  # as is a bad source= (a path, a glob or a list of them)
    model = vision.load_model(str(args["weights"]) or None, model=str(args["model"]) or None)
    task = "classification" if model_kind(model) == "classifier" else "detection"
    path = _output_path(args, model)
    _check_output(path, bool(args["file"]))
    shaping = _data_args(args, task_argv, task)  # a trained run's data settings, the keys given here applied
    # every image is read before the file is written: a data= of another task stops the command here
    images = [im.float() / 255 for im in _images(args, "check", int(args["check_images"]), task, shaping)]
    calib_images = _images(args, "train", int(args["calib"]), task, shaping) if args["int8"] else []
    export_onnx(model, path, imgsz=args["imgsz"], batch=int(args["batch"]), dynamic=bool(args["dynamic"]),
                opset=int(args["opset"]), score_threshold=args["conf"], iou_threshold=args["iou"],
                max_det=args["max_det"])  # fmt: skip
    size = path.stat().st_size / 2**20
    print(f"exported {path} ({size:.1f} MB, opset {args['opset']}, vision-zoo {vision.__version__})")
    onnx_model = load_onnx(path)
    _size_note(args["imgsz"], onnx_model)
    result = check_export(model, onnx_model, images)
    for line in result.lines:
        print(f"  {line}")
    print(result.summary())
    if args["int8"]:
        calib = _calibration(onnx_model, calib_images)
        q = quantize_int8(path, path.with_suffix(".int8.onnx"), calib)
        print(f"exported {q} ({q.stat().st_size / 2**20:.1f} MB, int8 QDQ, {len(calib)} calibration images)")
        print(_int8_report(args, onnx_model, load_onnx(q), shaping))
    return path, result.ok


def main(argv: Sequence[str] | None = None) -> int:
    """Entry point of ``vision export`` and ``tools/export.py``; 0, 1 (check failed) or 2 (bad input)."""
    argv = command_line(argv, __doc__)
    if argv is None:
        return 0
    try:
        own = [a for a in argv if "=" not in a or override_key(a) in KEYS]  # the rest: the task's data keys
        _, ok = run(check_keys(parse_overrides(own, KEYS), SCHEMA, KEYS), [a for a in argv if a not in own])
    except (*USER_ERRORS, OSError, RuntimeError, NotImplementedError) as err:  # one error line, exit 2
        fail(user_message(err))
    if not ok:
        print("error: the exported file does not reproduce the PyTorch model (see the check above)", file=sys.stderr)
        return 1
    return 0
