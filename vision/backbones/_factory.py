"""Turn a family description and a network constructor into a registered backbone/classifier builder."""

from __future__ import annotations

from collections.abc import Callable, Mapping, Sequence
from typing import Any

from torch import nn

from vision.backbones._base import Family, FeatureExtractor
from vision.hub.cards import WeightsCard
from vision.registry import BACKBONES

__all__ = ["register_variant"]


def register_variant(
    name: str,
    make: Callable[..., nn.Module],
    family: Family,
    *,
    cards: Mapping[str, WeightsCard] | None = None,
    default: str | None = None,
    tags: Sequence[str] = (),
) -> Callable[..., nn.Module]:
    """Register ``name`` in ``BACKBONES``; the builder makes a classifier, or with ``features=True`` a backbone.

    ``make(num_classes=..., **kwargs)`` must return the torchvision/timm network with freshly initialised weights.
    """

    def builder(
        *,
        features: bool = False,
        num_classes: int | None = None,
        out_indices: Sequence[int] | None = None,
        frozen_stages: int = 0,
        norm: str = "bn",
        card: WeightsCard | None = None,
        **kwargs: Any,
    ) -> nn.Module:
        model_kwargs = {**(card.model_kwargs if card is not None else {}), **kwargs}
        classes = num_classes if num_classes is not None else (card.num_classes if card and card.num_classes else 1000)
        if not isinstance(classes, int) or classes < 1:
            raise ValueError(f"{name}: num_classes must be a positive integer, got {num_classes!r}")
        net = make(num_classes=classes, **model_kwargs)
        if features:
            return FeatureExtractor(
                net, family, out_indices=out_indices, frozen_stages=frozen_stages, norm=norm, card=card, name=name
            )
        if out_indices is not None or frozen_stages or norm != "bn":
            raise ValueError(f"{name}: out_indices/frozen_stages/norm apply to create_backbone, not create_model")
        from vision.backbones.classifier import ImageClassifier

        categories = list(card.categories) if card and card.categories and card.num_classes == classes else None
        return ImageClassifier(net, family, num_classes=classes, card=card, name=name, categories=categories)

    builder.__name__ = name
    builder.__qualname__ = name
    builder.__doc__ = f"Build {name} (classifier, or backbone with features=True)."
    builder.family = family  # type: ignore[attr-defined]
    builder.__module__ = make.__module__ if hasattr(make, "__module__") else __name__
    BACKBONES.register(
        name, cards=cards, default=default, tags={"classification", "features", *tags}, task="classification"
    )(builder)
    return builder
