"""CPU augmentation recipes (albumentations), built by name + keyword arguments so YAML recipes can declare them.

``build_transform(name, **kwargs)`` returns a callable:

- classification recipes: ``t(image) -> float32 [3, size, size]`` normalised tensor, where ``image`` is an
  ``uint8 [H, W, 3]`` RGB numpy array (what the datasets pass) or an ``uint8 [3, H, W]`` tensor;
- detection recipes: ``t(image, target) -> (image, target)``, where ``image`` is as above and ``target`` holds
  ``boxes`` (``float32 [N, 4]`` xyxy pixels), ``labels`` (``int64 [N]``), optionally ``masks`` (``uint8 [N, H, W]``)
  and other per-box fields (:data:`BOX_FIELDS`), as numpy arrays or tensors. The output image is ``uint8 [3, S, S]``
  (``float32`` normalised with ``normalize=True``); the output target has the same keys as tensors, with boxes,
  masks and per-box fields of the surviving instances only. With masks, each box is recomputed as the tight box of
  its transformed mask (so boxes and masks always agree); an instance survives when albumentations keeps its box
  (``min_visibility``) and its mask keeps at least one pixel; then boxes narrower or lower than ``min_size`` pixels are
  dropped.

Masks travel through albumentations as ONE instance-id map (``0`` background, ``k + 1`` instance ``k``) when they do
not overlap -- one warp instead of ``N`` -- and as ``N`` binary masks when they do (the id map cannot represent shared
pixels). DataLoader workers reseed the pipeline from ``torch.utils.data.get_worker_info().seed``, so workers do not
repeat each other's augmentations.

Example:
    >>> t = build_transform("detection_train", size=512, hflip=0.5)
    >>> image, target = t(image_hwc, {"boxes": boxes, "labels": labels})
    >>> build_transform("classification_eval", size=224)(image_hwc).shape  # torch.Size([3, 224, 224])
"""

from __future__ import annotations

import difflib
import inspect
import os
import warnings
from collections.abc import Callable, Mapping, Sequence
from typing import Any

import cv2
import numpy as np
import torch
from torch import Tensor

from vision.data.knobs import MASK_MODES, check_knobs
from vision.data.masks import disjoint_id_map, masks_to_boxes
from vision.ops.letterbox import letterbox_info
from vision.registry import UnknownNameError

__all__ = [
    "BOX_FIELDS",
    "IMAGENET_MEAN",
    "IMAGENET_STD",
    "ClassificationTransform",
    "DetectionTransform",
    "build_transform",
    "list_transforms",
    "masks_to_boxes",
    "transform_arguments",
]

IMAGENET_MEAN = (0.485, 0.456, 0.406)
IMAGENET_STD = (0.229, 0.224, 0.225)
#: per-instance target entries that are filtered together with the boxes (indexed along their first axis)
BOX_FIELDS = ("labels", "iscrowd", "difficult", "scores", "ann_ids")
_INTERPOLATION = {
    "nearest": cv2.INTER_NEAREST,
    "linear": cv2.INTER_LINEAR,
    "bilinear": cv2.INTER_LINEAR,
    "cubic": cv2.INTER_CUBIC,
    "bicubic": cv2.INTER_CUBIC,
    "area": cv2.INTER_AREA,
}
_RECIPES: dict[str, Callable[..., Any]] = {}


def _albumentations() -> Any:
    os.environ.setdefault("NO_ALBUMENTATIONS_UPDATE", "1")  # never let an import reach the network
    import albumentations

    return albumentations


def _recipe(name: str) -> Callable[[Callable[..., Any]], Callable[..., Any]]:
    def decorator(fn: Callable[..., Any]) -> Callable[..., Any]:
        _RECIPES[name] = fn
        return fn

    return decorator


def list_transforms() -> list[str]:
    """Names accepted by :func:`build_transform`."""
    return sorted(_RECIPES)


#: keys renamed to GpuAugment's names and units: old -> (new, divisor from the old unit)
_RENAMED: dict[str, dict[str, tuple[str, float]]] = {
    "detection_train": {"hue_shift": ("hue", 360.0), "sat_shift": ("saturation", 255.0), "val_shift": ("value", 255.0)}
}


def transform_arguments(name: str) -> list[str]:
    """The keyword arguments of the transform recipe ``name`` (what ``augment.<key>=`` may set); ``[]`` when unknown."""
    fn = _RECIPES.get(name)
    return [*inspect.signature(fn).parameters, *_RENAMED.get(name, {})] if fn is not None else []


