"""Run an exported ``.onnx`` file with onnxruntime as if it were the PyTorch model (no model code involved).

:func:`load_onnx` reads the metadata written by :func:`vision.deploy.export_onnx` (names, task, preprocessing) and
returns an :class:`OnnxModel`:

- classifier: ``model(x)`` with ``x`` float ``[B, 3, H, W]`` normalised -> logits ``[B, K]``; ``model.predict(x,
  topk=5)`` -> per image ``[(label, name, probability), ...]`` as ``ImageClassifier.predict``;
  ``model.eval_transforms()`` maps an image ``uint8 [3, H, W]`` to ``x``'s rows.
- detector: ``model.predict(images)`` with a list of float ``[3, H_i, W_i]`` in [0, 1] (or a ``[B, 3, H, W]`` batch)
  -> one dict per image: ``boxes`` float32 ``[N, 4]`` xyxy pixels of that image, ``scores [N]``, ``labels`` int64
  ``[N]`` in data-set label space (``background_class = False``); Mask R-CNN files add ``masks [N, 1, H, W]``.
"""

from __future__ import annotations

import json
import os
from collections.abc import Callable, Sequence
from pathlib import Path
from typing import Any

import numpy as np
import torch
import torch.nn.functional as F
from torch import Tensor

from vision.results import Results, is_batch, load_sources
from vision.utils.keys import ArgumentError

__all__ = ["OnnxModel", "check_exported_imgsz", "load_onnx"]


class OnnxModel:
    """An onnxruntime session over an exported file with the PyTorch model's inference interface (module docstring).

    Attributes: ``task``, ``kind``, ``categories``, ``num_classes``, ``background_class`` (False), ``preprocess``
    (dict from the metadata), ``imgsz``, ``metadata`` (all metadata strings), ``session``.
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
        self.kind = meta["kind"]
        self.task = meta["task"]
        self.categories: list[str] = json.loads(meta["names"])
        self.num_classes = len(self.categories)
        self.preprocess: dict[str, Any] = json.loads(meta["preprocess"])
        self.imgsz = int(meta["imgsz"])
        self.input_name = self.session.get_inputs()[0].name
        self.output_names = [o.name for o in self.session.get_outputs()]
        batch = meta.get("batch", "1")
        self.fixed_batch = None if batch == "dynamic" else int(batch)

    # ---------------------------------------------------------------------------------------------- nn.Module-likes
    def eval(self) -> OnnxModel:
        """No-op (for code written for ``nn.Module``)."""
        return self

    def to(self, *args: Any, **kwargs: Any) -> OnnxModel:
        """No-op: the session runs on the CPU."""
        return self

    def _run(self, x: np.ndarray) -> list[np.ndarray]:
        """Run the session on ``x``, in chunks of the file's fixed batch size (the last one padded)."""
        if self.fixed_batch is None or self.kind == "rcnn" or x.shape[0] == self.fixed_batch:
            return self.session.run(self.output_names, {self.input_name: x})
        parts = []
        for i in range(0, x.shape[0], self.fixed_batch):
            chunk = x[i : i + self.fixed_batch]
            n = chunk.shape[0]
            if n < self.fixed_batch:
                chunk = np.concatenate([chunk, np.repeat(chunk[-1:], self.fixed_batch - n, 0)])
            parts.append([o[:n] for o in self.session.run(self.output_names, {self.input_name: chunk})])
        return [np.concatenate([p[j] for p in parts]) for j in range(len(self.output_names))]

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
    def predict(self, images: Tensor | Sequence[Tensor], *, topk: int = 5) -> list[Any]:
        """Classifier: top-``topk`` ``(label, name, probability)`` per image of a normalised batch, or one
        :class:`~vision.results.Results` per image of any other source (paths, folders, arrays: see
        :func:`vision.results.load_sources`). Detector: one dict per image (module docstring) for float images in
        [0, 1]."""
        if self.kind == "classifier" and not is_batch(images):  # files, folders, arrays...: Results, as PyTorch's
            transform = self.eval_transforms()
            out = []
            for image, path in load_sources(images):
                probs = self(transform(image)[None]).float().softmax(-1)[0]
                out.append(Results.from_probs(image, probs, self.categories, topk=topk, path=path))
            return out
        if self.kind == "classifier":
            probs = self(images).float().softmax(-1)
            values, indices = probs.topk(min(topk, probs.shape[-1]), dim=-1)
            names = self.categories
            return [[(int(i), names[int(i)], float(v)) for v, i in zip(vs, idx)] for vs, idx in zip(values, indices)]
        imgs = [im.detach().float().cpu() for im in (images if not isinstance(images, Tensor) or images.dim() == 4
                                                       else [images])]  # fmt: skip
        if self.kind == "rcnn":
            return [self._rcnn(im) for im in imgs]
        x, info = self.prepare(imgs)
        boxes, scores, labels, counts = self._run(x.numpy())
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
        return det


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
