"""Faster R-CNN and Mask R-CNN over any registered backbone: backbone -> FPN -> torchvision's RPN and RoI heads.

Papers: Faster R-CNN https://arxiv.org/abs/1506.01497, FPN https://arxiv.org/abs/1612.03144, Mask R-CNN
https://arxiv.org/abs/1703.06870, the ``_v2`` recipes https://arxiv.org/abs/2111.11429.

The models *are* torchvision's :class:`~torchvision.models.detection.FasterRCNN` /
:class:`~torchvision.models.detection.MaskRCNN` (subclasses) assembled from declared parts: the FPN is sized from the
backbone's :class:`~vision.backbones.FeatureSpec` s, the anchor sizes (``8 x stride`` per level) and the RoI feature
names come from the FPN's specs. So torchvision's state dicts load unchanged into the fixed-name builders
(``fasterrcnn_resnet50_fpn`` ...) and give the same detections, and code written for torchvision ports by changing
one import: the builders take torchvision's keyword arguments (``num_classes``, ``weights_backbone``,
``trainable_backbone_layers``, ``min_size``, ``box_score_thresh``, ``rpn_*`` ...).

Detector contract (see :mod:`vision.models._detection`): ``model.predict(images)`` / ``model(images)`` in eval mode ->
one dict per image (``boxes`` xyxy in input pixels, ``scores``, ``labels`` 1..K, ``masks [N, 1, H, W]`` for Mask
R-CNN); ``model.loss(images, targets)`` -> torchvision's four (five) losses. Label 0 is the background
(``num_classes = K + 1``; registry tag ``"background_class"``).

Two inference paths (``model.fast``, or ``predict(images, fast=...)``): the fast one (default) batches the whole
post-processing with :func:`vision.ops.multiclass_nms` and :func:`vision.ops.masks.paste_masks`, and on CUDA runs
under bf16 autocast with channels_last (see :mod:`vision.models._rcnn_fast`); ``fast=False`` is torchvision's own
forward, bit-identical in float32.

Differences from torchvision's builders: nothing is downloaded implicitly, so ``weights_backbone`` defaults to
``None`` (torchvision's ``fasterrcnn_resnet50_fpn`` defaults to ImageNet weights); pass ``weights_backbone="tv_in1k"``
(or torchvision's enum) for them.

Example:
    >>> model = vision.create_model("faster_rcnn", backbone="efficientnet_lite0", backbone_weights="lukemelas_in1k",
    ...                             num_classes=4, min_size=416, max_size=416).eval()
    >>> dets = model.predict([torch.rand(3, 480, 640)])    # [{"boxes": [N, 4], "scores": [N], "labels": [N]}]
    >>> tv = torchvision.models.detection.fasterrcnn_resnet50_fpn(weights=None, weights_backbone=None)
    >>> ours = vision.create_model("fasterrcnn_resnet50_fpn"); ours.load_state_dict(tv.state_dict())
"""

from __future__ import annotations

import contextlib
import warnings
from collections.abc import Iterator, Mapping, Sequence
from typing import Any

import torch
from torch import Tensor, nn
from torchvision.models.detection import faster_rcnn as _tv_faster
from torchvision.models.detection import mask_rcnn as _tv_mask
from torchvision.models.detection._utils import overwrite_eps
from torchvision.models.detection.generalized_rcnn import GeneralizedRCNN

import vision.engine.detection  # registers the detection task
import vision.engine.detection_infer  # noqa: F401  (registers the detection inference routine)
from vision.hub.cards import IMAGENET_MEAN, IMAGENET_STD, Preprocess, WeightsCard
from vision.models._detection import BACKGROUND_TAG, Detections, as_image_list, check_targets
from vision.models._rcnn_fast import fast_predict
from vision.models._rcnn_parts import (
    BackboneFPN,
    FastRCNNPredictor,
    RPNHead,
    anchor_generator,
    fpn_stage_indices,
    roi_pool,
)
from vision.necks.fpn import FPN
from vision.registry import MODELS

__all__ = [
    "FasterRCNN",
    "MaskRCNN",
    "build_backbone_fpn",
    "faster_rcnn",
    "fasterrcnn_resnet50_fpn",
    "fasterrcnn_resnet50_fpn_v2",
    "mask_rcnn",
    "maskrcnn_resnet50_fpn",
    "maskrcnn_resnet50_fpn_v2",
]

_TAGS = {"detection", BACKGROUND_TAG}


# ---------------------------------------------------------------------------------------------------------- models
def _last_linear_features(module: nn.Module) -> int:
    linears = [m for m in module.modules() if isinstance(m, nn.Linear)]
    if not linears:
        raise ValueError(f"cannot infer the representation size of box head {type(module).__name__}")
    return linears[-1].out_features


