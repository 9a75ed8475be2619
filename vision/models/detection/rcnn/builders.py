"""Builders of Faster/Mask R-CNN over any registered backbone: backbone + FPN, anchors and RoI pooling sized from the
declared feature specs, torchvision's RPN and RoI heads; the registered ``faster_rcnn`` and ``mask_rcnn``."""

from __future__ import annotations

from collections.abc import Mapping, Sequence
from typing import Any

from torch import nn
from torchvision.models.detection import faster_rcnn as _tv_faster
from torchvision.models.detection import mask_rcnn as _tv_mask
from torchvision.models.detection._utils import overwrite_eps

from vision.backbones._base import input_mean_std
from vision.hub.cards import WeightsCard
from vision.models.detection.common import check_built_backbone
from vision.models.detection.rcnn.model import _TAGS, ARCH_DEFAULTS, FasterRCNN, MaskRCNN
from vision.models.detection.rcnn.parts import (
    BackboneFPN,
    RPNHead,
    anchor_generator,
    fpn_stage_indices,
)
from vision.necks.fpn import FPN
from vision.necks.simple_pyramid import with_simple_pyramid
from vision.registry import MODELS, weights_from_name

__all__ = ["build_backbone_fpn", "faster_rcnn", "mask_rcnn"]


def build_backbone_fpn(
    backbone: str | nn.Module,
    *,
    weights: Any = None,
    out_indices: Sequence[int] | None = None,
    frozen_stages: int = 0,
    norm: str = "bn",
    fpn_channels: int = 256,
    fpn_norm: str | None = None,
    extra: str | None = "pool",
    min_stride: int = 4,
    max_levels: int = 4,
) -> BackboneFPN:
    """A registry backbone (name or built feature extractor) followed by an FPN over its declared features.

    Without ``out_indices`` the FPN reads the deepest ``max_levels`` stages of stride ``>= min_stride`` (ResNet:
    ``C2..C5``; AlexNet: ``C3..C5``).
    """
    if isinstance(backbone, str):
        import vision

        body = vision.create_backbone(
            backbone, weights=weights, out_indices=out_indices, frozen_stages=frozen_stages, norm=norm
        )
    else:
        body = backbone
        check_built_backbone(body, "build_backbone_fpn")
    if out_indices is None:  # a single-scale body (plain ViT) gets ViTDet's simple pyramid at strides 4..32
        body = with_simple_pyramid(body, [s for s in (4, 8, 16, 32) if s >= min_stride][-max_levels:])
    specs = list(body.specs)
    if out_indices is None:
        specs = [specs[i] for i in fpn_stage_indices(specs, min_stride=min_stride, max_levels=max_levels)]
    return BackboneFPN(body, FPN(specs, out_channels=fpn_channels, extra=extra, norm=fpn_norm))


def _heads(backbone: BackboneFPN, arch: Mapping[str, Any], *, masks: bool) -> dict[str, nn.Module]:
    """Anchors, RPN head, box head and predictor, and for Mask R-CNN the mask head and predictor."""
    anchors = anchor_generator(
        backbone.specs,
        anchor_scale=arch["anchor_scale"],
        sizes=arch["anchor_sizes"],
        aspect_ratios=arch["aspect_ratios"],
    )
    C = backbone.out_channels
    rep = int(arch["representation_size"])
    out: dict[str, nn.Module] = {
        "rpn_anchor_generator": anchors,
        "rpn_head": RPNHead(C, anchors.num_anchors_per_location()[0], conv_depth=int(arch["rpn_conv_depth"])),
    }
    if arch["box_head"] == "conv":
        out["box_head"] = _tv_faster.FastRCNNConvFCHead((C, 7, 7), [256] * 4, [rep], norm_layer=nn.BatchNorm2d)
    elif arch["box_head"] == "mlp":
        out["box_head"] = _tv_faster.TwoMLPHead(C * 7 * 7, rep)
    else:
        raise ValueError(f"box_head must be 'mlp' or 'conv', got {arch['box_head']!r}")
    if masks:
        width = int(arch["mask_channels"])
        norm = arch["mask_head_norm"]
        if norm not in (None, "bn"):
            raise ValueError(f"mask_head_norm must be None or 'bn', got {norm!r}")
        out["mask_head"] = _tv_mask.MaskRCNNHeads(C, [width] * 4, 1, norm_layer=nn.BatchNorm2d if norm else None)
    return out


def _classes(num_classes: int | None, card: WeightsCard | None) -> tuple[int, list[str] | None]:
    """``(num_classes, data-set category names)``: the card's when it fits, else ``num_classes`` (default 91)."""
    if num_classes is None:
        num_classes = card.num_classes if card is not None and card.num_classes else 91
    categories = None
    if card is not None and card.categories and card.num_classes == num_classes:
        categories = list(card.categories[1:])  # drop "__background__": data-set label = model label - 1
    return int(num_classes), categories


def _norm_of(norm: str | None, backbone_weights: Any) -> str:
    """torchvision's rule: frozen BatchNorm under pretrained backbone weights, trainable BatchNorm from scratch."""
    if norm is not None:
        return norm
    return "frozen_bn" if backbone_weights not in (None, False, "") else "bn"


