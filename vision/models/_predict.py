"""``predict(source)`` for every model family: sources in, :class:`~vision.results.Results` out.

Each family keeps its own ``predict(images, ...)`` on preprocessed batches; :func:`detection_predict` wraps it (one
decorator line) so that a path, folder, glob, PIL image, numpy array or single ``[3, H, W]`` tensor gives one
``Results`` per image with data-set labels, while a batch (``[B, 3, H, W]`` or a list of tensors) gives exactly what
it gave before. The ``conf`` (``score_threshold``) and ``batch`` (images per call) aliases work for both kinds of
input. :func:`generation_predict` is the generators' ``predict``: ``n`` sampled images as ``Results``.
"""

from __future__ import annotations

import functools
import operator
from collections.abc import Callable
from typing import Any, TypeVar

import torch
from torch import nn

from vision.results import Results, is_batch, load_sources

__all__ = ["detection_predict", "generation_predict"]

F = TypeVar("F", bound=Callable[..., Any])


def _device(model: nn.Module) -> torch.device:
    return next((p.device for p in model.parameters()), torch.device("cpu"))


def _batch_size(value: Any) -> int | None:
    """``batch=`` of ``predict``: a positive integer, or ``None`` when not given."""
    if value is None:
        return None
    try:
        size = None if isinstance(value, bool) else operator.index(value)
    except TypeError:
        size = None
    if size is None or size < 1:
        raise ValueError(f"batch={value!r} must be a positive integer (images per call)")
    return size


def detection_predict(method: F) -> F:
    """Decorate a detector's ``predict(images, **options)`` so that it also takes sources (module docstring).

    ``batch`` (images per call; default 16 for sources, the whole batch for a batch) and the ``conf`` alias of
    ``score_threshold`` are accepted for every input. For sources the result is ``list[Results]`` with boxes in each
    image's pixels and data-set labels; for a batch, the method's own per-image list.

    Raises:
        ValueError: ``conf`` and ``score_threshold`` both given, or ``batch`` not a positive integer.
    """

    @functools.wraps(method)
    def predict(self: nn.Module, source: Any, **options: Any) -> Any:
        if "conf" in options:
            if "score_threshold" in options:
                raise ValueError("give conf= or score_threshold= (the same threshold), not both")
            options["score_threshold"] = options.pop("conf")
        batch = _batch_size(options.pop("batch", None))
        if is_batch(source):
            if batch is None or batch >= len(source):
                return method(self, source, **options)
            out = []
            for start in range(0, len(source), batch):
                out.extend(method(self, source[start : start + batch], **options))
            return out
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
