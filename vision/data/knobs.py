"""What each augmentation knob may be set to, checked before a transform recipe or :class:`GpuAugment` is built.

The recipes of :mod:`vision.data.transforms` and :class:`vision.data.GpuAugment` share knob names and units
(``hflip`` a probability, ``hue`` a fraction of a turn, ``scale`` a factor or a factor range, ...). Without a check
a wrong value is used as given — ``hflip=2`` flips every image, ``saturation=3`` makes negative gains, ``scale=[1.5,
0.5]`` an empty range — or fails deep inside albumentations with a message that does not name the knob.
:func:`check_knobs` refuses such values with one line naming the knob as the user wrote it (``augment.hflip=2 is not
allowed: augment.hflip must be a finite number in [0.0, 1.0]``) and returns the values converted to their types.

Example:
    >>> check_knobs({"hflip": "0.25", "scale": [0.5, 1.5]}, prefix="augment.")
    {'hflip': 0.25, 'scale': [0.5, 1.5]}
"""

from __future__ import annotations

import math
from collections.abc import Callable, Mapping
from typing import Any

from vision.utils.keys import ArgumentError, flag, integer, number, one_of

__all__ = ["MASK_MODES", "check_knobs"]

#: how a detection transform returns instance masks (``DetectionTransform(mask_mode=...)``)
MASK_MODES = ("auto", "map", "list")

_Check = Callable[[str, Any], Any]


def _refuse(key: str, value: Any, allowed: str) -> ArgumentError:
    return ArgumentError(f"{key}={value} is not allowed: {key} must be {allowed}")


def _interpolation(key: str, value: Any) -> Any:
    """One of the interpolation names the transform recipes map to OpenCV flags."""
    from vision.data.transforms import _INTERPOLATION  # at call time: transforms imports this module

    return one_of(*_INTERPOLATION).check(key, value)


def _numbers(key: str, value: Any, allowed: str, count: tuple[int, ...]) -> list[float]:
    """``value`` as a list of ``count`` finite numbers, or one line naming ``key``."""
    items = list(value) if isinstance(value, list | tuple) else None
    out: list[float] = []
    for item in items or []:
        try:
            v = float(item) if not isinstance(item, bool) else math.nan
        except (TypeError, ValueError):
            v = math.nan
        out.append(v)
    if items is None or len(out) not in count or not all(math.isfinite(v) for v in out):
        raise _refuse(key, value, allowed)
    return out


def _span(single: float, low: float, high: float, *, positive: bool = False) -> _Check:
    """A number ``d`` in ``[0, single]`` (a range around a centre: ``(-d, d)``, or ``(1 - d, 1 + d)`` for a factor),
    or an increasing pair ``[a, b]`` within ``[low, high]`` (``(low, high]`` when ``positive``); ``single=0``: pairs
    only."""
    inside = f"({low}, {high}]" if positive else f"[{low}, {high}]"
    allowed = f"a pair [low, high] with low <= high, both in {inside}"
    if single > 0:
        allowed = f"a number in [0.0, {single}] or " + allowed

    def check(key: str, value: Any) -> Any:
        if not isinstance(value, list | tuple):
            if single <= 0:
                raise _refuse(key, value, allowed)
            try:
                return number(0.0, single).check(key, value)
            except ArgumentError:
                raise _refuse(key, value, allowed) from None
        a, b = _numbers(key, value, allowed, (2,))
        if a > b or a < low or b > high or (positive and a <= low):
            raise _refuse(key, value, allowed)
        return [a, b]

    return check


def _triple(*, positive: bool) -> _Check:
    allowed = f"a list of 3 numbers{' > 0' if positive else ''} (one per channel, in [0, 1] units)"

    def check(key: str, value: Any) -> Any:
        out = _numbers(key, value, allowed, (3,))
        if positive and min(out) <= 0:
            raise _refuse(key, value, allowed)
        return out

    return check


def _jitter(key: str, value: Any) -> Any:
    allowed = "a number >= 0 or a list [brightness, contrast, saturation(, hue)] of numbers >= 0 (hue <= 0.5)"
    if not isinstance(value, list | tuple):
        try:
            return number(0.0).check(key, value)
        except ArgumentError:
            raise _refuse(key, value, allowed) from None
    out = _numbers(key, value, allowed, (3, 4))
    if min(out) < 0 or (len(out) == 4 and out[3] > 0.5):
        raise _refuse(key, value, allowed)
    return out


def _seed(key: str, value: Any) -> Any:
    return None if value is None or str(value).lower() in ("none", "null") else integer(0).check(key, value)


_PROBABILITY = number(0.0, 1.0).check

#: knob -> its check, for every recipe and GpuAugment (names and units are shared)
_KNOBS: dict[str, _Check] = {
    "hflip": _PROBABILITY,
    "vflip": _PROBABILITY,
    "crop_p": _PROBABILITY,
    "hsv_p": _PROBABILITY,
    "color_jitter_p": _PROBABILITY,
    "mosaic": _PROBABILITY,
    "min_visibility": _PROBABILITY,
    "hue": number(0.0, 0.5).check,
    "saturation": number(0.0, 1.0).check,
    "value": number(0.0, 1.0).check,
    "min_size": number(0.0).check,
    "fill": number(0.0, 255.0).check,
    "crop_pct": number(0.0, 1.0, lo_open=True).check,
    "scale": _span(0.99, 0.0, 16.0, positive=True),  # a zoom factor range; s means (1 - s, 1 + s)
    "translate": _span(1.0, -1.0, 1.0),  # a fraction of the side
    "degrees": _span(180.0, -180.0, 180.0),
    "shear": _span(89.0, -89.0, 89.0),
    "color_jitter": _jitter,
    "interpolation": _interpolation,
    "mask_mode": one_of(*MASK_MODES).check,
    "normalize": flag().check,
    "seed": _seed,
    "mean": _triple(positive=False),
    "std": _triple(positive=True),
    "hue_shift": number(0.0, 180.0).check,  # deprecated albumentations units, converted by build_transform
    "sat_shift": number(0.0, 255.0).check,
    "val_shift": number(0.0, 255.0).check,
    "size": integer(1).check,
    "resize_size": lambda key, value: None if value is None else integer(1).check(key, value),
}


#: classification_train's own meaning of two knobs: RandomResizedCrop's area fraction and aspect-ratio ranges
_CLASSIFICATION: dict[str, _Check] = {
    "scale": _span(0.0, 0.0, 1.0, positive=True),
    "ratio": _span(0.0, 0.0, 100.0, positive=True),
}


def check_knobs(values: Mapping[str, Any], *, prefix: str = "", recipe: str = "") -> dict[str, Any]:
    """``values`` checked and converted knob by knob (a knob without a rule passes as given).

    Args:
        values: knob -> value, as given (strings from the command line are converted).
        prefix: how the user wrote the knobs' section (``"augment."``), for the message.
        recipe: the recipe the values are for; ``classification_train``'s ``scale`` and ``ratio`` are area and
            aspect ranges (increasing pairs of positive numbers, ``scale`` at most 1), everywhere else ``scale`` is a
            zoom factor range.

    Raises:
        ArgumentError: one line naming the first knob at fault and what it must be.
    """
    out: dict[str, Any] = {}
    for key, value in values.items():
        check = _CLASSIFICATION.get(key) if recipe == "classification_train" else None
        check = check or _KNOBS.get(key)
        out[key] = check(f"{prefix}{key}", value) if check is not None else value
    return out