@contextlib.contextmanager
def _loss_mode(model: nn.Module) -> Iterator[None]:
    """Training behaviour of the RPN, RoI heads and transform (sampling, losses), without touching the norms/dropout
    of any layer: the flags are flipped on those modules only, not recursively."""
    parts = [model, model.rpn, model.roi_heads, model.transform]
    before = [p.training for p in parts]
    try:
        for p in parts:
            p.training = True
        yield
    finally:
        for p, mode in zip(parts, before):
            p.training = mode


class _RCNNMixin:
    """The vision-zoo detector contract on top of torchvision's GeneralizedRCNN."""

    background_class = True
    #: key prefixes of the class-dependent layers, dropped (re-initialised) when weights of another num_classes load
    classifier_prefixes = ("roi_heads.box_predictor.", "roi_heads.mask_predictor.mask_fcn_logits.")

    backbone: nn.Module
    roi_heads: nn.Module

    def _setup(
        self,
        *,
        categories: Sequence[str] | None,
        card: WeightsCard | None,
        fast: bool,
        amp: bool,
        channels_last: bool,
        name: str,
    ) -> None:
        self.categories = list(categories) if categories is not None else None
        self.card = card
        self.fast = bool(fast)
        self.amp = bool(amp)
        self.channels_last = bool(channels_last)
        self.name = name
        self.rebuild_kwargs: dict[str, Any] = {}

    @property
    def num_classes(self) -> int:
        """Number of classes, background included."""
        return int(self.roi_heads.box_predictor.cls_score.out_features)

    @property
    def has_masks(self) -> bool:
        return bool(self.roi_heads.has_mask())

    def forward(self, images: Any, targets: Sequence[Mapping[str, Any]] | None = None) -> Any:  # type: ignore[override]
        """Training mode: ``losses = model(images, targets)``; eval mode: ``detections = model(images)``."""
        if self.training:  # type: ignore[attr-defined]
            if targets is None:
                raise ValueError("in training mode the model needs targets; call model.eval() or model.predict()")
            return self.loss(images, targets)
        return self.predict(images)

    def loss(self, images: Tensor | Sequence[Tensor], targets: Sequence[Mapping[str, Any]]) -> dict[str, Tensor]:
        """torchvision's losses (``loss_classifier``, ``loss_box_reg``, ``loss_objectness``, ``loss_rpn_box_reg``
        [, ``loss_mask``]) for ``images`` (float [0, 1], list or batch) and ``targets`` (labels in ``1..K``).

        The RPN and RoI heads sample and compute losses whatever the model's mode; norm layers keep their mode.
        """
        imgs = as_image_list(images)
        tgts = check_targets(targets, len(imgs), masks=self.has_masks)
        if tgts:
            labels = torch.cat([t["labels"] for t in tgts])
            if labels.numel() and bool(((labels < 1) | (labels >= self.num_classes)).any()):  # one host sync
                raise ValueError(
                    f"target labels must be in [1, {self.num_classes - 1}] (0 is the background), got "
                    f"[{int(labels.min())}, {int(labels.max())}]; data-set labels 0..K-1 need +1 "
                    "(vision.models._detection.to_model_targets)"
                )
        device = imgs[0].device if imgs else None
        tgts = [{k: (v.to(device) if isinstance(v, Tensor) else v) for k, v in t.items()} for t in tgts]
        with _loss_mode(self):  # type: ignore[arg-type]
            return GeneralizedRCNN.forward(self, imgs, tgts)  # type: ignore[arg-type]

    @torch.no_grad()
    def predict(
        self,
        images: Tensor | Sequence[Tensor],
        *,
        fast: bool | None = None,
        score_threshold: float | None = None,
        iou_threshold: float | None = None,
        max_det: int | None = None,
    ) -> list[Detections]:
        """Detections for ``images`` (float [0, 1]: ``[B, 3, H, W]`` or a list of ``[3, H_i, W_i]``).

        Args:
            images: the input images, any sizes.
            fast: overrides :attr:`fast` (``False``: torchvision's exact float32 path).
            score_threshold, iou_threshold, max_det: override the box head's ``box_score_thresh`` (score strictly
                above), ``box_nms_thresh`` and ``box_detections_per_img`` for this call.

        Returns:
            One dict per image: ``boxes`` float32 ``[N, 4]`` xyxy in that image's pixels, ``scores [N]`` (decreasing),
            ``labels`` int64 ``[N]`` in ``1..num_classes-1``, and for Mask R-CNN ``masks`` float32 ``[N, 1, H, W]``
            in [0, 1].
        """
        imgs = as_image_list(images)
        if not imgs:
            return []
        use_fast = self.fast if fast is None else bool(fast)
        heads = self.roi_heads
        saved = (heads.score_thresh, heads.nms_thresh, heads.detections_per_img)
        was_training = self.training  # type: ignore[attr-defined]
        try:
            if score_threshold is not None:
                heads.score_thresh = float(score_threshold)
            if iou_threshold is not None:
                heads.nms_thresh = float(iou_threshold)
            if max_det is not None:
                heads.detections_per_img = int(max_det)
            if was_training:
                self.eval()  # type: ignore[attr-defined]
            if use_fast:
                return fast_predict(self, imgs, amp=self.amp, channels_last=self.channels_last)
            return GeneralizedRCNN.forward(self, imgs)  # type: ignore[arg-type]
        finally:
            heads.score_thresh, heads.nms_thresh, heads.detections_per_img = saved
            if was_training:
                self.train()  # type: ignore[attr-defined]


