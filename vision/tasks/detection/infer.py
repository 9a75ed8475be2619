"""``tools/infer.py`` for detectors: annotated images and videos plus JSON, for every model of task ``detection``.

Usage::

    python tools/infer.py weights=runs/detection/train/weights/best.safetensors source=cells/ conf=0.4
    python tools/infer.py model=fasterrcnn_resnet50_fpn weights=tv_coco source=street.mp4 classes=person,car

Keys (besides the common ones): ``conf`` (score threshold), ``iou`` (NMS IoU threshold; default: the model's),
``max_det`` (detections per image; default: the model's), ``imgsz`` (inference size, the longer side, for models
whose ``predict`` takes one, e.g. YOLO; default: the size it was trained at; a model of fixed input size, such as an
exported file, accepts only its own), ``classes`` (keep only these classes: names or data-set
label indices, e.g. ``classes=[0,2]`` or ``classes=RBC,WBC``; up to ``max_det`` detections of them, the filter
comes before the cut), ``line_width`` (box outline in pixels),
``save_json``, ``explain`` (``gradcam`` or ``eigencam``: a heat map ``<stem>_<method>.png`` beside each annotated
image, YOLO models only; refused for videos) and ``explain_class`` (with ``explain=gradcam``). Every key is checked
before anything is written.

Outputs in ``<project>/detection/<name>``: each image annotated (boxes, class names, scores, masks) as
``<stem><ext>`` (``.jpg``, ``.jpeg``, ``.png`` and ``.bmp`` keep their extension, other images are written as
``.png``); each video as ``<stem>.mp4`` (OpenCV ``VideoCapture`` -> ``VideoWriter``, mp4v, the source's frame rate);
``labels/<stem>.json`` per file (``{"file": <source path>, "detections"}``; per frame for videos: ``[{"frame",
"detections"}]``) with ``box`` (xyxy pixels), ``score``, ``label`` (data-set label), ``name`` and, for masks,
``segmentation`` (COCO RLE); with ``explain=``, ``<stem>_<method>.png``; and ``predictions_coco.json`` for all
images in COCO format (``images`` with ``file_name`` = the source path, ``categories``, ``annotations`` with
``score``; ``category_id = label + 1``).

No output of a run overwrites another: all outputs of one source share one name, ``<stem>``, and when one of them
is already taken in this run (the same stem in another folder of a glob, or beside it with another extension; names
compared without case) the source gets ``<stem>_2``, ``<stem>_3`` ..., the first free, in source order. The JSON's
``"file"`` still names the source. Sources are handled in source order (consecutive images in batches of ``batch``).

Several sources (a folder or a glob): an unreadable image (:class:`vision.io.ImageReadError`) or a video OpenCV
cannot open is skipped with one ``warning: <path>: <reason>; skipped`` line, the run goes on and its end counts the
skipped files; when no source is readable, it is an error. A single unreadable file is an error. A run that fails
before writing anything leaves no run folder behind.
"""

from __future__ import annotations

import inspect
import itertools
import sys
from collections.abc import Sequence
from pathlib import Path
from typing import Any

import torch
from torch import Tensor, nn

from vision._loader import load_model
from vision.models._predict import SOURCE_CONF
from vision.models.detection.common import filter_detections, label_offset, to_dataset_detections
from vision.results import Results
from vision.tasks._explain import EXPLAIN_KEYS, check_explain, write_explanation
from vision.tasks._outputs import RunOutputs, count_skipped, read_images, run_folder
from vision.utils.files import save_json

__all__ = ["DETECTION_KEYS", "infer_detection", "resolve_classes"]

DETECTION_KEYS: dict[str, Any] = {
    "conf": SOURCE_CONF,  # the same default as predict(source)
    "iou": None,
    "max_det": None,
    "imgsz": None,
    "classes": None,
    "line_width": 2,
    "save_json": True,
    **EXPLAIN_KEYS,
}


