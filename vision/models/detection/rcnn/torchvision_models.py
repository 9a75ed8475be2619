"""torchvision's four fixed-name R-CNNs (``fasterrcnn_resnet50_fpn``, ``_v2``, ``maskrcnn_resnet50_fpn``, ``_v2``):
torchvision's keyword arguments, state dicts and COCO cards (tag ``tv_coco``), built on our :class:`FasterRCNN` /
:class:`MaskRCNN` so that the same detections come out of the fast post-processing path."""

from __future__ import annotations

import warnings
from typing import Any

from torch import nn
from torchvision.models.detection import faster_rcnn as _tv_faster
from torchvision.models.detection import mask_rcnn as _tv_mask

from vision.hub.cards import IMAGENET_MEAN, IMAGENET_STD, Preprocess, WeightsCard
from vision.models.detection.rcnn.builders import _assemble, _rebuild_kwargs
from vision.models.detection.rcnn.model import _TAGS, FasterRCNN, MaskRCNN
from vision.registry import MODELS

__all__ = ["fasterrcnn_resnet50_fpn", "fasterrcnn_resnet50_fpn_v2", "maskrcnn_resnet50_fpn", "maskrcnn_resnet50_fpn_v2"]


# ---------------------------------------------------------------------------------------------------------- torchvision
_RESNET_LAYERS = ("layer4", "layer3", "layer2", "layer1", "conv1")


def _freeze_resnet_layers(body: nn.Module, trainable_layers: int) -> None:
    """torchvision's ``trainable_backbone_layers``: only the last ``trainable_layers`` (0-5, checked by the caller)
    of layer4 ... conv1 train."""
    train = list(_RESNET_LAYERS[:trainable_layers])
    if trainable_layers == 5:
        train.append("bn1")
    for pname, p in body.named_parameters():
        if all(not pname.startswith(layer) for layer in train):
            p.requires_grad_(False)


def _weights_tag(value: Any) -> Any:
    """torchvision weight enums (``ResNet50_Weights.IMAGENET1K_V1``, ``...COCO_V1``) -> our tags (URL otherwise)."""
    if value is None or isinstance(value, str | bool) or not hasattr(value, "url"):
        return value
    name = getattr(value, "name", "")
    return {"IMAGENET1K_V1": "tv_in1k", "IMAGENET1K_V2": "tv2_in1k", "COCO_V1": "tv_coco"}.get(name, value.url)


def _coco_card(weights: Any, **model_kwargs: Any) -> dict[str, WeightsCard]:
    """The card of one of torchvision's COCO detection weights, read from torchvision's own metadata."""
    from vision.backbones._torchvision import _hash_prefix

    meta = weights.meta
    categories = tuple(meta["categories"])
    metrics = {ds: {k: float(v) for k, v in vals.items()} for ds, vals in meta.get("_metrics", {}).items()}
    return {
        "tv_coco": WeightsCard(
            url=weights.url,
            sha256=_hash_prefix(weights.url),
            num_params=int(meta["num_params"]),
            num_classes=len(categories),
            categories=categories,
            preprocess=Preprocess(
                input_size=(800, 800), resize_size=800, mean=IMAGENET_MEAN, std=IMAGENET_STD, crop=False
            ),
            metrics=metrics,
            file_size=round(float(meta["_file_size"]) * 2**20) if "_file_size" in meta else None,
            gflops=float(meta["_ops"]) if "_ops" in meta else None,
            license="BSD-3-Clause (torchvision)",
            source=str(meta.get("recipe", "torchvision")),
            model_kwargs=model_kwargs,
        )
    }


