"""The registered YOLO builders: ``yolo_n/s/m/l`` (our CSP-Darknet) and ``yolo(backbone=...)`` over any registry
backbone."""

from __future__ import annotations

import itertools
from collections.abc import Sequence
from typing import Any

from torch import nn

from vision.backbones._base import FeatureSpec, input_mean_std, levels_by_stride
from vision.backbones.csp_darknet import SIZES  # importing it registers csp_darknet_n/s/m/l
from vision.hub.cards import WeightsCard
from vision.models.detection.common import check_built_backbone, rebuild_kwargs
from vision.models.detection.yolo.head import YOLOHead
from vision.models.detection.yolo.model import YOLO
from vision.necks.pafpn import PAFPN
from vision.necks.simple_pyramid import PyramidBackbone, with_simple_pyramid
from vision.registry import MODELS, weights_from_name

__all__ = ["yolo", "yolo_l", "yolo_m", "yolo_n", "yolo_s"]

_WIDTHS = {size: tuple(cfg.channels(b) for b in (256, 512, 1024)) for size, cfg in SIZES.items()}
_STRIDES = (8, 16, 32)  # the levels YOLO reads by default (P3-P5)


def _assemble(
    backbone: nn.Module,
    size: str,
    *,
    num_classes: int,
    neck_channels: Sequence[int] | None,
    depth: int | None,
    reg_max: int,
    name: str,
    specs: Sequence[FeatureSpec] | None = None,
    **kwargs: Any,
) -> YOLO:
    """``backbone -> PAFPN -> YOLOHead``; the neck reads ``specs`` (default: all the backbone returns)."""
    if size not in SIZES:
        raise ValueError(f"size must be one of {sorted(SIZES)}, got {size!r}")
    depth = depth if depth is not None else SIZES[size].blocks(3)
    neck = PAFPN(backbone.specs if specs is None else specs, channels=neck_channels, depth=depth)
    head = YOLOHead(neck.specs, num_classes=num_classes, reg_max=reg_max, prior_size=int(kwargs.get("imgsz", 640)))
    return YOLO(backbone, neck, head, name=name, **kwargs)


def _own(
    size: str, *, num_classes: int = 80, card: WeightsCard | None = None, reg_max: int = 16, **kwargs: Any
) -> YOLO:
    import vision

    backbone = vision.create_backbone(f"csp_darknet_{size}", out_indices=(2, 3, 4))
    return _assemble(
        backbone, size, num_classes=num_classes, neck_channels=None, depth=None, reg_max=reg_max, name=f"yolo_{size}",
        card=card, **kwargs,
    )  # fmt: skip


@MODELS.register("yolo_n", tags={"detection", "yolo"}, task="detection")
def yolo_n(*, num_classes: int = 80, card: WeightsCard | None = None, **kwargs: Any) -> YOLO:
    """YOLO-n: CSP-Darknet-n + PAN-FPN + decoupled head (3.2 M parameters, 8.7 GFLOPs at 640 px, 80 classes)."""
    return _own("n", num_classes=num_classes, card=card, **kwargs)


@MODELS.register("yolo_s", tags={"detection", "yolo"}, task="detection")
def yolo_s(*, num_classes: int = 80, card: WeightsCard | None = None, **kwargs: Any) -> YOLO:
    """YOLO-s (11.2 M parameters, 28.6 GFLOPs at 640 px, 80 classes)."""
    return _own("s", num_classes=num_classes, card=card, **kwargs)


@MODELS.register("yolo_m", tags={"detection", "yolo"}, task="detection")
def yolo_m(*, num_classes: int = 80, card: WeightsCard | None = None, **kwargs: Any) -> YOLO:
    """YOLO-m (25.9 M parameters, 78.9 GFLOPs at 640 px, 80 classes)."""
    return _own("m", num_classes=num_classes, card=card, **kwargs)


@MODELS.register("yolo_l", tags={"detection", "yolo"}, task="detection")
def yolo_l(*, num_classes: int = 80, card: WeightsCard | None = None, **kwargs: Any) -> YOLO:
    """YOLO-l (43.7 M parameters, 165.2 GFLOPs at 640 px, 80 classes)."""
    return _own("l", num_classes=num_classes, card=card, **kwargs)


