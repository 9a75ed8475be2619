"""The contract every detector follows (Faster/Mask R-CNN, YOLO, SSD), and the small helpers that implement it.

Contract
--------
- ``model(images)`` in eval mode and ``model.predict(images)``: ``images`` is a list of float ``[3, H_i, W_i]``
  tensors in [0, 1] (any sizes) or a float tensor ``[B, 3, H, W]`` in [0, 1] (``uint8`` images are accepted and
  divided by 255). The model resizes and normalises internally. Returns one :data:`Detections` dict per image:
  ``boxes`` float32 ``[N, 4]`` xyxy in that input image's pixels, ``scores`` float32 ``[N]``, ``labels`` int64 ``[N]``
  in the model's label space, sorted by decreasing score, plus ``masks`` float32 ``[N, 1, H_i, W_i]`` in [0, 1] for
  instance-segmentation models. ``predict`` takes keyword overrides of the post-processing for one call:
  ``score_threshold``, ``iou_threshold`` (NMS) and ``max_det`` (``None``: the model's defaults).
- ``model.loss(images, targets) -> dict[str, Tensor]``: ``images`` as above; ``targets`` one dict per image with
  ``boxes`` float32 ``[N, 4]`` xyxy pixels of that image, ``labels`` int64 ``[N]`` in the model's label space and
  optionally ``masks`` uint8 ``[N, H_i, W_i]``. The losses are summed for the backward pass.
- Label spaces: a detector whose registry entry carries the tag ``"background_class"`` (:data:`BACKGROUND_TAG`), or
  whose class has ``background_class = True``, reserves label 0 for the background (torchvision's R-CNN and SSD
  semantics): it is built with ``num_classes = K + 1`` for a data set of ``K`` classes and its labels are ``1..K``
  (data-set label = model label - 1). Other detectors (YOLO) use the data-set labels ``0..K-1`` directly.
  :func:`label_offset` gives that offset; :func:`to_model_targets` / :func:`to_dataset_detections` apply it. The
  training task and the inference tool apply it; COCO evaluation and drawing use data-set labels.
- ``model.categories``: class names in the **data-set** label space (``categories[dataset_label]``), or ``None``.

Example:
    >>> offset = label_offset(model)                      # 1 for Faster R-CNN, 0 for YOLO
    >>> losses = model.loss(images, to_model_targets(targets, offset))
    >>> dets = to_dataset_detections(model.predict(images), offset)
"""

from __future__ import annotations

from collections.abc import Mapping, Sequence
from typing import Any

import torch
from torch import Tensor, nn

from vision.ops.image_range import check_unit_range
from vision.registry import describe

__all__ = [
    "BACKGROUND_TAG",
    "Detections",
    "as_image_list",
    "check_built_backbone",
    "check_targets",
    "filter_detections",
    "label_offset",
    "rebuild_kwargs",
    "split_padded",
    "to_dataset_detections",
    "to_model_targets",
]

#: registry tag of detectors whose label 0 is the background (``num_classes`` counts it)
BACKGROUND_TAG = "background_class"

#: one image's detections: ``{"boxes": [N, 4], "scores": [N], "labels": [N]}`` (+ ``"masks": [N, 1, H, W]``)
Detections = dict[str, Tensor]


def as_image_list(images: Tensor | Sequence[Tensor]) -> list[Tensor]:
    """Validate detector input and return it as a list of float ``[3, H, W]`` images in [0, 1].

    Args:
        images: float ``[B, 3, H, W]``, a list of float ``[3, H_i, W_i]`` (in [0, 1]), or the same in ``uint8``
            (divided by 255). A single ``[3, H, W]`` tensor is taken as one image; 1-channel images are repeated.

    Raises:
        TypeError / ValueError: naming the offending image and its shape or dtype, or float values outside [0, 1]
            (e.g. 0..255 floats: the message says to pass ``x / 255``).
    """
    if isinstance(images, Tensor):
        if images.dim() == 3:
            items = [images]
        elif images.dim() == 4:
            items = list(images.unbind(0))
        else:
            raise ValueError(f"detector images must be [B, 3, H, W] or a list of [3, H, W], got {tuple(images.shape)}")
    elif isinstance(images, Sequence) and not isinstance(images, str):
        items = list(images)
    else:
        raise TypeError(f"detector images must be a tensor or a list of tensors, got {type(images).__name__}")
    out = []
    for i, img in enumerate(items):
        if not isinstance(img, Tensor) or img.dim() != 3 or img.shape[0] not in (1, 3):
            shape = tuple(img.shape) if isinstance(img, Tensor) else type(img).__name__
            raise ValueError(f"image {i}: expected a [3, H, W] tensor, got {shape}")
        if img.dtype == torch.uint8:
            img = img.float().div_(255.0)
        elif not img.is_floating_point():
            raise TypeError(f"image {i}: expected float in [0, 1] or uint8, got {img.dtype}")
        if img.shape[0] == 1:
            img = img.expand(3, -1, -1)
        out.append(img)
    check_unit_range(out)  # one host read for the whole list
    return out


