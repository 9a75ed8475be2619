"""SSD: single-shot detection over multi-scale feature maps with default boxes, on torchvision's SSD machinery.

Paper: SSD https://arxiv.org/abs/1512.02325; SSDLite (MobileNetV2) https://arxiv.org/abs/1801.04381; MobileNetV3
https://arxiv.org/abs/1905.02244.

:class:`SSD` *is* torchvision's ``SSD`` (subclass: same modules, same state-dict keys, same default boxes, box coder,
matcher, hard-negative-mining loss and resize/normalise transform) with the vision-zoo detector contract on top:

- ``model(images)`` in eval mode / ``model.predict(images)``: ``images`` a float ``[B, 3, H, W]`` tensor or a list of
  ``[3, H_i, W_i]`` in [0, 1], any size (resized to the model's fixed size inside); returns one dict per image with
  ``boxes`` float32 ``[N, 4]`` xyxy in that image's pixels, ``scores`` ``[N]``, ``labels`` int64 ``[N]``.
- ``model.loss(images, targets)``: targets ``{"boxes" [N, 4] xyxy pixels, "labels" int64 [N]}`` in the model's label
  space (``1..num_classes-1``: data-set label + 1, as :func:`vision.models.detection.common.to_model_targets` makes
  them; label 0, the background, or a label ``>= num_classes`` raises ``ValueError`` naming the target); returns
  ``{"bbox_regression", "classification"}`` in train or eval mode; degenerate boxes are dropped.
- Post-processing: per class the ``topk_candidates`` best scores above ``score_thresh``, then one call of our
  :func:`vision.ops.batched_nms` for the whole batch (groups = image x class) instead of torchvision's per-image loop;
  the kept detections are exactly torchvision's.

Label space: like torchvision's SSD, label 0 is the background: ``num_classes`` counts it (91 for COCO), predicted
labels are ``1..num_classes-1`` (registry tag ``"background_class"``); ``model.categories`` lists the names of labels
``1..`` (data-set label = model label - 1).

Registered models:

- ``ssd300_vgg16`` and ``ssdlite320_mobilenet_v3_large``: torchvision's architectures; their COCO state dicts (the
  cards' files, or ``torchvision.models.detection.ssd300_vgg16(...).state_dict()``) load unchanged and give the same
  detections.
- ``ssd(backbone=NAME, size=320)``: any registered backbone's feature maps at strides 16 and 32 plus four
  extra stride-2 blocks (the ``ssd_extra`` neck, :class:`~vision.necks.ssd_extra.SSDExtraLayers`) -> torchvision's
  ``SSDHead`` over torchvision's ``DefaultBoxGenerator`` boxes.

Example:
    >>> model = vision.create_model("ssd300_vgg16", weights=True).eval()   # torchvision's COCO weights
    >>> detections = model([image])  # image: float [3, H, W] in [0, 1]
    >>> model = vision.create_model("ssd", backbone="resnet50", num_classes=4)  # 3 classes + background
"""

from __future__ import annotations

from collections import OrderedDict
from collections.abc import Mapping, Sequence
from typing import Any

import torch
from torch import Tensor, nn
from torchvision.models.detection import ssd as tv_ssd
from torchvision.models.detection import ssdlite as tv_ssdlite
from torchvision.models.detection.anchor_utils import DefaultBoxGenerator
from torchvision.ops import boxes as box_ops

from vision.backbones._base import input_mean_std, levels_by_stride
from vision.hub.cards import Preprocess, WeightsCard
from vision.models._predict import detection_predict
from vision.models.detection.common import as_image_list, check_built_backbone, check_targets, rebuild_kwargs
from vision.necks.ssd_extra import SSDExtraLayers
from vision.ops import batched_nms
from vision.registry import MODELS, NECKS, weights_from_name

__all__ = ["SSD", "ssd", "ssd300_vgg16", "ssdlite320_mobilenet_v3_large"]

_TAGS = {"detection", "background_class", "ssd"}
_SSD_STRIDES = (16, 32)  # the backbone levels ssd(backbone=...) reads


