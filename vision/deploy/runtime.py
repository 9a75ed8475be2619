"""Run an exported ``.onnx`` file with onnxruntime as if it were the PyTorch model (no model code involved).

:func:`load_onnx` reads the metadata written by :func:`vision.deploy.export_onnx` (names, task, preprocessing) and
returns an :class:`OnnxModel`:

- classifier: ``model(x)`` with ``x`` float ``[B, 3, H, W]`` normalised -> logits ``[B, K]``; ``model.predict(x,
  topk=5)`` -> per image ``[(label, name, probability), ...]`` as ``ImageClassifier.predict``;
  ``model.eval_transforms()`` maps an image ``uint8 [3, H, W]`` to ``x``'s rows.
- detector: ``model.predict(images)`` with a list of float ``[3, H_i, W_i]`` in [0, 1] (or a ``[B, 3, H, W]`` batch)
  -> one dict per image: ``boxes`` float32 ``[N, 4]`` xyxy pixels of that image, ``scores [N]``, ``labels`` int64
  ``[N]`` in data-set label space (``background_class = False``); Mask R-CNN files add ``masks [N, 1, H, W]``.
  Any other source (a path, folder, glob, array, PIL image) gives one :class:`~vision.results.Results` per image,
  scores above 0.25, as the PyTorch detector's ``predict(source)``; thresholds can only narrow what the file keeps
  (:meth:`OnnxModel.predict`).

YOLO files take a fixed ``S x S`` canvas: :meth:`OnnxModel.prepare` scales every image so that its longer side is
``S`` and pads it, centred, with grey (114) to the whole square, as ultralytics' exported files do. ``YOLO.predict``
in PyTorch pads a batch only to the smallest canvas of multiples of the stride (32) that holds its scaled images
(``cuda_graph=True`` excepted, which uses the square), so on non-square images the network sees less padding and
its grid cells sit elsewhere relative to the image: the detections of the file and of ``YOLO.predict`` differ
slightly, and a validation mAP by a few tenths of a point (BCCD at 224 px: 0.2708 in PyTorch, 0.2680 from the
file). Both are correct; neither is changed to match the other. The onnxruntime check (:mod:`vision.deploy.check`)
compares the file with the PyTorch network on the same ``S x S`` canvas.

The metadata is validated when a file is opened (:class:`OnnxModel`): a missing or malformed key, an unknown
``kind``, a ``task`` that is not the kind's, an input size that is not the graph's (where the graph fixes it) or a
number of ``names`` that is not the classifier's number of logits raises ``ValueError`` naming the file and the
key. Errors of onnxruntime while running (e.g. an input of a size the graph does not take) are ``ValueError`` naming
the file, the input shape given and the input shape the file takes.
"""

from __future__ import annotations

import json
import os
import warnings
from collections.abc import Callable, Iterator, Sequence
from pathlib import Path
from typing import Any

import numpy as np
import torch
import torch.nn.functional as F
from torch import Tensor

from vision.results import Results, is_batch, load_sources
from vision.utils.keys import ArgumentError

__all__ = ["OnnxModel", "check_exported_imgsz", "load_onnx"]

#: the task of each kind of file, and the number of graph outputs it has
_KINDS = {"classifier": ("classification", (1,)), "yolo": ("detection", (4,)), "ssd": ("detection", (4,)),
          "rcnn": ("detection", (3, 4))}  # fmt: skip
#: the preprocessing modes of each kind
_MODES = {"classifier": ("crop", "resize"), "yolo": ("letterbox",), "ssd": ("resize",), "rcnn": ("none",)}