def resolve_classes(classes: Any, names: Sequence[str] | None, num_classes: int | None = None) -> list[int] | None:
    """``classes=`` (names and/or data-set indices; list or comma-separated string) -> data-set label indices.

    Args:
        classes: ``None``/``""`` (keep all), an index, a name, or a list / comma-separated string of them.
        names: the model's class names (data-set label space), or ``None``.
        num_classes: data-set classes of the model when it has no names (bounds the indices), or ``None``.

    Raises:
        ValueError: an unknown name, or an index outside ``[0, K)`` (``K = len(names)`` or ``num_classes``).
    """
    if classes is None or classes == "":
        return None
    items = (
        classes.split(",")
        if isinstance(classes, str)
        else list(classes)
        if isinstance(classes, list | tuple)
        else [classes]
    )
    count = len(names) if names is not None else num_classes
    out = []
    for item in items:
        text = str(item).strip()
        if text.lstrip("-").isdigit():
            index = int(text)
            if index < 0 or (count is not None and index >= count):
                valid = f"[0, {count - 1}]" if count is not None else "indices >= 0"
                known = f" ({', '.join(f'{i}={n}' for i, n in enumerate(names))})" if names is not None else ""
                raise ValueError(f"classes: index {index} is out of range; valid: {valid}{known}")
            out.append(index)
        elif names is not None and text in names:
            out.append(list(names).index(text))
        else:
            known = ", ".join(names) if names else "the model has no class names; use indices"
            raise ValueError(f"classes: unknown class {text!r} (known: {known})")
    return out


class _Runner:
    """Predict and filter batches of uint8 images into :class:`~vision.results.Results`."""

    def __init__(self, model: nn.Module, args: dict[str, Any], device: torch.device) -> None:
        self.model, self.device = model, device
        self.offset = label_offset(model)
        self.names = getattr(model, "categories", None)
        self.conf = float(args["conf"]) if args.get("conf") is not None else None
        total = getattr(model, "num_classes", None)
        self.classes = resolve_classes(
            args.get("classes"), self.names, int(total) - self.offset if total is not None else None
        )
        wanted: dict[str, Any] = {}
        if self.conf is not None:
            wanted["score_threshold"] = self.conf
        if args.get("iou") is not None:
            wanted["iou_threshold"] = float(args["iou"])
        self.max_det = int(args["max_det"]) if args.get("max_det") is not None else None
        if self.max_det is not None:
            wanted["max_det"] = self.max_det
        # the overrides this detector's predict takes (decided once; the rest is filtered afterwards)
        params = inspect.signature(model.predict).parameters
        if any(p.kind is inspect.Parameter.VAR_KEYWORD for p in params.values()):
            self.options = wanted
        else:
            self.options = {k: v for k, v in wanted.items() if k in params}
        if self.classes is not None:
            self._classes_before_max_det(model, "max_det" in self.options or "max_det" in params)
        if args.get("imgsz") is not None:
            self.options.update(_imgsz_option(model, int(args["imgsz"]), "imgsz" in params))
        self.line_width = int(args.get("line_width") or 2)

    def _classes_before_max_det(self, model: nn.Module, takes_max_det: bool) -> None:
        """``classes=`` keeps up to ``max_det`` detections *of those classes*, as ultralytics does, not what is left
        of the model's ``max_det`` best after the others are dropped: the model is asked for every detection
        (:data:`ALL_DETECTIONS`; its NMS is per class, so dropping classes afterwards is the same as before), and the
        cut to ``max_det`` (the model's own by default) comes after the class filter. An exported file cuts inside
        its graph: said in one line."""
        own = next((v for v in _max_det_defaults(model) if v is not None), None)
        if takes_max_det:
            self.max_det = self.max_det if self.max_det is not None else own
            self.options["max_det"] = ALL_DETECTIONS
        elif own is not None:
            print(f"classes= keeps the wanted classes among the {own} detections the exported file returns per image "
                  "(its max_det, applied inside the file)")  # fmt: skip

    @torch.no_grad()
    def __call__(self, images: list[Tensor], paths: Sequence[str | None] | None = None) -> list[Results]:
        """``uint8 [3, H, W]`` images -> one :class:`~vision.results.Results` each (filtered, data-set labels)."""
        x = [img.to(self.device).float().div_(255.0) for img in images]
        dets = to_dataset_detections(self.model.predict(x, **self.options), self.offset)
        paths = list(paths) if paths is not None else [None] * len(images)
        return [
            Results.from_detections(
                img.cpu(),
                filter_detections(d, score_threshold=self.conf, classes=self.classes, max_det=self.max_det),
                self.names,
                path,
            )
            for img, d, path in zip(images, dets, paths)
        ]


#: ``max_det`` asked of a model when ``classes=`` filters its output (the class filter comes before the real cut)
ALL_DETECTIONS = 100_000