class SSD(tv_ssd.SSD):
    """torchvision's ``SSD`` with the vision-zoo detector contract (see the module docstring).

    Args:
        backbone: returns the feature maps (``OrderedDict`` or list, shallow to deep) the head reads.
        anchor_generator: torchvision ``DefaultBoxGenerator`` (one aspect-ratio list per feature map).
        size: fixed input size ``(H, W)`` every image is resized to.
        num_classes: classes including the background (label 0).
        head: ``SSDHead`` / ``SSDLiteHead`` (default: an ``SSDHead`` over ``backbone.out_channels``).
        categories: names of labels ``1..num_classes-1``.
        kwargs: torchvision ``SSD`` arguments (``image_mean``, ``image_std``, ``score_thresh``, ``nms_thresh``,
            ``detections_per_img``, ``iou_thresh``, ``topk_candidates``, ``positive_fraction``).
    """

    background_class = True
    classifier_prefixes = ("head.classification_head.",)

    def __init__(
        self,
        backbone: nn.Module,
        anchor_generator: DefaultBoxGenerator,
        *,
        size: tuple[int, int],
        num_classes: int,
        head: nn.Module | None = None,
        categories: Sequence[str] | None = None,
        name: str = "ssd",
        **kwargs: Any,
    ) -> None:
        super().__init__(backbone, anchor_generator, tuple(size), num_classes, head=head, **kwargs)
        self.num_classes = int(num_classes)
        self.size = tuple(size)
        if categories is not None and len(categories) != self.num_classes - 1:
            raise ValueError(f"{len(categories)} categories for num_classes={num_classes} (background included)")
        self.categories = list(categories) if categories is not None else None
        self.name = name

    # ------------------------------------------------------------------------------------------------- calls
    def forward(self, images: Tensor | Sequence[Tensor], targets: Sequence[Mapping[str, Tensor]] | None = None) -> Any:
        """Eval mode: detections (one dict per image). Train mode: ``loss(images, targets)``."""
        if self.training:
            if targets is None:
                raise ValueError("SSD in train mode needs targets; call model.eval() to detect")
            return self.loss(images, targets)
        return self.predict(images)

    @detection_predict
    @torch.no_grad()
    def predict(
        self,
        images: Tensor | Sequence[Tensor],
        *,
        score_threshold: float | None = None,
        iou_threshold: float | None = None,
        max_det: int | None = None,
    ) -> list[dict[str, Tensor]]:
        """Detections per image (see the module docstring); thresholds default to the model's."""
        was_training = self.training
        saved = (self.score_thresh, self.nms_thresh, self.detections_per_img)
        self.eval()
        try:
            if score_threshold is not None:
                self.score_thresh = float(score_threshold)
            if iou_threshold is not None:
                self.nms_thresh = float(iou_threshold)
            if max_det is not None:
                self.detections_per_img = int(max_det)
            device = next(self.parameters()).device
            imgs = [im.to(device) for im in as_image_list(images)]
            sizes = [(int(im.shape[-2]), int(im.shape[-1])) for im in imgs]
            batch, _ = self.transform(imgs, None)
            features = list(self._features(batch.tensors))
            head_outputs = self.head(features)
            anchors = self.anchor_generator(batch, features)
            detections = self.postprocess_detections(head_outputs, anchors, batch.image_sizes)
            return self.transform.postprocess(detections, batch.image_sizes, sizes)
        finally:
            self.score_thresh, self.nms_thresh, self.detections_per_img = saved
            self.train(was_training)

    def loss(self, images: Tensor | Sequence[Tensor], targets: Sequence[Mapping[str, Tensor]]) -> dict[str, Tensor]:
        """``{"bbox_regression", "classification"}`` losses (torchvision's matching and hard-negative mining).

        ``targets``: one ``{"boxes" float [N_i, 4] xyxy pixels, "labels" int64 [N_i]}`` per image, labels in the
        model's label space ``[1, num_classes)`` (label 0 is the background). ``ValueError`` names the target whose
        label is out of range or whose box and label counts differ.
        """
        device = next(self.parameters()).device
        imgs = [im.to(device) for im in as_image_list(images)]
        checked = check_targets(targets, len(imgs))
        self._check_labels([t["labels"] for t in checked])
        clean = []
        for t in checked:
            boxes, labels = t["boxes"].to(device), t["labels"].to(device)
            ok = (boxes[:, 2] > boxes[:, 0]) & (boxes[:, 3] > boxes[:, 1])
            clean.append({"boxes": boxes[ok], "labels": labels[ok]})
        batch, resized = self.transform(imgs, clean)
        features = list(self._features(batch.tensors))
        head_outputs = self.head(features)
        anchors = self.anchor_generator(batch, features)
        matched = []
        for anchors_i, target in zip(anchors, resized):
            if target["boxes"].numel() == 0:
                matched.append(torch.full((anchors_i.shape[0],), -1, dtype=torch.int64, device=anchors_i.device))
            else:
                matched.append(self.proposal_matcher(box_ops.box_iou(target["boxes"], anchors_i)))
        return self.compute_loss(resized, head_outputs, anchors, matched)

    def _check_labels(self, labels: Sequence[Tensor]) -> None:
        """``ValueError`` naming the first target with a label outside ``[1, num_classes)``."""
        sizes = [int(lab.numel()) for lab in labels]
        if not sum(sizes):
            return
        flat = torch.cat([lab.reshape(-1).to(labels[0].device) for lab in labels])
        wrong = (flat < 1) | (flat >= self.num_classes)
        if not bool(wrong.any()):  # one host synchronisation for the batch
            return
        for i, (part, values) in enumerate(zip(wrong.split(sizes), flat.split(sizes))):
            if bool(part.any()):
                bad = values[part].unique().tolist()
                raise ValueError(
                    f"target {i}: labels {bad} are outside [1, {self.num_classes}): SSD labels are model labels with "
                    f"0 the background (num_classes={self.num_classes} counts it), i.e. data-set label + 1 "
                    "(vision.models.detection.common.to_model_targets(targets, 1))"
                )

    def _features(self, x: Tensor) -> list[Tensor]:
        features = self.backbone(x)
        if isinstance(features, Tensor):
            return [features]
        return list(features.values()) if isinstance(features, Mapping) else list(features)

    # ------------------------------------------------------------------------------------------------- post-processing
    def postprocess_detections(
        self, head_outputs: dict[str, Tensor], image_anchors: list[Tensor], image_shapes: list[tuple[int, int]]
    ) -> list[dict[str, Tensor]]:
        """torchvision's SSD post-processing, vectorised: decode, clip, per-class top-k above ``score_thresh``, then
        one batched NMS over (image, class) groups and the ``detections_per_img`` best per image."""
        regression = head_outputs["bbox_regression"]
        scores = head_outputs["cls_logits"].softmax(-1)[..., 1:]  # [B, A, C - 1]: background dropped
        B, A, C1 = scores.shape
        boxes = self.box_coder.decode_single(regression.reshape(-1, 4), torch.cat(image_anchors)).view(B, A, 4)
        boxes = torch.stack([box_ops.clip_boxes_to_image(b, s) for b, s in zip(boxes, image_shapes)])
        k = min(self.topk_candidates, A)
        masked = scores.masked_fill(~(scores > self.score_thresh), float("-inf"))
        top_scores, top_idx = masked.topk(k, dim=1)  # [B, k, C - 1], per class
        # class-major candidate order (class 1's top-k, then class 2's ...), as torchvision concatenates them
        top_scores, top_idx = top_scores.transpose(1, 2), top_idx.transpose(1, 2)  # [B, C - 1, k]
        image = torch.arange(B, device=scores.device).view(B, 1, 1).expand(B, C1, k)
        label = torch.arange(1, C1 + 1, device=scores.device).view(1, C1, 1).expand(B, C1, k)
        valid = top_scores > self.score_thresh
        cand_scores, cand_image, cand_label = top_scores[valid], image[valid], label[valid]
        cand_boxes = boxes[cand_image, top_idx[valid]]
        keep = batched_nms(cand_boxes, cand_scores, cand_image * (C1 + 1) + cand_label, self.nms_thresh)
        keep = keep[torch.sort(cand_image[keep], stable=True).indices]  # by image, by decreasing score inside
        per_image = torch.bincount(cand_image[keep], minlength=B).tolist()
        out = []
        for part in keep.split(per_image):
            part = part[: self.detections_per_img]
            out.append({"boxes": cand_boxes[part], "scores": cand_scores[part], "labels": cand_label[part]})
        return out