def _resnet50_fpn(
    cls: type,
    name: str,
    *,
    v2: bool,
    masks: bool,
    weights: Any,
    num_classes: int | None,
    weights_backbone: Any,
    trainable_backbone_layers: int | None,
    card: WeightsCard | None,
    kwargs: dict[str, Any],
) -> nn.Module:
    """torchvision's ResNet-50-FPN R-CNN recipe. ``weights`` (a tag, ``True``, a path or a URL; ``create_model``
    passes paths and URLs here) is loaded after building the model as torchvision builds it for pretrained weights."""
    kwargs.pop("progress", None)
    source: Any = None
    weights = _weights_tag(weights)
    if weights is not None and weights is not False:
        cards = MODELS.get(name).cards
        if weights is True or weights in cards:
            card = cards["tv_coco"] if weights is True else cards[weights]
            source = card
        else:
            source = weights  # a path or URL
    if card is not None:
        kwargs = {**card.model_kwargs, **kwargs}
    backbone_weights = _weights_tag(
        weights_backbone if weights_backbone is not None else kwargs.pop("backbone_weights", None)
    )
    if source is not None or card is not None:
        backbone_weights = None  # the whole model's weights replace the backbone's
    # torchvision's rule: any weights (the model's, a file's, or the backbone's) -> FrozenBatchNorm (v1) and 3
    # trainable backbone layers; from scratch every layer trains
    is_trained = source is not None or card is not None or backbone_weights is not None
    norm = kwargs.pop("norm", None) or ("frozen_bn" if is_trained and not v2 else "bn")
    bn_eps = kwargs.pop("bn_eps", None)
    if trainable_backbone_layers is None:
        trainable_backbone_layers = 3 if is_trained else 5
    elif not 0 <= trainable_backbone_layers <= 5:
        raise ValueError(f"trainable_backbone_layers must be in [0, 5], got {trainable_backbone_layers}")
    elif not is_trained and trainable_backbone_layers != 5:
        warnings.warn(
            f"{name}: trainable_backbone_layers={trainable_backbone_layers} has no effect without weights or "
            "weights_backbone (freezing randomly initialised layers); all 5 layers are trainable, as in torchvision",
            UserWarning,
            stacklevel=3,
        )
        trainable_backbone_layers = 5
    arch = {"fpn_norm": "bn" if v2 else None, "rpn_conv_depth": 2 if v2 else 1, "box_head": "conv" if v2 else "mlp",
            "mask_head_norm": "bn" if v2 and masks else None}  # fmt: skip
    model = _assemble(
        cls, masks=masks, name=name, backbone="resnet50", num_classes=num_classes, card=card,
        backbone_weights=backbone_weights, norm=norm, bn_eps=bn_eps, arch=arch, kwargs=kwargs,
    )  # fmt: skip
    _freeze_resnet_layers(model.backbone.body, trainable_backbone_layers)
    extra = {"bn_eps": bn_eps} if bn_eps is not None else {}
    _rebuild_kwargs(model, {"trainable_backbone_layers": trainable_backbone_layers, **kwargs, **extra}, norm)
    if source is not None:
        import vision

        vision.load_weights(model, source)
    return model


_V1 = {"norm": "frozen_bn", "bn_eps": 0.0}  # torchvision's v1 COCO weights need FrozenBatchNorm with eps=0
_DOC = """torchvision's ``{name}`` (same state dict, same detections); COCO weights: tag ``tv_coco``.

    Arguments are torchvision's: ``weights`` (when calling the builder directly: ``"tv_coco"``, ``True``, a path,
    or torchvision's enum), ``num_classes`` (background included; default 91), ``weights_backbone`` (``"tv_in1k"``,
    a path, or torchvision's enum; default ``None``: nothing is downloaded implicitly), ``trainable_backbone_layers``
    (0-5, default 3 with weights else 5; without any weights every layer trains and another value warns, as in
    torchvision), and the :class:`{cls}` keywords (``min_size``, ``box_score_thresh`` ...). With any weights (the
    model's or the backbone's; ``create_model(name, weights=path)`` included) the v1 models use FrozenBatchNorm2d.
    """