def build_transform(name: str, **kwargs: Any) -> Callable[..., Any]:
    """Build the recipe ``name`` with ``kwargs``.

    Raises:
        KeyError: unknown recipe (the message lists the valid names and close matches).
        TypeError: unknown keyword (the message lists the recipe's keywords and their defaults).

    Example:
        >>> build_transform("classification_train", size=32, scale=(0.5, 1.0), color_jitter=0.0)
    """
    if name not in _RECIPES:
        close = difflib.get_close_matches(name, list(_RECIPES), n=3)
        hint = f" Did you mean {', '.join(close)}?" if close else ""
        valid = ", ".join(list_transforms())
        raise UnknownNameError(f"unknown transform recipe {name!r}.{hint} Valid recipes: {valid}")
    fn = _RECIPES[name]
    for old, (new, unit) in _RENAMED.get(name, {}).items():
        if old in kwargs:
            if new in kwargs:
                raise TypeError(f"transform recipe {name!r}: give {new}= or the deprecated {old}=, not both")
            kwargs[new] = float(kwargs.pop(old)) / unit
            warnings.warn(f"augment.{old} is deprecated: use augment.{new}={kwargs[new]:.4g} (GpuAugment's units)",
                          DeprecationWarning, stacklevel=2)  # fmt: skip
    params = inspect.signature(fn).parameters
    unknown = sorted(set(kwargs) - set(params))
    if unknown:
        valid = ", ".join(f"{k}={p.default!r}" for k, p in params.items())
        close = [m for u in unknown for m in difflib.get_close_matches(u, list(params), n=1)]
        hint = f" Did you mean {', '.join(close)}?" if close else ""
        raise TypeError(f"transform recipe {name!r} got unknown argument(s) {', '.join(unknown)}.{hint} Valid: {valid}")
    return fn(**check_knobs(kwargs, recipe=name))


def _as_hwc(image: np.ndarray | Tensor) -> np.ndarray:
    if isinstance(image, Tensor):
        if image.dim() != 3 or image.shape[0] not in (1, 3):
            raise ValueError(f"expected an image tensor [3, H, W], got {tuple(image.shape)}")
        image = image.detach().cpu().expand(3, -1, -1).permute(1, 2, 0).numpy()
    if image.ndim == 2:
        image = np.repeat(image[:, :, None], 3, axis=2)
    if image.dtype != np.uint8:
        raise ValueError(f"expected an uint8 image, got {image.dtype}")
    return np.ascontiguousarray(image)


def _np(x: Any, dtype: np.dtype | type | None) -> np.ndarray:
    if isinstance(x, Tensor):
        x = x.detach().cpu().numpy()
    return np.asarray(x, dtype=dtype)


def _to_chw(image: np.ndarray) -> Tensor:
    """``[H, W, C]`` -> ``[C, H, W]`` view (no copy; channels-last strides, which ``torch.stack`` accepts)."""
    return torch.from_numpy(image).permute(2, 0, 1)


class _Seeded:
    """Reseeds an albumentations pipeline once per DataLoader worker (workers would otherwise share its RNG)."""

    compose: Any
    _seeded_for: tuple[int, int] | None = None

    def set_random_seed(self, seed: int) -> None:
        """Seed the pipeline explicitly (the engine does so per sample); the per-worker reseeding then stays off."""
        info = torch.utils.data.get_worker_info()
        self._seeded_for = (os.getpid(), info.seed) if info is not None else None
        self.compose.set_random_seed(int(seed) % 2**32)

    def _maybe_reseed(self) -> None:
        info = torch.utils.data.get_worker_info()
        if info is None:
            return
        key = (os.getpid(), info.seed)
        if key != self._seeded_for:
            self._seeded_for = key
            self.compose.set_random_seed(info.seed % 2**32)


class ClassificationTransform(_Seeded):
    """An albumentations pipeline ending in ``float32 [3, h, w]`` (see module docstring).

    Attributes:
        name, kwargs: the recipe that built it; ``compose``: the albumentations ``Compose``.
    """

    def __init__(self, name: str, kwargs: Mapping[str, Any], compose: Any) -> None:
        self.name, self.kwargs, self.compose = name, dict(kwargs), compose

    def __call__(self, image: np.ndarray | Tensor) -> Tensor:
        self._maybe_reseed()
        return _to_chw(self.compose(image=_as_hwc(image))["image"])

    def __repr__(self) -> str:
        args = ", ".join(f"{k}={v!r}" for k, v in self.kwargs.items())
        return f"build_transform({self.name!r}{', ' if args else ''}{args})"


