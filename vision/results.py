"""What ``model.predict(source)`` returns: one :class:`Results` per image, for every task.

``source`` may be a path (file, folder, glob, or paths separated by commas), a list of them, a PIL image, an
``uint8 [H, W, 3]`` RGB numpy array, a ``[3, H, W]`` tensor (``uint8``, or float in [0, 1]: 0..255 floats are refused)
or a list mixing these; :func:`load_sources` turns it into ``uint8 [3, H, W]`` tensors. URLs and videos are not read.
A preprocessed **batch** (a ``[B, 3, H, W]`` tensor, or a list of tensors for detectors)
is the model's own input: ``predict`` then returns what it always returned (lists of dicts or of top-k tuples), see
:func:`is_batch`.

A :class:`Results` holds the image and the predictions in the image's pixels with **data-set** labels:

- detection: ``boxes`` float ``[N, 4]`` (xyxy pixels), ``scores`` ``[N]``, ``labels`` int64 ``[N]``, ``masks`` bool
  ``[N, H, W]`` or ``None``;
- classification: ``probs`` float ``[K]`` (softmax), ``topk`` list of ``(label, name, probability)``;
- generation: ``image`` is the generated image, ``labels`` its class (``[1]``) for conditional models.

Example:
    >>> results = model.predict("cells/", conf=0.4)            # a list, one per image
    >>> r = results[0]; r.boxes, r.scores, r.labels, r.names
    >>> r.save("out.jpg"); r.to_coco(image_id=1)
"""

from __future__ import annotations

import os
from collections.abc import Mapping, Sequence
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import numpy as np
import torch
from torch import Tensor

__all__ = ["Results", "is_batch", "load_sources"]


def is_batch(source: Any) -> bool:
    """Whether ``source`` is a model's own input batch: a 4-D tensor or a non-empty list/tuple of tensors."""
    if isinstance(source, Tensor):
        return source.dim() == 4
    return isinstance(source, list | tuple) and len(source) > 0 and all(isinstance(s, Tensor) for s in source)


def _from_array(array: np.ndarray, what: str) -> Tensor:
    """``uint8 [H, W, 3]`` (or ``[H, W]``, ``[H, W, 1]``, ``[H, W, 4]``) RGB array -> ``uint8 [3, H, W]`` tensor."""
    if array.dtype != np.uint8 or array.ndim not in (2, 3) or (array.ndim == 3 and array.shape[2] not in (1, 3, 4)):
        hint = ""
        if np.issubdtype(array.dtype, np.floating):  # 0..1 and 0..255 floats are not guessed apart
            hint = (
                ": float arrays are not read; pass the uint8 image (x.round().astype(np.uint8) for 0..255 values, "
                "(x * 255).round().astype(np.uint8) for values in [0, 1])"
            )
        raise ValueError(f"{what}: expected an uint8 [H, W, 3] RGB array, got {array.dtype} {tuple(array.shape)}{hint}")
    if array.ndim == 2:
        array = array[:, :, None]
    if array.shape[2] == 1:
        array = np.repeat(array, 3, axis=2)
    return torch.from_numpy(np.ascontiguousarray(array[:, :, :3].transpose(2, 0, 1)))


def _from_tensor(t: Tensor, what: str) -> Tensor:
    """``[3, H, W]`` (or ``[1, H, W]``) ``uint8``, or float in [0, 1] -> ``uint8 [3, H, W]`` on the CPU.

    A float image outside [0, 1] (with :func:`vision.ops.image_range.check_unit_range`'s small tolerance; 0..255
    values, the usual mistake) or with NaN is refused, never scaled into a white image.
    """
    from vision.ops.image_range import check_unit_range

    if t.dim() != 3 or t.shape[0] not in (1, 3):
        raise ValueError(f"{what}: expected a [3, H, W] image tensor, got shape {tuple(t.shape)}")
    if t.dtype != torch.uint8:
        if not t.is_floating_point():
            raise ValueError(f"{what}: expected uint8 or float in [0, 1], got {t.dtype}")
        try:
            check_unit_range(t.detach()[None], what="predict source")
        except ValueError as err:  # "image 0: ..." -> the source item
            raise ValueError(f"{what}: {str(err).removeprefix('image 0: ')}") from None
        t = (t.detach().float() * 255.0).round().clamp(0, 255).to(torch.uint8)
    return t.detach().cpu().expand(3, -1, -1).contiguous()


def load_sources(source: Any) -> list[tuple[Tensor, str | None]]:
    """Every image of ``source`` (module docstring) as ``(uint8 [3, H, W] RGB tensor on the CPU, path or None)``.

    A path is expanded by :func:`vision.io.expand_source` (a file, a folder, a glob, or a string of paths separated
    by commas); each path in a list is one file, folder or glob. The same file given twice is read twice.

    Raises:
        FileNotFoundError: a path that matches no image, or a URL (nothing is downloaded); ValueError: an empty or
        blank path, an array or tensor of the wrong shape or dtype, a float tensor with values outside [0, 1] (e.g.
        0..255), a video, or a source of another type. The message names the item (``source[2] tensor: ...``) or the
        path.
    """
    return _load(source, "source", in_list=False)