class OnnxModel:
    """An onnxruntime session over an exported file with the PyTorch model's inference interface (module docstring).

    Attributes: ``task``, ``kind``, ``categories``, ``num_classes``, ``background_class`` (False), ``preprocess``
    (dict from the metadata), ``imgsz``, ``metadata`` (all metadata strings), ``session``, ``input_shape`` (the
    graph's, a name for each dynamic axis).

    Raises:
        ValueError: the file's metadata is missing, malformed or does not fit the graph (module docstring).
    """

    background_class = False

    def __init__(self, path: str | os.PathLike[str], *, threads: int | None = None) -> None:
        import onnxruntime as ort

        self.path = Path(path)
        if not self.path.is_file():
            raise FileNotFoundError(f"no such ONNX file: {self.path}")
        opts = ort.SessionOptions()
        if threads:
            opts.intra_op_num_threads = int(threads)
        try:
            self.session = ort.InferenceSession(str(self.path), opts, providers=["CPUExecutionProvider"])
        except Exception as err:  # onnxruntime raises its own types (InvalidProtobuf, Fail, ...) for a bad file
            first = str(err).strip().splitlines()[0] if str(err).strip() else type(err).__name__
            raise ValueError(f"{self.path} is not a valid ONNX model (truncated or corrupt?): {first}") from err
        meta = dict(self.session.get_modelmeta().custom_metadata_map)
        if "kind" not in meta or "names" not in meta:
            raise ValueError(f"{self.path} was not written by `vision export` (no 'kind'/'names' metadata)")
        self.metadata = meta
        self.input_name = self.session.get_inputs()[0].name
        self.input_shape = list(self.session.get_inputs()[0].shape)
        self.output_names = [o.name for o in self.session.get_outputs()]
        self.kind, self.task, self.categories, self.preprocess, self.imgsz, self.fixed_batch = _read_metadata(
            self.path, meta, self.input_shape, [list(o.shape) for o in self.session.get_outputs()]
        )
        self.num_classes = len(self.categories)
        self.category_ids = _category_ids(self.path, meta, self.num_classes)

    # ---------------------------------------------------------------------------------------------- nn.Module-likes
    def eval(self) -> OnnxModel:
        """No-op (for code written for ``nn.Module``)."""
        return self

    def to(self, *args: Any, **kwargs: Any) -> OnnxModel:
        """No-op: the session runs on the CPU."""
        return self

    def parameters(self) -> Iterator[Tensor]:
        """None: the weights are in the session (images go to the CPU, where it runs)."""
        return iter(())

    def _run(self, x: np.ndarray) -> list[np.ndarray]:
        """Run the session on ``x``, in chunks of the file's fixed batch size (the last one padded)."""
        if self.fixed_batch is None or self.kind == "rcnn" or x.shape[0] == self.fixed_batch:
            return self._session_run(x)
        parts = []
        for i in range(0, x.shape[0], self.fixed_batch):
            chunk = x[i : i + self.fixed_batch]
            n = chunk.shape[0]
            if n < self.fixed_batch:
                chunk = np.concatenate([chunk, np.repeat(chunk[-1:], self.fixed_batch - n, 0)])
            parts.append([o[:n] for o in self._session_run(chunk)])
        return [np.concatenate([p[j] for p in parts]) for j in range(len(self.output_names))]

    def _session_run(self, x: np.ndarray) -> list[np.ndarray]:
        """``session.run``; an onnxruntime error (its own exception types) becomes a ``ValueError`` naming the file,
        the input shape given and the one the file takes."""
        try:
            return self.session.run(self.output_names, {self.input_name: x})
        except Exception as err:
            takes = "[" + ", ".join(str(d) if isinstance(d, int) else str(d or "?") for d in self.input_shape) + "]"
            said = " ".join(str(err).split())[:300] or type(err).__name__
            hint = "; an R-CNN file of an older vision-zoo takes only its example size: export it again" if (
                self.kind == "rcnn" and all(isinstance(d, int) for d in self.input_shape)) else ""  # fmt: skip
            raise ValueError(f"{self.path} cannot run on an input of shape {list(x.shape)} {x.dtype}: the file takes "
                             f"{self.input_name} {takes} float32{hint} (onnxruntime: {said})") from None  # fmt: skip

    # ---------------------------------------------------------------------------------------------- classification
    def __call__(self, x: Tensor | Sequence[Tensor]) -> Any:
        """Classifier: logits ``[B, K]`` for a normalised batch. Detector: :meth:`predict`."""
        if self.kind != "classifier":
            return self.predict(x)
        arr = np.ascontiguousarray(torch.as_tensor(x).detach().float().cpu().numpy())
        return torch.from_numpy(self._run(arr)[0])

    def eval_transforms(self) -> Callable[[Tensor], Tensor]:
        """The classifier's preprocessing from the metadata: ``uint8 [3, H, W]`` -> normalised ``float [3, h, w]``."""
        from vision.backbones.classifier import eval_transforms
        from vision.hub.cards import Preprocess

        p = self.preprocess
        return eval_transforms(Preprocess(input_size=tuple(p["input_size"]), resize_size=int(p["resize_size"]),
                                          interpolation=p["interpolation"], mean=tuple(p["mean"]),
                                          std=tuple(p["std"]), crop=p["mode"] == "crop"))  # fmt: skip

    # ---------------------------------------------------------------------------------------------- detection
    def predict(
        self,
        images: Any,
        *,
        topk: int = 5,
        score_threshold: float | None = None,
        iou_threshold: float | None = None,
        max_det: int | None = None,
        conf: float | None = None,
        iou: float | None = None,
        batch: int | None = None,
    ) -> list[Any]:
        """What the PyTorch model's ``predict`` gives, from the file.

        Classifier: top-``topk`` ``(label, name, probability)`` per image of a normalised batch, or one
        :class:`~vision.results.Results` per image of any other source (paths, folders, globs, arrays, PIL images:
        :func:`vision.results.load_sources`).

        Detector, as the PyTorch detector's ``predict`` (:func:`vision.models._predict.detection_predict`): for a
        batch (``[B, 3, H, W]`` or a list of float ``[3, H, W]`` in [0, 1]) one dict per image (module docstring);
        for any other source one :class:`~vision.results.Results` per image, scores above 0.25 (or above the file's
        own score threshold where that is higher). The post-processing runs inside the file, so the options can
        only narrow it: ``score_threshold`` / ``conf`` below the file's (metadata ``score_threshold``) keeps the
        file's, with a warning; ``max_det`` cuts each image's list (the file gives at most its own ``max_det``);
        ``iou_threshold`` / ``iou`` must be the file's own NMS threshold; ``batch``: images per call.

        Raises:
            ValueError: an IoU threshold that is not the file's (naming its own), or a bad option or source.
            TypeError: a detector option given to a classifier file.
        """
        given = {k: v for k, v in (("score_threshold", score_threshold), ("iou_threshold", iou_threshold),
                                   ("max_det", max_det), ("conf", conf), ("iou", iou), ("batch", batch))
                 if v is not None}  # fmt: skip
        if self.kind == "classifier":
            if given:
                raise TypeError(f"{self.path} is a classifier: predict takes topk=, not {', '.join(given)}=")
            return self._classify(images, topk)
        from vision.models._predict import SOURCE_CONF, detection_predict

        own = self.post_processing()[0]
        if not is_batch(images) and "score_threshold" not in given and "conf" not in given and own is not None:
            given["score_threshold"] = max(SOURCE_CONF, own)  # a source's default, unless the file keeps less
        return detection_predict(type(self)._detect)(self, images, **given)

    def _classify(self, images: Any, topk: int) -> list[Any]:
        if not is_batch(images):  # files, folders, arrays...: Results, as PyTorch's
            transform = self.eval_transforms()
            out = []
            for image, path in load_sources(images):
                probs = self(transform(image)[None]).float().softmax(-1)[0]
                out.append(Results.from_probs(image, probs, self.categories, topk=topk, path=path))
            return out
        probs = self(images).float().softmax(-1)
        values, indices = probs.topk(min(topk, probs.shape[-1]), dim=-1)
        names = self.categories
        return [[(int(i), names[int(i)], float(v)) for v, i in zip(vs, idx)] for vs, idx in zip(values, indices)]

    def post_processing(self) -> tuple[float | None, float | None, int | None]:
        """``(score threshold, NMS IoU threshold, max detections)`` applied inside a detector file (metadata), each
        ``None`` where the file does not say (R-CNN files of an older vision-zoo)."""
        meta = self.metadata
        thr, iou, top = (float(meta[k]) if k in meta else None for k in ("score_threshold", "iou_threshold", "max_det"))
        return thr, iou, None if top is None else int(top)

    def _detect(
        self,
        images: Tensor | Sequence[Tensor],
        *,
        score_threshold: float | None = None,
        iou_threshold: float | None = None,
        max_det: int | None = None,
    ) -> list[dict[str, Tensor]]:
        """Detections (module docstring) for float images in [0, 1], narrowed by the options (:meth:`predict`)."""
        own_thr, own_iou, _ = self.post_processing()
        if score_threshold is not None and own_thr is not None and score_threshold < own_thr:
            # a warning, not an error: tools/infer.py passes its default conf (0.25) to every model
            warnings.warn(f"{self.path} keeps only scores above {own_thr:g} (its score threshold, applied inside the "
                          f"file): score_threshold/conf={score_threshold:g} cannot bring back lower ones; export it "
                          f"again with conf={score_threshold:g} for them", stacklevel=4)  # fmt: skip
        if iou_threshold is not None and (own_iou is None or abs(iou_threshold - own_iou) > 1e-6):
            said = f"at IoU {own_iou:g}" if own_iou is not None else "at its model's IoU threshold"
            raise ValueError(f"{self.path} runs NMS inside the file {said}: iou_threshold/iou={iou_threshold:g} "
                             f"cannot be applied to it; export it again with iou={iou_threshold:g}")  # fmt: skip
        imgs = [im.detach().float().cpu() for im in (images if not isinstance(images, Tensor) or images.dim() == 4
                                                       else [images])]  # fmt: skip
        dets = [self._rcnn(im) for im in imgs] if self.kind == "rcnn" else self._fixed_size(imgs)
        for i, det in enumerate(dets):
            keep = slice(None) if score_threshold is None else det["scores"] > score_threshold
            dets[i] = {k: v[keep][:max_det] for k, v in det.items()}  # scores decrease: the best max_det
        return dets

    def _fixed_size(self, imgs: list[Tensor]) -> list[dict[str, Tensor]]:
        """A YOLO / SSD file's detections for float images ``[3, H, W]``, boxes mapped back to each image."""
        x, info = self.prepare(imgs)
        boxes, scores, labels, counts = self._run(x.numpy())
        self._check_labels(labels, counts)
        out = []
        for i, (im, n) in enumerate(zip(imgs, counts.tolist())):
            b = torch.from_numpy(boxes[i, :n]).float()
            sx, sy, px, py = info[i]
            b = (b - torch.tensor([px, py, px, py])) / torch.tensor([sx, sy, sx, sy])
            H, W = im.shape[-2:]
            b[:, 0::2] = b[:, 0::2].clamp(0, W)
            b[:, 1::2] = b[:, 1::2].clamp(0, H)
            out.append({"boxes": b, "scores": torch.from_numpy(scores[i, :n]).float(),
                        "labels": torch.from_numpy(labels[i, :n]).long()})  # fmt: skip
        return out

    def prepare(self, images: Sequence[Tensor]) -> tuple[Tensor, list[tuple[float, float, float, float]]]:
        """The graph input ``[B, 3, S, S]`` for float images in [0, 1] and, per image, ``(scale_x, scale_y, pad_left,
        pad_top)`` with ``input = original * scale + pad`` (YOLO: letterbox as ``YOLO.predict``; SSD: resize)."""
        S = self.imgsz
        batch, info = [], []
        for im in images:
            im = im.expand(3, -1, -1) if im.shape[0] == 1 else im
            H, W = int(im.shape[-2]), int(im.shape[-1])
            if self.preprocess["mode"] == "letterbox":
                from vision.models.detection.yolo.postprocess import letterbox

                x, lb, _ = letterbox([im], size=S, stride=int(self.preprocess["stride"]), fixed=True)
                batch.append(x[0])
                info.append(tuple(float(v) for v in lb[0].tolist()))
            else:
                x = F.interpolate(im[None], size=(S, S), mode="bilinear", align_corners=False)[0]
                batch.append(x)
                info.append((S / W, S / H, 0.0, 0.0))
        return torch.stack(batch).contiguous(), info

    def _rcnn(self, im: Tensor) -> dict[str, Tensor]:
        outs = self._run(np.ascontiguousarray(im.expand(3, -1, -1).numpy()))
        det = {"boxes": torch.from_numpy(outs[0]).float(), "scores": torch.from_numpy(outs[1]).float(),
               "labels": torch.from_numpy(outs[2]).long()}  # fmt: skip
        if len(outs) > 3:
            det["masks"] = torch.from_numpy(outs[3]).float()
        self._check_labels(outs[2][None], np.array([len(outs[2])]))
        return det

    def _check_labels(self, labels: np.ndarray, counts: np.ndarray) -> None:
        """``ValueError`` when the graph gives a label past the file's ``names`` (metadata not of this graph)."""
        found = [labels[i, :n] for i, n in enumerate(counts.tolist()) if n]
        top = max((int(lab.max()) for lab in found), default=-1)
        if top >= self.num_classes:
            raise ValueError(f"{self.path}: metadata 'names' lists {self.num_classes} classes but the graph gives "
                             f"label {top}: the metadata does not belong to this graph")  # fmt: skip