class DetectionTransform(_Seeded):
    """An albumentations detection pipeline with box/mask bookkeeping (see module docstring).

    Attributes:
        name, kwargs: the recipe that built it; ``compose``: the albumentations ``Compose``.
        letterbox_size: when set, the target gets ``letterbox = (scale_x, scale_y, pad_left, pad_top)``.
    """

    def __init__(
        self,
        name: str,
        kwargs: Mapping[str, Any],
        compose: Any,
        *,
        min_size: float = 1.0,
        normalize: tuple[Sequence[float], Sequence[float]] | None = None,
        letterbox_size: int | None = None,
        mask_mode: str = "auto",
    ) -> None:
        if mask_mode not in MASK_MODES:
            raise ValueError(f"mask_mode must be one of {', '.join(map(repr, MASK_MODES))}, got {mask_mode!r}")
        self.name, self.kwargs, self.compose = name, dict(kwargs), compose
        self.min_size = float(min_size)
        self.letterbox_size = letterbox_size
        self.mask_mode = mask_mode
        self._norm = None
        if normalize is not None:
            mean, std = (np.asarray(v, np.float32) * 255.0 for v in normalize)
            self._norm = (torch.from_numpy(mean).view(3, 1, 1), torch.from_numpy(1.0 / std).view(3, 1, 1))

    def __repr__(self) -> str:
        args = ", ".join(f"{k}={v!r}" for k, v in self.kwargs.items())
        return f"build_transform({self.name!r}{', ' if args else ''}{args})"

    def __call__(self, image: np.ndarray | Tensor, target: Mapping[str, Any]) -> tuple[Tensor, dict[str, Any]]:
        self._maybe_reseed()
        img = _as_hwc(image)
        H, W = img.shape[:2]
        boxes = _np(target.get("boxes", np.zeros((0, 4))), np.float32).reshape(-1, 4)
        n = len(boxes)
        data: dict[str, Any] = {"image": img, "bboxes": boxes, "idx": np.arange(n)}
        masks = target.get("masks")
        id_map = None
        if masks is not None:
            masks = _np(masks, np.uint8).reshape(n, H, W)
            if self.mask_mode != "list":
                id_map = disjoint_id_map(masks)
                if id_map is None and self.mask_mode == "map":
                    raise ValueError("mask_mode='map' needs non-overlapping masks")
            if id_map is not None:
                data["mask"] = id_map
            else:
                data["masks"] = masks
        out = self.compose(**data)
        keep = np.asarray(out["idx"], np.int64).reshape(-1)
        out_img = out["image"]
        h, w = out_img.shape[:2]
        result = {k: v for k, v in target.items() if k not in ("boxes", "masks", *BOX_FIELDS)}
        if masks is not None:
            if id_map is not None:
                new_masks = out["mask"][None] == (keep + 1).astype(out["mask"].dtype)[:, None, None]
            else:
                new_masks = np.asarray(out["masks"]).reshape(-1, h, w)[keep] > 0
            new_boxes = masks_to_boxes(new_masks)
        else:
            new_masks = None
            new_boxes = np.asarray(out["bboxes"], np.float32).reshape(-1, 4)[:, :4]
        wh = new_boxes[:, 2:] - new_boxes[:, :2]
        ok = (wh >= self.min_size).all(1) & (wh > 0).all(1)
        keep, new_boxes = keep[ok], new_boxes[ok]
        result["boxes"] = torch.from_numpy(np.ascontiguousarray(new_boxes, np.float32))
        if new_masks is not None:
            result["masks"] = torch.from_numpy(np.ascontiguousarray(new_masks[ok])).view(torch.uint8)
        for key in BOX_FIELDS:
            if key in target:
                value = _np(target[key], np.int64 if key == "labels" else None)
                result[key] = torch.from_numpy(np.ascontiguousarray(value[keep]))
        if self.letterbox_size is not None:
            result["letterbox"] = torch.tensor(letterbox_info(H, W, self.letterbox_size), dtype=torch.float32)
        chw = _to_chw(out_img)
        if self._norm is not None:
            mean, inv_std = self._norm
            chw = (chw.float() - mean) * inv_std
        return chw, result


def _check_size(size: int) -> int:
    if not isinstance(size, int) or size <= 0:
        raise ValueError(f"size must be a positive int, got {size!r}")
    return size


def _interp(name: str) -> int:
    if name not in _INTERPOLATION:
        raise ValueError(f"interpolation must be one of {', '.join(_INTERPOLATION)}, got {name!r}")
    return _INTERPOLATION[name]