def _load(source: Any, what: str, *, in_list: bool) -> list[tuple[Tensor, str | None]]:
    from vision.io import expand_source, read_image

    if isinstance(source, str | os.PathLike):  # in a list, one path is one source (not split at commas)
        if not os.fspath(source).strip():  # named here: expand_source would number it within a list of one
            raise ValueError(f"{what} is empty ({source!r}): give an image file, a folder or a glob")
        return [(read_image(f), str(f)) for f in expand_source([source] if in_list else source)]
    if isinstance(source, Tensor):
        return [(_from_tensor(source, f"{what} tensor"), None)]
    if isinstance(source, np.ndarray):
        return [(_from_array(source, f"{what} array"), None)]
    if hasattr(source, "convert") and hasattr(source, "size"):  # a PIL image
        return [(_from_array(np.asarray(source.convert("RGB")), f"{what} PIL image"), None)]
    if isinstance(source, list | tuple):
        if not source:
            raise ValueError(f"{what} is an empty list")
        return [item for i, s in enumerate(source) for item in _load(s, f"{what}[{i}]", in_list=True)]
    raise ValueError(
        f"{what} of type {type(source).__name__} is not a path, folder, glob, PIL image, uint8 HWC array or "
        "[3, H, W] tensor"
    )


def _names(names: Sequence[str] | None, label: int) -> str:
    return names[label] if names is not None and 0 <= label < len(names) else str(label)