def load_onnx(path: str | os.PathLike[str], *, threads: int | None = None) -> OnnxModel:
    """An :class:`OnnxModel` for a file written by ``vision export`` (``ValueError`` for other ONNX files).

    Example:
        >>> model = vision.deploy.load_onnx("yolo_n.onnx")
        >>> dets = model.predict([image])  # image: float [3, H, W] in [0, 1]
    """
    return OnnxModel(path, threads=threads)


def check_exported_imgsz(imgsz: int, weights: str, onnx_model: Any) -> None:
    """``ArgumentError`` unless ``imgsz`` is the one input size the exported ``onnx_model`` (read from ``weights``)
    takes; an R-CNN file resizes each image inside its graph and takes no ``imgsz=`` at all."""
    size = dict(getattr(onnx_model, "preprocess", None) or {}).get("input_size")
    if not size:
        raise ArgumentError(f"imgsz={imgsz} does not apply to weights={weights}: the file resizes each image inside "
                            "its graph; leave imgsz out")  # fmt: skip
    side = int(size[-1] if isinstance(size, list | tuple) else size)
    if imgsz != side:
        raise ArgumentError(f"imgsz={imgsz} does not apply to weights={weights}: the file was exported for "
                            f"{side}x{side} inputs; leave imgsz out, or export again with imgsz={imgsz}")  # fmt: skip