def check_targets(
    targets: Sequence[Mapping[str, Any]], num_images: int, *, masks: bool = False
) -> list[dict[str, Tensor]]:
    """Validate training targets (see the module contract) and return them as new dicts of tensors.

    ``boxes`` become float32 ``[N, 4]``, ``labels`` int64 ``[N]``; extra keys are kept. With ``masks=True`` every
    target must have ``masks [N, H, W]``.
    """
    if len(targets) != num_images:
        raise ValueError(f"got {num_images} images but {len(targets)} targets")
    out = []
    for i, t in enumerate(targets):
        if "boxes" not in t or "labels" not in t:
            raise ValueError(f"target {i} needs 'boxes' [N, 4] and 'labels' [N], got keys {sorted(t)}")
        boxes = torch.as_tensor(t["boxes"]).to(torch.float32).reshape(-1, 4)
        labels = torch.as_tensor(t["labels"]).to(torch.int64).reshape(-1)
        if boxes.shape[0] != labels.shape[0]:
            raise ValueError(f"target {i}: {boxes.shape[0]} boxes but {labels.shape[0]} labels")
        new = {**t, "boxes": boxes, "labels": labels}
        if masks:
            if "masks" not in t:
                raise ValueError(f"target {i} has no 'masks' but the model predicts masks")
            m = torch.as_tensor(t["masks"])
            if m.dim() != 3 or m.shape[0] != boxes.shape[0]:
                raise ValueError(f"target {i}: masks must be [N, H, W] with N={boxes.shape[0]}, got {tuple(m.shape)}")
            new["masks"] = m
        out.append(new)
    return out


def label_offset(model: nn.Module | str) -> int:
    """1 when ``model`` (a module, or a registry name) reserves label 0 for the background, else 0."""
    if isinstance(model, str):
        from vision.registry import resolve_entry

        return int(BACKGROUND_TAG in resolve_entry(model).tags)
    inner = getattr(model, "module", model)  # DDP / EMA wrappers
    return int(bool(getattr(inner, "background_class", False)))


def to_model_targets(targets: Sequence[Mapping[str, Any]], offset: int) -> list[dict[str, Any]]:
    """Targets with data-set labels -> model labels (``labels + offset``); other entries are shared, not copied."""
    if offset == 0:
        return [dict(t) for t in targets]
    return [{**t, "labels": torch.as_tensor(t["labels"]) + offset} for t in targets]


def to_dataset_detections(detections: Sequence[Mapping[str, Tensor]], offset: int) -> list[Detections]:
    """Detections with model labels -> data-set labels (``labels - offset``)."""
    if offset == 0:
        return [dict(d) for d in detections]
    return [{**d, "labels": d["labels"] - offset} for d in detections]


def split_padded(
    boxes: Tensor, scores: Tensor, labels: Tensor, counts: Tensor | Sequence[int], **extra: Tensor
) -> list[Detections]:
    """Padded per-image rows (``[B, D, ...]``, first ``counts[b]`` rows valid) -> one :data:`Detections` per image.

    One host synchronisation (reading ``counts``); the outputs are views. ``extra`` tensors ``[B, D, ...]`` are split
    the same way (e.g. ``indices=``).
    """
    n = counts.tolist() if isinstance(counts, Tensor) else [int(c) for c in counts]
    out = []
    for b, k in enumerate(n):
        det = {"boxes": boxes[b, :k], "scores": scores[b, :k], "labels": labels[b, :k]}
        det.update({name: value[b, :k] for name, value in extra.items()})
        out.append(det)
    return out


def filter_detections(
    det: Mapping[str, Tensor],
    *,
    score_threshold: float | None = None,
    classes: Sequence[int] | None = None,
    max_det: int | None = None,
) -> Detections:
    """Keep detections with ``score >= score_threshold`` whose label is in ``classes``, at most ``max_det`` of them
    (the highest-scoring; detections are assumed sorted by decreasing score, as every detector returns them)."""
    keep = torch.ones_like(det["scores"], dtype=torch.bool)
    if score_threshold is not None:
        keep &= det["scores"] >= score_threshold
    if classes is not None:
        wanted = torch.as_tensor(list(classes), dtype=det["labels"].dtype, device=det["labels"].device)
        keep &= torch.isin(det["labels"], wanted)
    index = keep.nonzero().squeeze(1)
    if max_det is not None:
        index = index[:max_det]
    n = keep.shape[0]
    return {k: v[index] if isinstance(v, Tensor) and v.dim() and v.shape[0] == n else v for k, v in det.items()}


def rebuild_kwargs(given: Mapping[str, Any]) -> dict[str, Any]:
    """The builder arguments that rebuild an architecture without downloading weights (stored with trained weights
    by the detection task): plain values only, weights and class counts dropped, tuples as lists."""
    skip = {"backbone_weights", "weights", "card", "num_classes", "categories"}
    plain = (str, int, float, bool, list, tuple, type(None))
    return {
        k: list(v) if isinstance(v, tuple) else v for k, v in given.items() if k not in skip and isinstance(v, plain)
    }


def check_built_backbone(backbone: Any, model: str, **given: bool) -> None:
    """Refuse a ``backbone=`` that is neither a registry name nor a built feature extractor (one declaring ``specs``
    and ``feature_info``, as :func:`vision.create_backbone` returns), and the backbone arguments that only a name can
    take (``given``: argument name -> whether it was passed); errors name the class, never print the module."""
    if isinstance(backbone, str):
        return
    if not isinstance(backbone, nn.Module):
        raise TypeError(f"{model}: backbone must be a registry name or a built backbone, got {describe(backbone)}")
    if not (hasattr(backbone, "specs") and hasattr(backbone, "feature_info")):
        raise TypeError(
            f"{model}: the built backbone {type(backbone).__name__} declares no feature levels (specs, feature_info); "
            "build it with vision.create_backbone(name, ...)"
        )
    passed = [name for name, yes in given.items() if yes]
    if passed:
        raise ValueError(
            f"{model}: {', '.join(passed)} apply to a backbone name; the built {type(backbone).__name__} already has "
            "its weights, levels and norms (pass them to vision.create_backbone)"
        )