@dataclass
class Results:
    """The predictions for one image (module docstring); tensors are on the CPU.

    Attributes:
        image: the input (or generated) image, ``uint8 [3, H, W]`` RGB.
        task: ``"detection"``, ``"classification"`` or ``"generation"``.
        names: the model's class names (data-set labels), or ``None``.
        path: the file the image came from, or ``None``.
        boxes, scores, labels, masks: detections (``labels`` also for a conditional generator).
        probs: class probabilities ``[K]`` (classification).
        topk: ``[(label, name, probability), ...]``, best first (classification).
    """

    image: Tensor
    task: str
    names: list[str] | None = None
    path: str | None = None
    boxes: Tensor | None = None
    scores: Tensor | None = None
    labels: Tensor | None = None
    masks: Tensor | None = None
    probs: Tensor | None = None
    topk: list[tuple[int, str, float]] = field(default_factory=list)

    @classmethod
    def from_detections(
        cls, image: Tensor, det: Mapping[str, Tensor], names: Sequence[str] | None, path: str | None = None
    ) -> Results:
        """From a detector's dict (data-set labels; ``masks`` float ``[N, 1, H, W]`` probabilities, cut at 0.5)."""
        masks = det.get("masks")
        if masks is not None:
            masks = (masks[:, 0] if masks.dim() == 4 else masks).detach().cpu() > 0.5
        return cls(
            image=image,
            task="detection",
            names=list(names) if names is not None else None,
            path=path,
            boxes=det["boxes"].detach().float().cpu(),
            scores=det["scores"].detach().float().cpu(),
            labels=det["labels"].detach().long().cpu(),
            masks=masks,
        )

    @classmethod
    def from_probs(
        cls, image: Tensor, probs: Tensor, names: Sequence[str] | None, *, topk: int = 5, path: str | None = None
    ) -> Results:
        """From a classifier's softmax ``probs [K]``."""
        probs = probs.detach().float().cpu()
        values, indices = probs.topk(min(int(topk), probs.numel()))
        top = [(int(i), _names(names, int(i)), float(v)) for v, i in zip(values, indices)]
        return cls(image=image, task="classification", names=list(names) if names else None, path=path, probs=probs,
                   topk=top)  # fmt: skip

    def __getitem__(self, key: str) -> Any:
        """``r["boxes"]`` etc.: the detector-dict view of the same fields (``boxes scores labels masks probs``)."""
        if key not in ("boxes", "scores", "labels", "masks", "probs") or getattr(self, key) is None:
            raise KeyError(key)
        return getattr(self, key)

    def __len__(self) -> int:
        """Detections in the image (top-k entries for classification, 1 for a generated image)."""
        if self.boxes is not None:
            return len(self.boxes)
        return len(self.topk) if self.task == "classification" else 1

    # -------------------------------------------------------------------------------------------------- drawing
    def plot(self, *, line_width: int = 2, font_scale: float = 0.45) -> np.ndarray:
        """The image with the predictions drawn (boxes, masks, ``"name score"``; top-k text): ``uint8 [H, W, 3]``."""
        import cv2

        from vision.viz import draw_boxes

        if self.task == "detection" and self.boxes is not None:
            drawn = draw_boxes(self.image, self.boxes, self.labels, self.scores, masks=self.masks,
                               class_names=self.names, width=line_width, font_scale=font_scale)  # fmt: skip
            return np.ascontiguousarray(drawn.permute(1, 2, 0).numpy())
        canvas = np.ascontiguousarray(self.image.permute(1, 2, 0).numpy()).copy()
        lines = [f"{n} {p:.2f}" for _, n, p in self.topk]
        if self.task == "generation" and self.labels is not None and len(self.labels):
            lines = [_names(self.names, int(self.labels[0]))]
        for k, text in enumerate(lines):
            y = 4 + int(22 * font_scale / 0.45) * (k + 1)
            cv2.putText(canvas, text, (4, y), cv2.FONT_HERSHEY_SIMPLEX, font_scale, (0, 0, 0), 3, cv2.LINE_AA)
            cv2.putText(canvas, text, (4, y), cv2.FONT_HERSHEY_SIMPLEX, font_scale, (255, 255, 255), 1, cv2.LINE_AA)
        return canvas

    def save(self, path: str | os.PathLike[str], **plot_kwargs: Any) -> Path:
        """Write :meth:`plot` to ``path`` (PNG/JPEG by the suffix); returns the path."""
        from vision.io import write_image

        return write_image(path, torch.from_numpy(self.plot(**plot_kwargs)).permute(2, 0, 1).contiguous())

    # -------------------------------------------------------------------------------------------------- export
    def _rles(self) -> list[dict[str, Any]] | None:
        if self.masks is None or self.boxes is None or not len(self.boxes):
            return None
        from pycocotools import mask as mask_utils

        rles = mask_utils.encode(np.asfortranarray(self.masks.permute(1, 2, 0).numpy().astype(np.uint8)))
        return [{"size": r["size"], "counts": r["counts"].decode("ascii")} for r in rles]

    def to_dict(self) -> dict[str, Any]:
        """JSON-ready: detection ``{"file", "detections": [{"box" (xyxy), "score", "label", "name",
        "segmentation"?}]}``, classification ``{"file", "top": [{"label", "name", "prob"}]}``, generation
        ``{"file", "label", "class"}``."""
        if self.task == "classification":
            return {"file": self.path, "top": [{"label": i, "name": n, "prob": round(p, 6)} for i, n, p in self.topk]}
        if self.task != "detection" or self.boxes is None:
            label = int(self.labels[0]) if self.labels is not None and len(self.labels) else None
            return {"file": self.path, "label": label, "class": _names(self.names, label) if label is not None else ""}
        rles = self._rles()
        records = []
        for i, (box, score, label) in enumerate(zip(self.boxes.tolist(), self.scores.tolist(), self.labels.tolist())):
            item: dict[str, Any] = {"box": [round(v, 2) for v in box], "score": round(score, 5), "label": int(label),
                                    "name": _names(self.names, int(label))}  # fmt: skip
            if rles is not None:
                item["segmentation"] = rles[i]
            records.append(item)
        return {"file": self.path, "detections": records}

    def to_coco(
        self,
        image_id: int,
        label_to_cat_id: Mapping[int, int] | Sequence[int] | None = None,
        *,
        decimals: int | None = None,
    ) -> list[dict[str, Any]]:
        """Detections in COCO results format: ``image_id, category_id, bbox [x, y, w, h], score`` (+ ``segmentation``
        RLE); ``category_id = label_to_cat_id[label]`` (default ``label + 1``). ``decimals`` rounds boxes to that many
        places and scores to three more (as :meth:`to_dict` with 2); None keeps them as computed. Detection results
        only."""
        if self.task != "detection" or self.boxes is None:
            raise ValueError(f"to_coco needs detection results, these are {self.task} results")
        out = []
        rles = self._rles()
        for i, (box, score, label) in enumerate(zip(self.boxes.tolist(), self.scores.tolist(), self.labels.tolist())):
            x0, y0, x1, y1 = box
            cat = label_to_cat_id[int(label)] if label_to_cat_id is not None else int(label) + 1
            bbox, score = [x0, y0, x1 - x0, y1 - y0], float(score)
            if decimals is not None:
                bbox, score = [round(v, decimals) for v in bbox], round(score, decimals + 3)
            item: dict[str, Any] = {"image_id": int(image_id), "category_id": int(cat), "bbox": bbox, "score": score}
            if rles is not None:
                item["segmentation"] = rles[i]
            out.append(item)
        return out

    def __repr__(self) -> str:
        what = (
            f"{len(self)} detections"
            if self.task == "detection"
            else f"top {self.topk[:1]}"
            if self.task == "classification"
            else "generated image"
        )
        return f"Results({self.task}, {self.path or 'image'} {tuple(self.image.shape)}: {what})"