def _category_ids(path: Path, meta: dict[str, str], n: int) -> list[int] | None:
    """A detector file's optional ``category_ids`` (the training data's COCO id of each of its ``n`` labels, written
    by :func:`vision.deploy.export_onnx`), or ``None``; ``ValueError`` naming the file and the key when malformed."""
    if "category_ids" not in meta:
        return None
    try:
        ids = json.loads(meta["category_ids"])
    except ValueError:
        ids = None
    whole = isinstance(ids, list) and all(isinstance(i, int) and not isinstance(i, bool) for i in ids)
    if not whole or len(ids) != n:
        raise ValueError(f"{path}: metadata 'category_ids' must be a JSON list of {n} integers (one per class), got "
                         f"{meta['category_ids'][:60]!r} (edited afterwards? export it again)")  # fmt: skip
    return ids


def _read_metadata(
    path: Path, meta: dict[str, str], input_shape: list[Any], output_shapes: list[list[Any]]
) -> tuple[str, str, list[str], dict[str, Any], int, int | None]:
    """``(kind, task, names, preprocess, imgsz, fixed batch)`` from a file's metadata, each key checked against the
    others and against the graph's input and output shapes; ``ValueError`` naming the file and the key."""

    def bad(key: str, why: str) -> ValueError:
        return ValueError(f"{path}: metadata {key!r} {why} (written by another program or an older vision-zoo, "
                          "or edited afterwards; export it again)")  # fmt: skip

    def decoded(key: str, kind: type) -> Any:
        if key not in meta:
            raise bad(key, "is missing")
        try:
            value = json.loads(meta[key])
        except ValueError:
            raise bad(key, f"is not valid JSON: {meta[key][:60]!r}") from None
        if not isinstance(value, kind):
            raise bad(key, f"must be a JSON {kind.__name__}, got {meta[key][:60]!r}")
        return value

    def whole(key: str, value: Any, lo: int = 1) -> int:
        if isinstance(value, bool) or not isinstance(value, int | str) or not str(value).strip().isdigit():
            raise bad(key, f"must be an integer >= {lo}, got {value!r}")
        if int(value) < lo:
            raise bad(key, f"must be an integer >= {lo}, got {value!r}")
        return int(value)

    kind = meta["kind"]
    if kind not in _KINDS:
        raise bad("kind", f"is {kind!r}, not one of {', '.join(_KINDS)}")
    task, n_outputs = _KINDS[kind]
    if meta.get("task") != task:
        raise bad("task", f"is {meta.get('task')!r}; a {kind!r} file is a {task!r} model")
    if len(output_shapes) not in n_outputs:
        raise bad("kind", f"is {kind!r}, but the graph has {len(output_shapes)} outputs, not {n_outputs[0]}")
    names = decoded("names", list)
    if not names or not all(isinstance(n, str) for n in names):
        raise bad("names", "must be a non-empty JSON list of class names (strings)")
    pre = decoded("preprocess", dict)
    if pre.get("mode") not in _MODES[kind]:
        raise bad("preprocess", f"has mode {pre.get('mode')!r}; a {kind!r} file has {' or '.join(_MODES[kind])}")
    if "imgsz" not in meta:
        raise bad("imgsz", "is missing")
    imgsz = whole("imgsz", meta["imgsz"])
    batch = meta.get("batch", "1")
    fixed_batch = None if batch == "dynamic" else whole("batch", batch)
    rank = 3 if kind == "rcnn" else 4
    if len(input_shape) != rank:
        raise bad("kind", f"is {kind!r}, but the graph's input has shape {input_shape}, not rank {rank}")
    for key in ("score_threshold", "iou_threshold", "max_det"):  # inside every detector file (older R-CNN: none)
        if kind != "classifier" and (key in meta or kind != "rcnn"):
            try:
                float(meta[key])
            except (KeyError, ValueError):
                raise bad(key, f"must be a number, got {meta.get(key, 'nothing')!r}") from None
    if kind == "rcnn":
        return kind, task, names, pre, imgsz, fixed_batch
    size = pre.get("input_size")
    if not isinstance(size, list) or len(size) != 2:
        raise bad("preprocess", f"needs 'input_size' [H, W], got {size!r}")
    size = [whole("preprocess", s) for s in size]
    for key in {"classifier": ("resize_size", "interpolation", "mean", "std"), "yolo": ("stride", "mean", "std"),
                      "ssd": ("mean", "std")}[kind]:  # fmt: skip
        if key not in pre:
            raise bad("preprocess", f"has no {key!r}")
    if kind == "classifier":
        whole("preprocess", pre["resize_size"])
    elif size[0] != size[1] or imgsz != size[0]:
        raise bad("imgsz", f"is {imgsz}, but preprocess 'input_size' is {size}")
    graph_hw = input_shape[2:]
    if all(isinstance(d, int) for d in graph_hw) and list(graph_hw) != size:
        key = "preprocess" if kind == "classifier" else "imgsz"
        raise bad(key, f"says {size[0]}x{size[1]} inputs, but the graph takes {graph_hw[0]}x{graph_hw[1]}")
    if kind == "classifier" and imgsz != size[0]:
        raise bad("imgsz", f"is {imgsz}, but preprocess 'input_size' is {size}")
    if fixed_batch is not None and isinstance(input_shape[0], int) and input_shape[0] != fixed_batch:
        raise bad("batch", f"is {fixed_batch}, but the graph takes batches of {input_shape[0]}")
    logits = output_shapes[0][-1] if kind == "classifier" and output_shapes[0] else None
    if isinstance(logits, int) and logits != len(names):
        raise bad("names", f"lists {len(names)} classes, but the graph gives {logits} logits")
    return kind, task, names, pre, imgsz, fixed_batch
