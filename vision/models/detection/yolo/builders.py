"""The registered YOLO builders: ``yolo_n/s/m/l`` (our CSP-Darknet) and ``yolo(backbone=...)`` over any registry
backbone."""

from __future__ import annotations

from collections.abc import Sequence
from typing import Any

from torch import nn

from vision.backbones._base import input_mean_std, levels_by_stride
from vision.backbones.csp_darknet import SIZES  # importing it registers csp_darknet_n/s/m/l
from vision.hub.cards import WeightsCard
from vision.models.detection.common import rebuild_kwargs
from vision.models.detection.yolo.head import YOLOHead
from vision.models.detection.yolo.model import YOLO
from vision.necks.pafpn import PAFPN
from vision.registry import MODELS

__all__ = ["yolo", "yolo_l", "yolo_m", "yolo_n", "yolo_s"]

_WIDTHS = {size: tuple(cfg.channels(b) for b in (256, 512, 1024)) for size, cfg in SIZES.items()}


def _assemble(
    backbone: nn.Module,
    size: str,
    *,
    num_classes: int,
    neck_channels: Sequence[int] | None,
    depth: int | None,
    reg_max: int,
    name: str,
    **kwargs: Any,
) -> YOLO:
    if size not in SIZES:
        raise ValueError(f"size must be one of {sorted(SIZES)}, got {size!r}")
    neck = PAFPN(backbone.specs, channels=neck_channels, depth=depth if depth is not None else SIZES[size].blocks(3))
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
    backbone: str = "resnet50",
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
        backbone: a ``BACKBONES`` name (``"resnet50"``, ``"efficientnet_b0.tv_in1k"``, ``"timm/convnext_tiny"``).
        size: ``"n" | "s" | "m" | "l"``: neck widths (those of the CSP-Darknet of that size) and C2f depth.
        num_classes: ``K`` object classes (labels ``0..K-1``).
        backbone_weights: pretrained backbone weights (as ``create_backbone(weights=...)``).
        out_indices: backbone stages to use (default: those at strides 8, 16, 32).
        frozen_stages, norm: as ``create_backbone``.
        neck_channels, depth: override the size's neck widths / C2f depth.
        kwargs: :class:`YOLO` arguments (``imgsz``, thresholds, loss gains ...). ``mean``/``std`` default to the
            backbone card's normalisation (ImageNet statistics without a card).

    Example:
        >>> model = vision.create_model("yolo", backbone="efficientnet_b0", backbone_weights=True, num_classes=3)
    """
    import vision
    from vision.backbones._base import FeatureExtractor
    from vision.necks.simple_pyramid import PyramidBackbone, with_simple_pyramid

    common = {"weights": backbone_weights, "frozen_stages": frozen_stages, "norm": norm}
    if out_indices is not None:
        body = vision.create_backbone(backbone, out_indices=tuple(out_indices), **common)
    else:
        body = with_simple_pyramid(vision.create_backbone(backbone, **common), (8, 16, 32))  # single-scale (ViT)
        chosen = levels_by_stride(body.feature_info, (8, 16, 32), model=f"yolo(backbone={backbone!r})")
        if tuple(body.out_indices) != chosen:
            if isinstance(body, FeatureExtractor) and max(chosen) == max(body.out_indices):
                body.out_indices = chosen  # same network, fewer returned maps
            else:
                body = vision.create_backbone(backbone, out_indices=chosen, **common)
    own = backbone.split(".")[0].startswith("csp_darknet_")
    if not own and "mean" not in kwargs:
        kwargs["mean"], kwargs["std"] = input_mean_std(body)  # the backbone card's, else its architecture's own
    width = _WIDTHS.get(size)
    model = _assemble(
        body,
        size,
        num_classes=num_classes,
        neck_channels=neck_channels if neck_channels is not None else width,
        depth=depth,
        reg_max=reg_max,
        name=f"yolo[{backbone}]",
        card=card,
        **kwargs,
    )
    kept = None if isinstance(body, PyramidBackbone) else list(body.out_indices)
    given = {"backbone": backbone, "size": size, "out_indices": kept, "frozen_stages": frozen_stages,
             "norm": norm, "neck_channels": neck_channels, "depth": depth, "reg_max": reg_max, **kwargs}  # fmt: skip
    model.rebuild_kwargs = rebuild_kwargs(given)
    return model