def _torchvision_kwargs(backbone: BackboneFPN, kwargs: dict[str, Any]) -> dict[str, Any]:
    kwargs.setdefault("size_divisible", getattr(backbone, "size_divisibility", 32))
    return kwargs


class FasterRCNN(_RCNNMixin, _tv_faster.FasterRCNN):
    """Faster R-CNN (torchvision's, built from declared parts) following the vision-zoo detector contract.

    Args:
        backbone: a :class:`~vision.models._rcnn_parts.BackboneFPN` (or any module with ``out_channels``,
            ``specs`` and ``roi_specs``) returning ``dict[name, Tensor]``.
        num_classes: classes **including** the background (``K + 1``).
        rpn_anchor_generator, rpn_head, box_roi_pool, box_head, box_predictor: torchvision parts; default ones are
            derived from the backbone's specs (anchors ``8 x stride`` per level, RoIAlign 7x7 over ``roi_specs``).
        categories: class names of the data-set labels (``categories[label - 1]`` names model label ``label``).
        card: the weight card the model was built for.
        fast: default inference path of :meth:`predict` (``False``: torchvision's exact path).
        amp, channels_last: bf16 autocast / channels_last inputs on CUDA in the fast path.
        kwargs: torchvision's ``FasterRCNN`` arguments (``min_size``, ``max_size``, ``image_mean``, ``image_std``,
            ``rpn_*``, ``box_*``, ``bbox_reg_weights``, ``size_divisible``, ``fixed_size``).
    """

    def __init__(
        self,
        backbone: nn.Module,
        *,
        num_classes: int | None = 91,
        rpn_anchor_generator: nn.Module | None = None,
        rpn_head: nn.Module | None = None,
        box_roi_pool: nn.Module | None = None,
        box_head: nn.Module | None = None,
        box_predictor: nn.Module | None = None,
        categories: Sequence[str] | None = None,
        card: WeightsCard | None = None,
        fast: bool = True,
        amp: bool = True,
        channels_last: bool = True,
        name: str = "faster_rcnn",
        **kwargs: Any,
    ) -> None:
        parts = _default_parts(
            backbone, num_classes, rpn_anchor_generator, rpn_head, box_roi_pool, box_head, box_predictor
        )
        super().__init__(backbone, num_classes=None, **parts, **_torchvision_kwargs(backbone, kwargs))
        self._setup(categories=categories, card=card, fast=fast, amp=amp, channels_last=channels_last, name=name)


class MaskRCNN(_RCNNMixin, _tv_mask.MaskRCNN):
    """Mask R-CNN (torchvision's, built from declared parts) following the vision-zoo detector contract.

    Same arguments as :class:`FasterRCNN`, plus ``mask_roi_pool`` (default: RoIAlign 14x14 over ``roi_specs``),
    ``mask_head`` (default: four 3x3 convolutions of 256 channels) and ``mask_predictor``. :meth:`predict` adds
    ``masks`` float32 ``[N, 1, H, W]`` (probabilities in [0, 1], threshold at 0.5 for binary masks).
    """

    def __init__(
        self,
        backbone: nn.Module,
        *,
        num_classes: int | None = 91,
        rpn_anchor_generator: nn.Module | None = None,
        rpn_head: nn.Module | None = None,
        box_roi_pool: nn.Module | None = None,
        box_head: nn.Module | None = None,
        box_predictor: nn.Module | None = None,
        mask_roi_pool: nn.Module | None = None,
        mask_head: nn.Module | None = None,
        mask_predictor: nn.Module | None = None,
        categories: Sequence[str] | None = None,
        card: WeightsCard | None = None,
        fast: bool = True,
        amp: bool = True,
        channels_last: bool = True,
        name: str = "mask_rcnn",
        **kwargs: Any,
    ) -> None:
        parts = _default_parts(
            backbone, num_classes, rpn_anchor_generator, rpn_head, box_roi_pool, box_head, box_predictor
        )
        if mask_roi_pool is None:
            mask_roi_pool = roi_pool(backbone.roi_specs, output_size=14)
        if mask_head is None:
            mask_head = _tv_mask.MaskRCNNHeads(backbone.out_channels, (256, 256, 256, 256), 1)
        if mask_predictor is None:
            if num_classes is None:
                raise ValueError("num_classes is required unless mask_predictor is given")
            mask_predictor = _tv_mask.MaskRCNNPredictor(256, 256, num_classes)
        super().__init__(
            backbone,
            num_classes=None,
            mask_roi_pool=mask_roi_pool,
            mask_head=mask_head,
            mask_predictor=mask_predictor,
            **parts,
            **_torchvision_kwargs(backbone, kwargs),
        )
        self._setup(categories=categories, card=card, fast=fast, amp=amp, channels_last=channels_last, name=name)


