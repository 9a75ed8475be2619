"""``predict(source)`` for every model family: sources in, :class:`~vision.results.Results` out.

Each family keeps its own ``predict(images, ...)`` on preprocessed batches; :func:`detection_predict` wraps it (one
decorator line) so that a path, folder, glob, PIL image, numpy array or single ``[3, H, W]`` tensor gives one
``Results`` per image with data-set labels, while a batch (``[B, 3, H, W]`` or a list of tensors) gives exactly what
it gave before. The ``conf`` (``score_threshold``), ``iou`` (``iou_threshold``) and ``batch`` (images per call)
options work for both kinds of input; sources are scored above 0.25 unless told otherwise, as by ``tools/infer.py``.
:func:`generation_predict` is the generators' ``predict``: ``n`` sampled images as ``Results``.
"""

from __future__ import annotations

import functools
from collections.abc import Callable
from typing import Any, TypeVar

import torch
from torch import nn

from vision.results import Results, is_batch, load_sources
from vision.utils.keys import positive_integer

__all__ = ["SOURCE_CONF", "detection_predict", "generation_predict"]

F = TypeVar("F", bound=Callable[..., Any])


def _device(model: nn.Module) -> torch.device:
    return next((p.device for p in model.parameters()), torch.device("cpu"))


#: score threshold of ``predict(source)`` when none is given: what ``tools/infer.py`` and ultralytics use (a batch
#: of tensors keeps the model's own, 0.001 for the zoo's detectors, which validation needs)
SOURCE_CONF = 0.25

_ALIASES = {"conf": "score_threshold", "iou": "iou_threshold"}


def _options(options: dict[str, Any]) -> dict[str, Any]:
    """``options`` with the CLI's names (``conf``, ``iou``) turned into the detectors' and the thresholds and
    ``max_det`` checked (``ValueError`` naming the key)."""
    said = {name: name for name in _ALIASES.values()}
    for alias, name in _ALIASES.items():
        if alias in options:
            if name in options:
                raise ValueError(f"give {alias}= or {name}= (the same setting), not both")
            options[name], said[name] = options.pop(alias), alias
    for name in ("score_threshold", "iou_threshold"):
        value = options.get(name)
        if value is not None and (isinstance(value, bool) or not isinstance(value, int | float) or not 0 <= value <= 1):
            raise ValueError(f"{said[name]}={value!r} must be a number in [0, 1]")
    if options.get("max_det") is not None:
        positive_integer("max_det", options["max_det"], "detections kept per image")
    return options


def detection_predict(method: F) -> F:
    """Decorate a detector's ``predict(images, **options)`` so that it also takes sources (module docstring).

    ``batch`` (images per call; default 16 for sources, the whole batch for a batch) and the CLI's names ``conf``
    (``score_threshold``) and ``iou`` (``iou_threshold``) are accepted for every input; thresholds must lie in
    [0, 1], ``max_det`` be a positive integer. For sources the result is ``list[Results]`` with boxes in each image's
    pixels and data-set labels, scored above :data:`SOURCE_CONF` (0.25, as ``tools/infer.py``) unless a threshold is
    given; for a batch, the method's own per-image list at the model's own threshold.

    Raises:
        ValueError: an option and its alias both given, a threshold outside [0, 1], ``max_det`` or ``batch`` not a
            positive integer.
    """

    @functools.wraps(method)
    def predict(self: nn.Module, source: Any, **options: Any) -> Any:
        options = _options(options)
        batch = options.pop("batch", None)
        batch = positive_integer("batch", batch, "images per call") if batch is not None else None
        if is_batch(source):
            if batch is None or batch >= len(source):
                return method(self, source, **options)
            out = []
            for start in range(0, len(source), batch):
                out.extend(method(self, source[start : start + batch], **options))
            return out
        options.setdefault("score_threshold", SOURCE_CONF)
        from vision.models.detection.common import label_offset, to_dataset_detections

        batch = batch or 16
        images = load_sources(source)
        device, offset = _device(self), label_offset(self)
        names = getattr(self, "categories", None)
        out: list[Results] = []
        for start in range(0, len(images), batch):
            chunk = images[start : start + batch]
            x = [img.to(device).float().div_(255.0) for img, _ in chunk]
            with torch.no_grad():
                dets = to_dataset_detections(method(self, x, **options), offset)
            out.extend(Results.from_detections(img, d, names, path) for (img, path), d in zip(chunk, dets))
        return out

    return predict  # type: ignore[return-value]


def generation_predict(
    self: nn.Module, n: int = 1, *, labels: Any = None, seed: int = 0, **options: Any
) -> list[Results]:
    """``n`` generated images as ``Results`` (``image`` uint8 ``[3, H, W]``; ``labels`` ``[1]`` when conditional).

    ``labels``, ``seed`` and ``options`` (``steps``, ``guidance_scale``, ``sampler``, ``eta``, ``batch_size``) go to
    ``self.sample``.
    """
    images, used = self.sample(int(n), labels=labels, seed=int(seed), return_labels=True, **options)
    names = getattr(self, "categories", None)
    names = list(names) if names else None
    return [
        Results(
            image=img.cpu().expand(3, -1, -1).contiguous(),
            task="generation",
            names=names,
            labels=used[i : i + 1].long().cpu() if used is not None else None,
        )
        for i, img in enumerate(images)
    ]
