"""Weight cards for torchvision's published weights, read from torchvision's own weight metadata.

The numbers (accuracy, parameters, GFLOPs, preprocessing) are torchvision's published ones; reading them from
torchvision's ``Weights`` enums instead of retyping them keeps them exact. The file's SHA-256 prefix is the one
torchvision puts in every file name (``resnet50-0676ba61.pth``) and checks on download.
"""

from __future__ import annotations

import math
import re

from vision.hub.cards import IMAGENET_MEAN, IMAGENET_STD, Preprocess, WeightsCard

__all__ = ["tv_cards"]

_TAGS = {"IMAGENET1K_V1": "tv_in1k", "IMAGENET1K_V2": "tv2_in1k", "IMAGENET1K_FEATURES": "tv_features"}


def _hash_prefix(url: str) -> str:
    m = re.search(r"-([0-9a-f]{8,64})\.(?:pth|pt|safetensors)$", url)
    if m is None:
        raise ValueError(f"torchvision weight url {url} carries no hash prefix")
    return m[1]


def _card(weights: object, **model_kwargs: object) -> WeightsCard:
    meta = weights.meta  # type: ignore[attr-defined]
    kw = dict(weights.transforms.keywords)  # type: ignore[attr-defined]
    interpolation = kw.get("interpolation")
    metrics = {
        ds: {k: float(v) for k, v in vals.items() if not (isinstance(v, float) and math.isnan(v))}
        for ds, vals in meta.get("_metrics", {}).items()
    }
    metrics = {ds: vals for ds, vals in metrics.items() if vals}
    crop = int(kw.get("crop_size", 224))
    categories = meta.get("categories")
    return WeightsCard(
        url=weights.url,  # type: ignore[attr-defined]
        sha256=_hash_prefix(weights.url),  # type: ignore[attr-defined]
        num_params=int(meta["num_params"]),
        num_classes=len(categories) if categories else None,
        categories=tuple(categories) if categories else None,
        preprocess=Preprocess(
            input_size=(crop, crop),
            resize_size=int(kw.get("resize_size", 256)),
            interpolation=interpolation.value if interpolation is not None else "bilinear",
            mean=tuple(kw.get("mean", IMAGENET_MEAN)),
            std=tuple(kw.get("std", IMAGENET_STD)),
        ),
        metrics=metrics,
        gflops=float(meta["_ops"]) if "_ops" in meta else None,
        license="BSD-3-Clause (torchvision)",
        source=str(meta.get("recipe", "torchvision")),
        model_kwargs=model_kwargs,
    )


def tv_cards(arch: str, **model_kwargs: object) -> tuple[dict[str, WeightsCard], str]:
    """Cards for every ImageNet weight torchvision publishes for ``arch``, and the default tag."""
    from torchvision import models

    enum = models.get_model_weights(arch)
    cards = {_TAGS[w.name]: _card(w, **model_kwargs) for w in enum if w.name in _TAGS}
    return cards, _TAGS[enum.DEFAULT.name]