def _default_parts(
    backbone: nn.Module,
    num_classes: int | None,
    anchors: nn.Module | None,
    rpn_head: nn.Module | None,
    box_roi_pool: nn.Module | None,
    box_head: nn.Module | None,
    box_predictor: nn.Module | None,
) -> dict[str, nn.Module]:
    if anchors is None:
        anchors = anchor_generator(backbone.specs)
    if rpn_head is None:
        rpn_head = RPNHead(backbone.out_channels, anchors.num_anchors_per_location()[0])
    if box_roi_pool is None:
        box_roi_pool = roi_pool(backbone.roi_specs, output_size=7)
    if box_head is None:
        resolution = box_roi_pool.output_size[0]
        box_head = _tv_faster.TwoMLPHead(backbone.out_channels * resolution**2, 1024)
    if box_predictor is None:
        if num_classes is None:
            raise ValueError("num_classes is required unless box_predictor is given")
        box_predictor = FastRCNNPredictor(_last_linear_features(box_head), num_classes)
    return {
        "rpn_anchor_generator": anchors,
        "rpn_head": rpn_head,
        "box_roi_pool": box_roi_pool,
        "box_head": box_head,
        "box_predictor": box_predictor,
    }


# ---------------------------------------------------------------------------------------------------------- assembly
#: architecture keywords of the generic builders and their defaults (torchvision's v1 R-CNN)
ARCH_DEFAULTS: dict[str, Any] = {
    "out_indices": None,  # backbone stages feeding the FPN (default: the deepest max_levels of stride >= min_stride)
    "min_stride": 4,
    "max_levels": 4,
    "frozen_stages": 0,  # leading backbone stages whose parameters are frozen
    "fpn_channels": 256,
    "fpn_norm": None,  # None or "bn"
    "anchor_scale": 8.0,  # anchor size = anchor_scale * stride, one size per FPN level
    "anchor_sizes": None,  # or one tuple of sizes per FPN level
    "aspect_ratios": (0.5, 1.0, 2.0),
    "rpn_conv_depth": 1,  # 3x3 convolutions in the RPN head (v2: 2)
    "box_head": "mlp",  # "mlp": two FC layers (v1); "conv": 4 conv + 1 FC with BatchNorm (v2)
    "representation_size": 1024,  # width of the box head's last FC layer
    "mask_channels": 256,  # width of the mask head's convolutions
    "mask_head_norm": None,  # None or "bn" (v2)
}


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
    classes, categories = _classes(num_classes, card)
    heads = _heads(body, arch, masks=masks)
    if masks:
        heads["mask_predictor"] = _tv_mask.MaskRCNNPredictor(int(arch["mask_channels"]), 256, classes)
    kwargs.setdefault("categories", categories)
    model = cls(body, num_classes=classes, card=card, name=name, **{**heads, **kwargs})
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
    resolved = _norm_of(norm, backbone_weights)
    given = {**({"backbone": backbone} if isinstance(backbone, str) else {}), **arch, **kwargs}
    model = _assemble(
        cls, masks=masks, name=name, backbone=backbone, num_classes=num_classes, card=card,
        backbone_weights=backbone_weights, norm=resolved, bn_eps=None, arch=arch, kwargs=kwargs,
    )  # fmt: skip
    _rebuild_kwargs(model, given, resolved)
    return model


# ---------------------------------------------------------------------------------------------------------- builders
_GENERIC_DOC = """{title} over any registered backbone (``"efficientnet_lite0"``, ``"vgg16"``, ``"timm/resnet18"`` ...).

    Args:
        backbone: backbone name (or a built feature extractor); the FPN reads its declared features.
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
