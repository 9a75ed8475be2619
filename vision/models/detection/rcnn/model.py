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

Detector contract (see :mod:`vision.models.detection.common`): ``model.predict(images)`` / ``model(images)`` in eval
mode -> one dict per image (``boxes`` xyxy in input pixels, ``scores``, ``labels`` 1..K, ``masks [N, 1, H, W]`` for Mask
R-CNN); ``model.loss(images, targets)`` -> torchvision's four (five) losses. Label 0 is the background
(``num_classes = K + 1``; registry tag ``"background_class"``).

Two inference paths (``model.fast``, or ``predict(images, fast=...)``): the fast one (default) batches the whole
post-processing with :func:`vision.ops.multiclass_nms` and :func:`vision.ops.masks.paste_masks`, and on CUDA runs
under bf16 autocast with channels_last (see :mod:`vision.models.detection.rcnn.fast`); ``fast=False`` is torchvision's
own forward, bit-identical in float32.

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
from collections.abc import Iterator, Mapping, Sequence
from typing import Any

import torch
from torch import Tensor, nn
from torchvision.models.detection import faster_rcnn as _tv_faster
from torchvision.models.detection import mask_rcnn as _tv_mask
from torchvision.models.detection.generalized_rcnn import GeneralizedRCNN

from vision.hub.cards import WeightsCard
from vision.models._predict import detection_predict
from vision.models.detection.common import BACKGROUND_TAG, Detections, as_image_list, check_targets
from vision.models.detection.rcnn.fast import fast_predict
from vision.models.detection.rcnn.parts import BackboneFPN, FastRCNNPredictor, RPNHead, anchor_generator, roi_pool

__all__ = [
    "FasterRCNN",
    "MaskRCNN",
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
                    "(vision.models.detection.common.to_model_targets)"
                )
        device = imgs[0].device if imgs else None
        tgts = [{k: (v.to(device) if isinstance(v, Tensor) else v) for k, v in t.items()} for t in tgts]
        with _loss_mode(self):  # type: ignore[arg-type]
            return GeneralizedRCNN.forward(self, imgs, tgts)  # type: ignore[arg-type]

    @detection_predict
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


def _torchvision_kwargs(backbone: BackboneFPN, kwargs: dict[str, Any]) -> dict[str, Any]:
    kwargs.setdefault("size_divisible", getattr(backbone, "size_divisibility", 32))
    return kwargs


class FasterRCNN(_RCNNMixin, _tv_faster.FasterRCNN):
    """Faster R-CNN (torchvision's, built from declared parts) following the vision-zoo detector contract.

    Args:
        backbone: a :class:`~vision.models.detection.rcnn.parts.BackboneFPN` (or any module with ``out_channels``,
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