def _max_det_defaults(model: nn.Module) -> list[int | None]:
    """Where detectors keep their default detections per image: ``max_det`` (YOLO), ``detections_per_img`` (SSD),
    ``roi_heads.detections_per_img`` (R-CNN), the ``max_det`` of an exported file's metadata."""
    heads = getattr(model, "roi_heads", None)
    meta = getattr(model, "metadata", None)
    found = [
        getattr(model, "max_det", None),
        getattr(model, "detections_per_img", None),
        getattr(heads, "detections_per_img", None),
        meta.get("max_det") if isinstance(meta, dict) else None,
    ]
    out: list[int | None] = []
    for value in found:
        try:
            out.append(int(float(value)) if value is not None and not isinstance(value, bool) else None)
        except (TypeError, ValueError):
            out.append(None)
    return out


def _imgsz_option(model: nn.Module, imgsz: int, takes_it: bool) -> dict[str, int]:
    """``{"imgsz": imgsz}`` for a ``predict`` that takes it; nothing for a fixed-size model already at that size (an
    exported file: :func:`~vision.deploy.runtime.check_exported_imgsz`, as ``vision val`` checks it); ``ValueError``
    otherwise (the size would be silently ignored)."""
    if takes_it:
        return {"imgsz": imgsz}
    from vision.deploy.runtime import OnnxModel, check_exported_imgsz

    if isinstance(model, OnnxModel):
        check_exported_imgsz(imgsz, str(model.path), model)
        return {}
    fixed = getattr(model, "imgsz", None)
    name = getattr(model, "name", None) or getattr(model, "metadata", {}).get("model") or type(model).__name__
    if fixed is not None and int(fixed) == imgsz:
        return {}
    size = f"its fixed input size is {int(fixed)}" if fixed is not None else "it sizes its input itself"
    raise ValueError(f"imgsz={imgsz} does not apply to {name}: {size}; leave imgsz= out")


def _video(runner: _Runner, path: Path, out: Path, labels: Path | None, batch: int) -> int:
    """Annotate a video frame by frame into ``out`` (``.mp4``) and, unless ``labels`` is ``None``, its detections per
    frame into ``labels``; returns the number of frames."""
    import cv2

    cap = cv2.VideoCapture(str(path))
    if not cap.isOpened():
        raise OSError(f"cannot open video {path}")
    fps = cap.get(cv2.CAP_PROP_FPS) or 25.0
    writer = None
    frames: list[dict[str, Any]] = []
    index = 0
    try:
        while True:
            chunk = []
            for _ in range(batch):
                ok, frame = cap.read()
                if not ok:
                    break
                chunk.append(torch.from_numpy(cv2.cvtColor(frame, cv2.COLOR_BGR2RGB)).permute(2, 0, 1).contiguous())
            if not chunk:
                break
            for result in runner(chunk):
                drawn = result.plot(line_width=runner.line_width)
                if writer is None:
                    h, w = drawn.shape[:2]
                    writer = cv2.VideoWriter(str(out), cv2.VideoWriter_fourcc(*"mp4v"), fps, (w, h))
                writer.write(cv2.cvtColor(drawn, cv2.COLOR_RGB2BGR))
                if labels is not None:
                    frames.append({"frame": index, "detections": result.to_dict()["detections"]})
                index += 1
    finally:
        cap.release()
        if writer is not None:
            writer.release()
    if labels is not None:
        save_json(labels, frames)
    print(f"{path}: {index} frames -> {out}")
    return index


def _video_opens(path: Path) -> bool:
    """Whether OpenCV can open the video ``path`` (a broken or unsupported file cannot be)."""
    import cv2

    cap = cv2.VideoCapture(str(path))
    try:
        return bool(cap.isOpened())
    finally:
        cap.release()


def _category_ids(model: nn.Module, n: int) -> list[int]:
    """The COCO category id of each of the ``n`` labels (``n`` grows with the labels seen): the ids of the model's
    training data (``model.category_ids``, stored with the weights), else ``label + 1``."""
    ids = [int(i) for i in (getattr(model, "category_ids", None) or [])]
    return ids + [k + 1 + max(ids, default=0) for k in range(n - len(ids))] if len(ids) < n else ids


def _coco_entries(result: Results, image_id: int, first_id: int, ids: Sequence[int]) -> list[dict[str, Any]]:
    """COCO ``annotations`` (ids from ``first_id``, boxes rounded as in the label files) of one image's detections;
    ``ids[label]`` is a label's ``category_id``."""
    out = result.to_coco(image_id, ids, decimals=2)
    for k, ann in enumerate(out):
        _, _, w, h = ann["bbox"]
        ann.update(id=first_id + k, area=round(w * h, 2), iscrowd=0)
    return out