class _BodyWithExtras(nn.Module):
    """torchvision's SSD ``backbone`` interface over a registry backbone and the ``ssd_extra`` neck:
    ``forward(x) -> OrderedDict`` of the neck's maps keyed ``"0"``, ``"1"`` ..., and ``out_channels``."""

    def __init__(self, backbone: nn.Module, neck: SSDExtraLayers) -> None:
        super().__init__()
        self.backbone = backbone
        self.neck = neck
        self.out_channels = list(neck.channels)

    def forward(self, x: Tensor) -> OrderedDict[str, Tensor]:
        maps = self.neck(self.backbone(x))
        return OrderedDict((str(i), v) for i, v in enumerate(maps.values()))


# ------------------------------------------------------------------------------------------------------------ cards
def _card(weights: Any, size: int, mean: Sequence[float], std: Sequence[float]) -> WeightsCard:
    meta = weights.meta
    return WeightsCard(
        url=weights.url,
        sha256=weights.url.rsplit("-", 1)[1].split(".")[0],
        num_params=int(meta["num_params"]),
        num_classes=len(meta["categories"]),
        categories=tuple(meta["categories"]),
        preprocess=Preprocess(input_size=(size, size), resize_size=size, crop=False, mean=tuple(mean), std=tuple(std)),
        metrics={ds: dict(v) for ds, v in meta["_metrics"].items()},
        gflops=float(meta["_ops"]),
        license="BSD-3-Clause (torchvision)",
        source=str(meta["recipe"]),
    )