@MODELS.register("yolo", tags={"detection", "yolo"}, task="detection")
def yolo(
    *,
    backbone: str | nn.Module = "resnet50",
    size: str = "n",
    num_classes: int = 80,
    backbone_weights: bool | str | None = None,
    out_indices: Sequence[int] | None = None,
    frozen_stages: int = 0,
    norm: str = "bn",
    neck_channels: Sequence[int] | None = None,
    depth: int | None = None,
    reg_max: int = 16,
    card: WeightsCard | None = None,
    **kwargs: Any,
) -> YOLO:
    """YOLO over any registered backbone: its stride-8/16/32 features -> PAN-FPN -> decoupled head.

    Args:
        backbone: a ``BACKBONES`` name (``"resnet50"``, ``"efficientnet_b0.tv_in1k"``, ``"timm/convnext_tiny"``; a
            weight tag in the name is ``backbone_weights=tag``), or a built backbone (``vision.create_backbone(...)``,
            which then takes the weights, ``out_indices``, ``frozen_stages`` and ``norm``).
        size: ``"n" | "s" | "m" | "l"``: neck widths (those of the CSP-Darknet of that size) and C2f depth.
        num_classes: ``K`` object classes (labels ``0..K-1``).
        backbone_weights: pretrained backbone weights (as ``create_backbone(weights=...)``).
        out_indices: backbone stages to use, three of doubling strides (default: those at strides 8, 16, 32).
        frozen_stages, norm: as ``create_backbone``.
        neck_channels, depth: override the size's neck widths (one per level) / C2f depth.
        kwargs: :class:`YOLO` arguments (``imgsz``, thresholds, loss gains ...). ``mean``/``std`` default to the
            backbone card's normalisation (ImageNet statistics without a card).

    Example:
        >>> model = vision.create_model("yolo", backbone="efficientnet_b0", backbone_weights=True, num_classes=3)
    """
    if size not in SIZES:
        raise ValueError(f"size must be one of {sorted(SIZES)}, got {size!r}")
    if isinstance(backbone, str):  # "name.tag" and backbone_weights="tag" build the same model
        backbone, backbone_weights = weights_from_name(backbone, backbone_weights, keyword="backbone_weights")
        body, specs = _body_from_name(backbone, out_indices, backbone_weights, frozen_stages, norm)
        label = backbone
    else:
        passed = {"backbone_weights": backbone_weights not in (None, False), "out_indices": out_indices is not None}
        check_built_backbone(backbone, "yolo", **passed, frozen_stages=frozen_stages != 0, norm=norm != "bn")
        body = with_simple_pyramid(backbone, _STRIDES)  # single-scale (ViT)
        label = getattr(body, "name", "") or type(body).__name__
        chosen = levels_by_stride(body.specs, _STRIDES, model=f"yolo(backbone={label})")
        specs = [body.specs[i] for i in chosen]  # the neck reads these; other returned maps go unused
    widths = list(neck_channels) if neck_channels is not None else list(_WIDTHS[size])
    _check_levels(specs, widths, out_indices=out_indices, neck_channels=neck_channels)
    if not label.startswith("csp_darknet_") and "mean" not in kwargs:
        kwargs["mean"], kwargs["std"] = input_mean_std(body)  # the backbone card's, else its architecture's own
    model = _assemble(
        body,
        size,
        num_classes=num_classes,
        neck_channels=widths,
        depth=depth,
        reg_max=reg_max,
        name=f"yolo[{label}]",
        card=card,
        specs=specs,
        **kwargs,
    )
    kept = None if isinstance(body, PyramidBackbone) or not isinstance(backbone, str) else list(body.out_indices)
    given = {"backbone": backbone, "size": size, "out_indices": kept, "frozen_stages": frozen_stages,
             "norm": norm, "neck_channels": neck_channels, "depth": depth, "reg_max": reg_max, **kwargs}  # fmt: skip
    model.rebuild_kwargs = rebuild_kwargs(given)
    return model


def _body_from_name(
    backbone: str, out_indices: Sequence[int] | None, weights: Any, frozen_stages: int, norm: str
) -> tuple[nn.Module, list[FeatureSpec]]:
    """The registry backbone ``backbone`` returning the levels YOLO reads (``out_indices``, else strides 8/16/32)."""
    import vision
    from vision.backbones._base import FeatureExtractor

    common = {"weights": weights, "frozen_stages": frozen_stages, "norm": norm}
    if out_indices is not None:
        body = vision.create_backbone(backbone, out_indices=tuple(out_indices), **common)
        return body, list(body.specs)
    body = with_simple_pyramid(vision.create_backbone(backbone, **common), _STRIDES)  # single-scale (ViT)
    chosen = levels_by_stride(body.feature_info, _STRIDES, model=f"yolo(backbone={backbone!r})")
    if tuple(body.out_indices) != chosen:
        if isinstance(body, FeatureExtractor) and max(chosen) == max(body.out_indices):
            body.out_indices = chosen  # same network, fewer returned maps
        else:
            body = vision.create_backbone(backbone, out_indices=chosen, **common)
    return body, list(body.specs)


def _check_levels(
    specs: Sequence[FeatureSpec],
    widths: Sequence[int],
    *,
    out_indices: Sequence[int] | None,
    neck_channels: Sequence[int] | None,
) -> None:
    """One error naming the argument at fault when the chosen levels cannot feed the PAN-FPN: one neck width per
    level, each level at twice the previous stride."""
    strides = [s.stride for s in specs]
    chose = f"out_indices={tuple(out_indices)}" if out_indices is not None else "the backbone"
    if len(specs) != len(widths):
        if neck_channels is None:
            raise ValueError(
                f"yolo needs {len(widths)} backbone levels (strides {', '.join(map(str, _STRIDES))}); {chose} gives "
                f"{len(specs)} (strides {strides})"
            )
        raise ValueError(f"neck_channels={tuple(neck_channels)} gives {len(widths)} widths for {len(specs)} backbone "
                         f"levels (strides {strides}); give one width per level")  # fmt: skip
    if any(b != 2 * a for a, b in itertools.pairwise(strides)):
        raise ValueError(f"yolo needs backbone levels that each double the previous stride; {chose} gives strides "
                         f"{strides}")  # fmt: skip