def _shrink_args(name: str) -> dict[str, Any]:
    """A resize's ``interpolation`` and, unless it is nearest, OpenCV's area filter where it shrinks (antialiased,
    as PIL's and torchvision's resizes: a plain bilinear shrink aliases fine detail)."""
    return {"interpolation": _interp(name), "area_for_downscale": None if name == "nearest" else "image"}


def _range(value: float | Sequence[float]) -> tuple[float, float]:
    if isinstance(value, int | float):
        return (-float(value), float(value))
    lo, hi = value
    return (float(lo), float(hi))


@_recipe("classification_train")
def classification_train(
    size: int = 224,
    scale: Sequence[float] = (0.08, 1.0),
    ratio: Sequence[float] = (3 / 4, 4 / 3),
    hflip: float = 0.5,
    color_jitter: float | Sequence[float] = 0.4,
    color_jitter_p: float = 1.0,
    mean: Sequence[float] = IMAGENET_MEAN,
    std: Sequence[float] = IMAGENET_STD,
    interpolation: str = "bilinear",
    seed: int | None = None,
) -> ClassificationTransform:
    """RandomResizedCrop(size, scale, ratio) -> HorizontalFlip(p=hflip) -> ColorJitter -> Normalize -> CHW float.
    A crop shrunk to ``size`` is filtered with OpenCV's area filter (antialiased), one enlarged with ``interpolation``.

    ``color_jitter``: one strength for brightness, contrast and saturation (hue 0), or ``(b, c, s)`` / ``(b, c, s,
    h)``; ``0`` leaves the op out.
    """
    kwargs = dict(locals())
    A = _albumentations()
    ops = [
        A.RandomResizedCrop(size=(_check_size(size), size), scale=tuple(scale), ratio=tuple(ratio),
                            **_shrink_args(interpolation)),
    ]  # fmt: skip
    if hflip > 0:
        ops.append(A.HorizontalFlip(p=hflip))
    cj = (color_jitter,) * 3 + (0.0,) if isinstance(color_jitter, int | float) else tuple(color_jitter)
    cj = cj + (0.0,) * (4 - len(cj))
    if any(cj) and color_jitter_p > 0:
        b, c, s, h = cj
        ops.append(A.ColorJitter(brightness=(max(0, 1 - b), 1 + b), contrast=(max(0, 1 - c), 1 + c),
                                 saturation=(max(0, 1 - s), 1 + s), hue=(-h, h), p=color_jitter_p))  # fmt: skip
    ops.append(A.Normalize(mean=tuple(mean), std=tuple(std)))
    return ClassificationTransform("classification_train", kwargs, A.Compose(ops, seed=seed))


@_recipe("classification_eval")
def classification_eval(
    size: int = 224,
    crop_pct: float = 0.875,
    resize_size: int | None = None,
    mean: Sequence[float] = IMAGENET_MEAN,
    std: Sequence[float] = IMAGENET_STD,
    interpolation: str = "bilinear",
) -> ClassificationTransform:
    """Resize the shorter side to ``resize_size`` (default ``int(size / crop_pct)``; antialiased when it shrinks, as
    in ``classification_train``) -> CenterCrop(size) -> Normalize."""
    kwargs = dict(locals())
    A = _albumentations()
    resize_size = resize_size or int(_check_size(size) / crop_pct)
    ops = [
        A.SmallestMaxSize(max_size=resize_size, **_shrink_args(interpolation)),
        A.CenterCrop(height=size, width=size, pad_if_needed=True),
        A.Normalize(mean=tuple(mean), std=tuple(std)),
    ]
    return ClassificationTransform("classification_eval", kwargs, A.Compose(ops))


def _letterbox_ops(A: Any, size: int, fill: float, interpolation: str) -> list[Any]:
    return [
        A.LongestMaxSize(max_size=size, interpolation=_interp(interpolation)),
        A.PadIfNeeded(min_height=size, min_width=size, position="center", border_mode=cv2.BORDER_CONSTANT,
                      fill=fill, fill_mask=0),
    ]  # fmt: skip


def _bbox_params(A: Any, min_visibility: float) -> Any:
    return A.BboxParams(format="pascal_voc", label_fields=["idx"], min_visibility=min_visibility, clip=True,
                        filter_invalid_bboxes=True)  # fmt: skip