_VGG_MEAN, _VGG_STD = (0.48235, 0.45882, 0.40784), (1.0 / 255.0,) * 3
_SSD300_CARDS = {"tv_coco": _card(tv_ssd.SSD300_VGG16_Weights.COCO_V1, 300, _VGG_MEAN, _VGG_STD)}
_SSDLITE_CARDS = {
    "tv_coco": _card(tv_ssdlite.SSDLite320_MobileNet_V3_Large_Weights.COCO_V1, 320, (0.5,) * 3, (0.5,) * 3)
}


# ------------------------------------------------------------------------------------------------------------ builders
def _adopt(tv: tv_ssd.SSD, *, num_classes: int, card: WeightsCard | None, name: str, **overrides: Any) -> SSD:
    """Our :class:`SSD` over the parts and settings of a freshly built torchvision SSD."""
    t = tv.transform
    settings = {
        "image_mean": list(t.image_mean),
        "image_std": list(t.image_std),
        "score_thresh": tv.score_thresh,
        "nms_thresh": tv.nms_thresh,
        "detections_per_img": tv.detections_per_img,
        "topk_candidates": tv.topk_candidates,
        "iou_thresh": tv.proposal_matcher.high_threshold,
        "positive_fraction": 1.0 / (1.0 + tv.neg_to_pos_ratio),
        **overrides,
    }
    categories = None
    if card is not None and card.categories and card.num_classes == num_classes:
        categories = list(card.categories[1:])
    return SSD(
        tv.backbone,
        tv.anchor_generator,
        size=tuple(t.fixed_size),
        num_classes=num_classes,
        head=tv.head,
        categories=categories,
        name=name,
        **settings,
    )


@MODELS.register("ssd300_vgg16", cards=_SSD300_CARDS, tags=_TAGS, task="detection")
def ssd300_vgg16(
    *,
    num_classes: int | None = None,
    backbone_weights: bool = False,
    trainable_backbone_layers: int | None = None,
    card: WeightsCard | None = None,
    **kwargs: Any,
) -> SSD:
    """torchvision's SSD300 with a VGG-16 backbone (35.6 M parameters; 91 COCO classes with the background).

    ``backbone_weights=True`` starts from torchvision's ImageNet VGG-16 features (downloaded by torchvision, hash
    checked); ``weights=True`` (``create_model``) loads torchvision's COCO detector. ``kwargs`` go to :class:`SSD`.
    """
    classes = num_classes or (card.num_classes if card is not None else None) or 91
    tv = tv_ssd.ssd300_vgg16(
        weights=None,
        weights_backbone=tv_ssd.VGG16_Weights.IMAGENET1K_FEATURES if backbone_weights else None,
        num_classes=classes,
        trainable_backbone_layers=trainable_backbone_layers,
    )
    return _adopt(tv, num_classes=classes, card=card, name="ssd300_vgg16", **kwargs)


@MODELS.register("ssdlite320_mobilenet_v3_large", cards=_SSDLITE_CARDS, tags=_TAGS, task="detection")
def ssdlite320_mobilenet_v3_large(
    *,
    num_classes: int | None = None,
    backbone_weights: bool = False,
    trainable_backbone_layers: int | None = None,
    card: WeightsCard | None = None,
    **kwargs: Any,
) -> SSD:
    """torchvision's SSDLite320 with a MobileNetV3-Large backbone (3.4 M parameters; 91 COCO classes).

    Without ``backbone_weights`` the backbone has torchvision's reduced tail, which is also the architecture of
    torchvision's COCO weights (``weights=True``).
    """
    classes = num_classes or (card.num_classes if card is not None else None) or 91
    tv = tv_ssdlite.ssdlite320_mobilenet_v3_large(
        weights=None,
        weights_backbone=tv_ssdlite.MobileNet_V3_Large_Weights.IMAGENET1K_V1 if backbone_weights else None,
        num_classes=classes,
        trainable_backbone_layers=trainable_backbone_layers,
    )
    return _adopt(tv, num_classes=classes, card=card, name="ssdlite320_mobilenet_v3_large", **kwargs)