@MODELS.register(
    "fasterrcnn_resnet50_fpn",
    cards=_coco_card(_tv_faster.FasterRCNN_ResNet50_FPN_Weights.COCO_V1, **_V1),
    tags=_TAGS,
    task="detection",
)
def fasterrcnn_resnet50_fpn(
    *,
    weights: Any = None,
    num_classes: int | None = None,
    weights_backbone: Any = None,
    trainable_backbone_layers: int | None = None,
    card: WeightsCard | None = None,
    **kwargs: Any,
) -> FasterRCNN:
    return _resnet50_fpn(
        FasterRCNN, "fasterrcnn_resnet50_fpn", v2=False, masks=False, weights=weights, num_classes=num_classes,
        weights_backbone=weights_backbone, trainable_backbone_layers=trainable_backbone_layers, card=card,
        kwargs=kwargs,
    )  # fmt: skip


@MODELS.register(
    "fasterrcnn_resnet50_fpn_v2",
    cards=_coco_card(_tv_faster.FasterRCNN_ResNet50_FPN_V2_Weights.COCO_V1),
    tags=_TAGS,
    task="detection",
)
def fasterrcnn_resnet50_fpn_v2(
    *,
    weights: Any = None,
    num_classes: int | None = None,
    weights_backbone: Any = None,
    trainable_backbone_layers: int | None = None,
    card: WeightsCard | None = None,
    **kwargs: Any,
) -> FasterRCNN:
    return _resnet50_fpn(
        FasterRCNN, "fasterrcnn_resnet50_fpn_v2", v2=True, masks=False, weights=weights, num_classes=num_classes,
        weights_backbone=weights_backbone, trainable_backbone_layers=trainable_backbone_layers, card=card,
        kwargs=kwargs,
    )  # fmt: skip


@MODELS.register(
    "maskrcnn_resnet50_fpn",
    cards=_coco_card(_tv_mask.MaskRCNN_ResNet50_FPN_Weights.COCO_V1, **_V1),
    tags={*_TAGS, "segmentation"},
    task="detection",
)
def maskrcnn_resnet50_fpn(
    *,
    weights: Any = None,
    num_classes: int | None = None,
    weights_backbone: Any = None,
    trainable_backbone_layers: int | None = None,
    card: WeightsCard | None = None,
    **kwargs: Any,
) -> MaskRCNN:
    return _resnet50_fpn(
        MaskRCNN, "maskrcnn_resnet50_fpn", v2=False, masks=True, weights=weights, num_classes=num_classes,
        weights_backbone=weights_backbone, trainable_backbone_layers=trainable_backbone_layers, card=card,
        kwargs=kwargs,
    )  # fmt: skip


@MODELS.register(
    "maskrcnn_resnet50_fpn_v2",
    cards=_coco_card(_tv_mask.MaskRCNN_ResNet50_FPN_V2_Weights.COCO_V1),
    tags={*_TAGS, "segmentation"},
    task="detection",
)
def maskrcnn_resnet50_fpn_v2(
    *,
    weights: Any = None,
    num_classes: int | None = None,
    weights_backbone: Any = None,
    trainable_backbone_layers: int | None = None,
    card: WeightsCard | None = None,
    **kwargs: Any,
) -> MaskRCNN:
    return _resnet50_fpn(
        MaskRCNN, "maskrcnn_resnet50_fpn_v2", v2=True, masks=True, weights=weights, num_classes=num_classes,
        weights_backbone=weights_backbone, trainable_backbone_layers=trainable_backbone_layers, card=card,
        kwargs=kwargs,
    )  # fmt: skip


for _fn, _cls in (
    (fasterrcnn_resnet50_fpn, "FasterRCNN"),
    (fasterrcnn_resnet50_fpn_v2, "FasterRCNN"),
    (maskrcnn_resnet50_fpn, "MaskRCNN"),
    (maskrcnn_resnet50_fpn_v2, "MaskRCNN"),
):
    _fn.__doc__ = _DOC.format(name=_fn.__name__, cls=_cls)