@_recipe("detection_train")
def detection_train(
    size: int = 640,
    crop_p: float = 0.3,
    scale: float | Sequence[float] = (0.5, 1.5),
    translate: float | Sequence[float] = 0.1,
    degrees: float | Sequence[float] = 0.0,
    shear: float | Sequence[float] = 0.0,
    hflip: float = 0.5,
    vflip: float = 0.0,
    hue: float = 0.015,
    saturation: float = 0.16,
    value: float = 0.12,
    hsv_p: float = 0.8,
    min_visibility: float = 0.1,
    min_size: float = 2.0,
    fill: float = 114.0,
    normalize: bool = False,
    mean: Sequence[float] = (0.0, 0.0, 0.0),
    std: Sequence[float] = (1.0, 1.0, 1.0),
    interpolation: str = "linear",
    mask_mode: str = "auto",
    seed: int | None = None,
) -> DetectionTransform:
    """BBoxSafeRandomCrop(p=crop_p) -> letterbox to ``size`` -> Affine(scale, translate, rotate, shear) ->
    flips -> colour jitter (p=hsv_p).

    The knobs have the names and units of :class:`vision.data.GpuAugment`: ``scale`` is a factor range;
    ``translate`` a fraction of the side (``t`` means ``(-t, t)``); ``degrees`` and ``shear`` in degrees (``d`` means
    ``(-d, d)``); ``hue`` a fraction of a full turn (``0.015`` = +-5.4 degrees); ``saturation`` and ``value`` gain
    ranges (``0.16`` means gains in ``(0.84, 1.16)``). The old albumentations-unit keys ``hue_shift``, ``sat_shift``,
    ``val_shift`` still work with a deprecation warning (converted: ``hue = hue_shift / 360``, ``saturation =
    sat_shift / 255``, ``value = val_shift / 255``). Identity settings leave their op out. Output ``uint8 [3, size,
    size]`` (normalised ``float32`` with ``normalize=True``; mean/std in [0, 1] units). See the module docstring for
    the target.
    """
    kwargs = dict(locals())
    A = _albumentations()
    _check_size(size)
    ops: list[Any] = []
    if crop_p > 0:
        ops.append(A.BBoxSafeRandomCrop(erosion_rate=0.0, p=crop_p))
    ops += _letterbox_ops(A, size, fill, interpolation)
    sc = (1.0 - scale, 1.0 + scale) if isinstance(scale, int | float) else _range(scale)
    tr, rot, sh = _range(translate), _range(degrees), _range(shear)
    if (sc, tr, rot, sh) != ((1.0, 1.0), (0.0, 0.0), (0.0, 0.0), (0.0, 0.0)):
        ops.append(A.Affine(scale=sc, translate_percent=tr, rotate=rot, shear=sh, keep_ratio=True, p=1.0,
                            interpolation=_interp(interpolation), border_mode=cv2.BORDER_CONSTANT, fill=fill,
                            fill_mask=0))  # fmt: skip
    if hflip > 0:
        ops.append(A.HorizontalFlip(p=hflip))
    if vflip > 0:
        ops.append(A.VerticalFlip(p=vflip))
    if hsv_p > 0 and (hue or saturation or value):
        ops.append(A.ColorJitter(brightness=(1 - value, 1 + value), contrast=(1.0, 1.0),
                                 saturation=(1 - saturation, 1 + saturation), hue=(-hue, hue), p=hsv_p))  # fmt: skip
    compose = A.Compose(ops, bbox_params=_bbox_params(A, min_visibility), seed=seed)
    return DetectionTransform("detection_train", kwargs, compose, min_size=min_size, mask_mode=mask_mode,
                              normalize=(mean, std) if normalize else None)  # fmt: skip


@_recipe("detection_shrink")
def detection_shrink(size: int = 640, interpolation: str = "area") -> Any:
    """Downscale-only resize of the longer side to ``size`` (see :class:`vision.data.shrink.ShrinkTransform`)."""
    from vision.data.shrink import ShrinkTransform

    return ShrinkTransform(size, interpolation)


@_recipe("detection_eval")
def detection_eval(
    size: int = 640,
    fill: float = 114.0,
    normalize: bool = False,
    mean: Sequence[float] = (0.0, 0.0, 0.0),
    std: Sequence[float] = (1.0, 1.0, 1.0),
    interpolation: str = "linear",
    min_size: float = 0.0,
) -> DetectionTransform:
    """Letterbox: scale the longer side to ``size``, pad to ``size x size`` with ``fill`` (centred).

    The target gets ``letterbox = (scale_x, scale_y, pad_left, pad_top)``; :func:`vision.ops.unletterbox` maps
    predictions back to the original image.
    """
    kwargs = dict(locals())
    A = _albumentations()
    ops = _letterbox_ops(A, _check_size(size), fill, interpolation)
    compose = A.Compose(ops, bbox_params=_bbox_params(A, 0.0))
    return DetectionTransform("detection_eval", kwargs, compose, min_size=min_size, letterbox_size=size,
                              normalize=(mean, std) if normalize else None)  # fmt: skip