@MODELS.register("ssd", tags=_TAGS, task="detection")
def ssd(
    *,
    backbone: str | nn.Module = "resnet50",
    num_classes: int = 91,
    size: int = 320,
    backbone_weights: bool | str | None = None,
    frozen_stages: int = 0,
    norm: str = "bn",
    extra_widths: Sequence[int] = (512, 256, 256, 256),
    aspect_ratios: Sequence[Sequence[int]] | None = None,
    card: WeightsCard | None = None,
    **kwargs: Any,
) -> SSD:
    """SSD over any registered backbone: its stride-16 and stride-32 maps + extra blocks -> torchvision's SSDHead.

    ``ValueError`` when the backbone has no feature map at stride 16 or 32.

    Args:
        backbone: a ``BACKBONES`` name (``"resnet50"``, ``"vgg16"``, ``"efficientnet_b0"``, ``"timm/<name>"``; a weight
            tag in the name is ``backbone_weights=tag``), or a built backbone (``vision.create_backbone(...)``, which
            then takes the weights, ``frozen_stages`` and ``norm``).
        num_classes: classes including the background.
        size: fixed square input size.
        backbone_weights, frozen_stages, norm: as ``create_backbone``.
        extra_widths: output widths of the extra stride-2 blocks (one feature map each).
        aspect_ratios: per feature map, as torchvision's ``DefaultBoxGenerator`` (default ``[2]`` on the first and
            last two maps, ``[2, 3]`` elsewhere).
        kwargs: :class:`SSD` / torchvision ``SSD`` arguments; ``image_mean``/``image_std`` default to the backbone
            card's normalisation (ImageNet statistics without a card).

    Example:
        >>> model = vision.create_model("ssd", backbone="resnet18", backbone_weights=True, num_classes=4)
    """
    import vision
    from vision.backbones._base import FeatureExtractor
    from vision.necks.simple_pyramid import with_simple_pyramid

    if isinstance(backbone, str):  # "name.tag" and backbone_weights="tag" build the same model
        backbone, backbone_weights = weights_from_name(backbone, backbone_weights, keyword="backbone_weights")
        label = backbone
        common = {"weights": backbone_weights, "frozen_stages": frozen_stages, "norm": norm}
        body = with_simple_pyramid(vision.create_backbone(backbone, **common), _SSD_STRIDES)  # single-scale (ViT)
        chosen = levels_by_stride(body.feature_info, _SSD_STRIDES, model=f"ssd(backbone={backbone!r})")
        if tuple(body.out_indices) == chosen:
            pass
        elif isinstance(body, FeatureExtractor) and max(chosen) == max(body.out_indices):
            body.out_indices = chosen  # same network, fewer returned maps
        else:
            body = vision.create_backbone(backbone, out_indices=chosen, **common)
        specs = list(body.specs)
    else:
        check_built_backbone(backbone, "ssd", backbone_weights=backbone_weights not in (None, False),
                             frozen_stages=frozen_stages != 0, norm=norm != "bn")  # fmt: skip
        body = with_simple_pyramid(backbone, _SSD_STRIDES)  # single-scale (ViT)
        label = getattr(body, "name", "") or type(body).__name__
        chosen = levels_by_stride(body.specs, _SSD_STRIDES, model=f"ssd(backbone={label})")
        specs = [body.specs[i] for i in chosen]  # the extra layers read these; other returned maps go unused
    extra = _BodyWithExtras(body, NECKS.build("ssd_extra", in_specs=specs, widths=extra_widths))
    n_maps = len(extra.out_channels)
    if aspect_ratios is None:
        aspect_ratios = [[2] if i in (0, n_maps - 2, n_maps - 1) else [2, 3] for i in range(n_maps)]
    anchors = DefaultBoxGenerator([list(a) for a in aspect_ratios])
    head = tv_ssd.SSDHead(extra.out_channels, anchors.num_anchors_per_location(), num_classes)
    mean, std = input_mean_std(body)  # the backbone card's, else its architecture's own
    kwargs.setdefault("image_mean", list(mean))
    kwargs.setdefault("image_std", list(std))
    model = SSD(extra, anchors, size=(size, size), num_classes=num_classes, head=head, name=f"ssd[{label}]", **kwargs)
    given = {"backbone": backbone, "size": size, "frozen_stages": frozen_stages, "norm": norm,
             "extra_widths": extra_widths, "aspect_ratios": aspect_ratios, **kwargs}  # fmt: skip
    model.rebuild_kwargs = rebuild_kwargs(given)
    return model
