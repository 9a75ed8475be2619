"""Augmentation knob values (``vision.data.knobs.check_knobs``) for the transform recipes and GpuAugment."""

from __future__ import annotations

import inspect

import pytest

from vision.data import GpuAugment, build_transform
from vision.data.knobs import check_knobs
from vision.data.transforms import _RECIPES
from vision.utils.keys import ArgumentError


@pytest.mark.parametrize(
    ("knobs", "recipe", "message"),
    [
        ({"hflip": 2}, "", "augment.hflip=2 is not allowed: augment.hflip must be a finite number in [0.0, 1.0]"),
        ({"vflip": "abc"}, "", "augment.vflip=abc is not allowed"),
        ({"mosaic": "nan"}, "", "augment.mosaic=nan is not allowed"),
        ({"saturation": 3}, "", "augment.saturation=3 is not allowed"),
        ({"hue": 0.6}, "", "augment.hue=0.6 is not allowed"),
        ({"scale": [1.5, 0.5]}, "", "low <= high"),
        ({"scale": 1.0}, "", "a number in [0.0, 0.99]"),  # (0, 2): a zero zoom
        ({"scale": [0.0, 1.5]}, "", "both in (0.0, 16.0]"),
        ({"scale": [0.5, 1.5]}, "classification_train", "both in (0.0, 1.0]"),  # an area fraction there
        ({"scale": 0.5}, "classification_train", "must be a pair"),
        ({"ratio": [0.0, 1.0]}, "classification_train", "augment.ratio=[0.0, 1.0] is not allowed"),
        ({"translate": 2}, "", "augment.translate=2 is not allowed"),
        ({"degrees": [10, "x"]}, "", "augment.degrees=[10, 'x'] is not allowed"),
        ({"color_jitter": [0.1, -1, 0.2]}, "", "augment.color_jitter=[0.1, -1, 0.2] is not allowed"),
        ({"color_jitter": [0.1, 0.1]}, "", "brightness, contrast, saturation(, hue)"),
        ({"interpolation": "lanczos9"}, "", "one of nearest, linear, bilinear, cubic, bicubic, area"),
        ({"mask_mode": "both"}, "", "one of auto, map, list"),
        ({"std": [1, 0, 1]}, "", "a list of 3 numbers > 0"),
        ({"mean": [0.5, 0.5]}, "", "a list of 3 numbers"),
        ({"fill": 300}, "", "augment.fill=300 is not allowed"),
        ({"seed": -1}, "", "augment.seed=-1 is not allowed"),
    ],
)
def test_bad_values_are_refused_naming_the_knob(knobs, recipe, message):
    with pytest.raises(ArgumentError) as info:
        check_knobs(knobs, prefix="augment.", recipe=recipe)
    assert message in str(info.value)
    assert "\n" not in str(info.value)


def test_good_values_are_converted_to_their_types():
    got = check_knobs({"hflip": "0.25", "scale": (0.5, 1.5), "degrees": "10", "seed": "none", "normalize": "true",
                       "interpolation": "Area", "hue_shift": 20})  # fmt: skip
    # a deprecated alias (hue_shift, albumentations units) too: build_transform converts it, then checks the result
    want = {"hflip": 0.25, "scale": [0.5, 1.5], "degrees": 10.0, "seed": None, "normalize": True,
            "interpolation": "area", "hue_shift": 20.0}  # fmt: skip
    assert got == want
    ranges = {"scale": [0.08, 1.0], "ratio": [0.75, 1.33]}
    assert check_knobs(ranges, recipe="classification_train") == ranges


@pytest.mark.parametrize("recipe", sorted(_RECIPES))
def test_every_recipe_default_is_allowed(recipe):
    params = inspect.signature(_RECIPES[recipe]).parameters
    defaults = {k: p.default for k, p in params.items() if p.default is not inspect.Parameter.empty}
    assert check_knobs(defaults, recipe=recipe).keys() == defaults.keys()


def test_gpu_augment_defaults_are_allowed_and_bad_values_refused():
    params = inspect.signature(GpuAugment).parameters
    check_knobs({k: p.default for k, p in params.items() if k != "size"})
    GpuAugment(size=64, hflip=0.0, scale=[0.9, 1.1], mosaic=1.0)
    with pytest.raises(ArgumentError, match=r"hflip=1\.5 is not allowed"):
        GpuAugment(size=64, hflip=1.5)
    with pytest.raises(ArgumentError, match=r"scale=\[1.2, 0.8\] is not allowed"):
        GpuAugment(size=64, scale=[1.2, 0.8])


def test_build_transform_checks_the_values():
    with pytest.raises(ArgumentError, match="hflip=2 is not allowed"):
        build_transform("detection_train", size=64, hflip=2)
    deprecated = pytest.warns(DeprecationWarning, match="augment.hue_shift is deprecated")
    with pytest.raises(ArgumentError, match=r"hue=1\.0 is not allowed"), deprecated:  # the alias, converted
        build_transform("detection_train", size=64, hue_shift=360)
    build_transform("classification_train", size=32, scale=(0.5, 1.0), color_jitter=0.0)