def _assemble(
    cls: type,
    *,
    masks: bool,
    name: str,
    backbone: str | nn.Module,
    num_classes: int | None,
    card: WeightsCard | None,
    backbone_weights: Any,
    norm: str,
    bn_eps: float | None,
    arch: Mapping[str, Any],
    kwargs: dict[str, Any],
) -> nn.Module:
    arch = {**ARCH_DEFAULTS, **arch}
    body = build_backbone_fpn(
        backbone,
        weights=backbone_weights or None,
        out_indices=arch["out_indices"],
        frozen_stages=int(arch["frozen_stages"]),
        norm=norm,
        fpn_channels=int(arch["fpn_channels"]),
        fpn_norm=arch["fpn_norm"],
        min_stride=int(arch["min_stride"]),
        max_levels=int(arch["max_levels"]),
    )
    mean, std = input_mean_std(body.body)  # the backbone card's, else its architecture's own
    normalise = {"image_mean": list(mean), "image_std": list(std)}
    classes, categories = _classes(num_classes, card)
    heads = _heads(body, arch, masks=masks)
    if masks:
        heads["mask_predictor"] = _tv_mask.MaskRCNNPredictor(int(arch["mask_channels"]), 256, classes)
    kwargs.setdefault("categories", categories)
    model = cls(body, num_classes=classes, card=card, name=name, **{**normalise, **heads, **kwargs})
    if bn_eps is not None:
        overwrite_eps(model, bn_eps)
    return model


def _rebuild_kwargs(model: nn.Module, given: Mapping[str, Any], norm: str) -> None:
    """The builder arguments that rebuild this architecture without downloading anything (for inference)."""
    skip = {"backbone_weights", "weights_backbone", "weights", "card", "num_classes", "categories", "progress"}
    plain = (str, int, float, bool, list, tuple, type(None))
    kept = {
        k: (list(v) if isinstance(v, tuple) else v) for k, v in given.items() if k not in skip and isinstance(v, plain)
    }
    kept["norm"] = norm
    model.rebuild_kwargs = kept  # type: ignore[assignment]


def _generic(cls: type, name: str, *, masks: bool, backbone: Any, num_classes: Any, backbone_weights: Any, norm: Any,
             card: Any, kwargs: dict[str, Any]) -> nn.Module:  # fmt: skip
    arch = {k: kwargs.pop(k) for k in list(kwargs) if k in ARCH_DEFAULTS}
    if isinstance(backbone, str):  # "name.tag" and backbone_weights="tag" build the same model
        backbone, backbone_weights = weights_from_name(backbone, backbone_weights, keyword="backbone_weights")
    check_built_backbone(backbone, name, backbone_weights=backbone_weights not in (None, False), norm=norm is not None,
                         out_indices="out_indices" in arch, frozen_stages="frozen_stages" in arch)  # fmt: skip
    resolved = _norm_of(norm, backbone_weights)
    given = {**({"backbone": backbone} if isinstance(backbone, str) else {}), **arch, **kwargs}
    model = _assemble(
        cls, masks=masks, name=name, backbone=backbone, num_classes=num_classes, card=card,
        backbone_weights=backbone_weights, norm=resolved, bn_eps=None, arch=arch, kwargs=kwargs,
    )  # fmt: skip
    normalise = {"image_mean": list(model.transform.image_mean), "image_std": list(model.transform.image_std)}
    _rebuild_kwargs(model, {**normalise, **given}, resolved)  # the backbone's mean/std survive a rebuild
    return model


# ---------------------------------------------------------------------------------------------------------- builders
_GENERIC_DOC = """{title} over any registered backbone (``"efficientnet_lite0"``, ``"vgg16"``, ``"timm/resnet18"`` ...).

    Args:
        backbone: backbone name, optionally with a weight tag (``"efficientnet_lite0.lukemelas_in1k"`` is
            ``backbone_weights="lukemelas_in1k"``), or a built feature extractor (``vision.create_backbone(...)``,
            which then takes the weights, levels and norm); the FPN reads its declared features.
        num_classes: classes including the background (default 91, COCO's).
        backbone_weights: the backbone's weights (tag, path, URL; e.g. ``"lukemelas_in1k"``, ``"tv_in1k"``).
        norm: ``"bn"`` or ``"frozen_bn"`` for the backbone's BatchNorms (default: frozen with backbone weights).
        kwargs: the architecture keywords of :data:`ARCH_DEFAULTS` (``frozen_stages``, ``fpn_channels``,
            ``anchor_scale``, ``box_head``, ``representation_size`` ...) and the :class:`{cls}` / torchvision
            keywords (``min_size``, ``max_size``, ``box_score_thresh``, ``rpn_*``, ``box_*``, ``fast`` ...).
    """


@MODELS.register("faster_rcnn", tags=_TAGS, task="detection")
def faster_rcnn(
    *,
    backbone: str | nn.Module = "resnet50",
    num_classes: int | None = None,
    backbone_weights: Any = None,
    norm: str | None = None,
    card: WeightsCard | None = None,
    **kwargs: Any,
) -> FasterRCNN:
    return _generic(FasterRCNN, "faster_rcnn", masks=False, backbone=backbone, num_classes=num_classes,
                    backbone_weights=backbone_weights, norm=norm, card=card, kwargs=kwargs)  # fmt: skip


@MODELS.register("mask_rcnn", tags={*_TAGS, "segmentation"}, task="detection")
def mask_rcnn(
    *,
    backbone: str | nn.Module = "resnet50",
    num_classes: int | None = None,
    backbone_weights: Any = None,
    norm: str | None = None,
    card: WeightsCard | None = None,
    **kwargs: Any,
) -> MaskRCNN:
    return _generic(MaskRCNN, "mask_rcnn", masks=True, backbone=backbone, num_classes=num_classes,
                    backbone_weights=backbone_weights, norm=norm, card=card, kwargs=kwargs)  # fmt: skip


faster_rcnn.__doc__ = _GENERIC_DOC.format(title="Faster R-CNN", cls="FasterRCNN")
mask_rcnn.__doc__ = _GENERIC_DOC.format(title="Mask R-CNN", cls="MaskRCNN")