def infer_detection(args: dict[str, Any]) -> Path:
    """Detect objects in images, folders, globs and videos; write annotated files and JSON (module docstring).

    Returns the run folder. Raises ``OSError`` (an unreadable single file, a video that cannot be opened, a folder or
    glob without a readable source), ``ValueError`` (a key that does not fit the model)."""
    from vision.io import VIDEO_EXTENSIONS, expand_source
    from vision.utils import pick_device

    device = pick_device(args["device"])
    model = args.get("_model") or load_model(
        str(args.get("weights") or "") or None, model=str(args.get("model") or "") or None, device=device
    )
    runner = _Runner(model, args, device)
    files = expand_source(args["source"], videos=True)
    videos = [f for f in files if f.suffix.lower() in VIDEO_EXTENSIONS]
    args = {**args, "explain": check_explain(model, args, detector=True, videos=videos)}
    method = args.get("explain")
    want_json = bool(args.get("save_json", True))
    batch = max(1, int(args["batch"]))
    names = RunOutputs("predictions_coco.json")
    skipped: list[Path] = []
    images_meta: list[dict[str, Any]] = []
    annotations: list[dict[str, Any]] = []
    n_labels = len(runner.names or [])  # labels named in predictions_coco.json's categories (grows with unnamed ones)
    with run_folder(Path(args["project"]) / "detection", args["name"]) as out_dir:
        for is_video, group in itertools.groupby(files, key=lambda f: f.suffix.lower() in VIDEO_EXTENSIONS):
            if is_video:
                for f in group:
                    if len(files) > 1 and not _video_opens(f):  # as an unreadable image of a folder: skipped
                        print(f"warning: {f}: OpenCV cannot open the video; skipped", file=sys.stderr, flush=True)
                        skipped.append(f)
                        continue
                    base = names.claim(f.stem, "{}.mp4", "labels/{}.json")
                    labels = out_dir / "labels" / f"{base}.json" if want_json else None
                    _video(runner, f, out_dir / f"{base}.mp4", labels, batch)
                continue
            pictures = list(group)
            for start in range(0, len(pictures), batch):
                read = read_images(pictures[start : start + batch], skipped, skip=len(files) > 1)
                if not read:
                    continue
                imgs = [img for _, img in read]
                for (f, img), result in zip(read, runner(imgs, [str(f) for f, _ in read])):
                    suffix = f.suffix.lower() if f.suffix.lower() in (".jpg", ".jpeg", ".png", ".bmp") else ".png"
                    extra = [f"{{}}_{method}.png"] if method else []
                    base = names.claim(f.stem, f"{{}}{suffix}", "labels/{}.json", *extra)
                    result.save(out_dir / f"{base}{suffix}", line_width=runner.line_width)
                    records = result.to_dict()["detections"]
                    if method:  # a heat map beside the annotated image (vision.tasks._explain)
                        write_explanation(model, img, out_dir / f"{base}_{method}.png", args)
                    image_id = len(images_meta) + 1
                    images_meta.append({"id": image_id, "file_name": str(f), "height": int(img.shape[1]),
                                        "width": int(img.shape[2])})  # fmt: skip
                    n_labels = max([n_labels, *(r["label"] + 1 for r in records)])
                    annotations.extend(
                        _coco_entries(result, image_id, len(annotations) + 1, _category_ids(model, n_labels))
                    )
                    if want_json:
                        save_json(out_dir / "labels" / f"{base}.json", {"file": str(f), "detections": records})
                    shown = ", ".join(f"{r['name']} {r['score']:.2f}" for r in records[:8])
                    more = f" (+{len(records) - 8})" if len(records) > 8 else ""
                    print(f"{f}: {len(records)} detections{': ' + shown if records else ''}{more}")
        count_skipped(args["source"], skipped, len(files))
        if want_json and images_meta:
            categories = runner.names or []
            ids = _category_ids(model, n_labels)
            cats = [{"id": c, "name": categories[k] if k < len(categories) else str(k)} for k, c in enumerate(ids)]
            save_json(out_dir / "predictions_coco.json",
                      {"images": images_meta, "categories": cats, "annotations": annotations})  # fmt: skip
    return out_dir
