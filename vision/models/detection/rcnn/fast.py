"""The fast inference path of Faster / Mask R-CNN: batched end to end, bf16 + channels_last on CUDA.

It runs the model's own modules (torchvision's transform settings, backbone, RPN head, anchor generator, RoI pools,
box/mask heads and predictors) and replaces torchvision's per-image and per-mask Python loops:

==============================================  =============================================================
torchvision (exact path)                        fast path
==============================================  =============================================================
normalise + resize one image at a time          one normalise + one ``interpolate`` for same-sized images
RPN ``filter_proposals``: per image clip,        one batched clip / size / score mask, then
remove-small, score filter, ``batched_nms``      :func:`vision.ops.multiclass_nms` with the FPN level as the
(per level), top-n                               "class" and ``max_det = post_nms_top_n``: all images, all levels,
                                                 one call, padded output, no host sync
box ``postprocess_detections``: per image        one batched decode / softmax / clip / mask of padded proposals,
clip, reshape, score filter, ``batched_nms``      then :func:`vision.ops.multiclass_nms` on the class-specific
(per class), top-k                               boxes ``[B, P, C, 4]`` (one call for the batch)
box rescale and ``paste_masks_in_image``:        one batched rescale; :func:`vision.ops.masks.paste_masks` pastes
one interpolate + copy per mask                  every mask of all same-sized images in two batched matmuls
==============================================  =============================================================

On CUDA the backbone, FPN, RPN convolutions and RoI heads run under bf16 autocast with channels_last inputs; every
coordinate computation (anchors, box decoding, NMS, rescaling) stays in float32 (the heads return float32, see
:mod:`vision.models.detection.rcnn.parts`). In float32 (on the CPU, or ``amp=False``) it keeps the same detections as
the exact path: the NMS keeps the same sets (ties in score may be ordered differently) and masks agree within 2e-5.
"""

from __future__ import annotations

import contextlib
from typing import Any

import torch
import torch.nn.functional as F
from torch import Tensor, nn
from torchvision.models.detection.image_list import ImageList
from torchvision.models.detection.rpn import concat_box_prediction_layers

from vision.models.detection.common import Detections, split_padded
from vision.ops.masks import paste_masks
from vision.ops.nms import multiclass_nms

__all__ = ["fast_predict"]

_BOX_MIN_SIZE = 1e-2  # torchvision's RoIHeads drops boxes narrower or lower than this


def _transform(t: nn.Module, images: list[Tensor]) -> ImageList:
    """Normalise, resize (shorter side ``min_size``, longer at most ``max_size``) and pad, batched when possible."""
    same = all(img.shape == images[0].shape for img in images)
    if not same or getattr(t, "fixed_size", None) is not None:
        resized = [t.resize(t.normalize(img), None)[0] for img in images]
        sizes = [(int(i.shape[-2]), int(i.shape[-1])) for i in resized]
        return ImageList(t.batch_images(resized, size_divisible=t.size_divisible), sizes)
    batch = torch.stack(images)
    dtype, device = batch.dtype, batch.device
    mean = torch.as_tensor(t.image_mean, dtype=dtype, device=device).view(1, -1, 1, 1)
    std = torch.as_tensor(t.image_std, dtype=dtype, device=device).view(1, -1, 1, 1)
    batch = (batch - mean) / std
    h, w = batch.shape[-2:]
    size = t.min_size[-1]
    scale = min(size / min(h, w), t.max_size / max(h, w))
    batch = F.interpolate(batch, scale_factor=scale, mode="bilinear", recompute_scale_factor=True, align_corners=False)
    rh, rw = int(batch.shape[-2]), int(batch.shape[-1])
    d = int(t.size_divisible)
    ph, pw = -(-rh // d) * d, -(-rw // d) * d
    if (ph, pw) != (rh, rw):
        batch = F.pad(batch, (0, pw - rw, 0, ph - rh))
    return ImageList(batch, [(rh, rw)] * len(images))


def _clip(boxes: Tensor, sizes: Tensor) -> Tensor:
    """Clip ``boxes [B, ..., 4]`` to per-image ``sizes [B, 2]`` (h, w), like ``clip_boxes_to_image``."""
    shape = (sizes.shape[0],) + (1,) * (boxes.dim() - 2)
    h = sizes[:, 0].view(shape).to(boxes.dtype)
    w = sizes[:, 1].view(shape).to(boxes.dtype)
    x1 = torch.minimum(boxes[..., 0].clamp(min=0), w)
    y1 = torch.minimum(boxes[..., 1].clamp(min=0), h)
    x2 = torch.minimum(boxes[..., 2].clamp(min=0), w)
    y2 = torch.minimum(boxes[..., 3].clamp(min=0), h)
    return torch.stack((x1, y1, x2, y2), -1)


def _big_enough(boxes: Tensor, min_size: float) -> Tensor:
    return ((boxes[..., 2] - boxes[..., 0]) >= min_size) & ((boxes[..., 3] - boxes[..., 1]) >= min_size)


def _rpn_proposals(rpn: nn.Module, images: ImageList, features: dict[str, Tensor]) -> tuple[Tensor, Tensor]:
    """Proposals ``[B, P, 4]`` (padded with zero boxes) and their counts ``[B]``; ``P = post_nms_top_n``."""
    feats = list(features.values())
    objectness, deltas = rpn.head(feats)
    anchors = rpn.anchor_generator(images, feats)
    B = len(anchors)
    per_level = [int(o[0].numel()) for o in objectness]
    objectness, deltas = concat_box_prediction_layers(objectness, deltas)
    proposals = rpn.box_coder.decode(deltas.float(), anchors).view(B, -1, 4)
    objectness = objectness.float().view(B, -1)
    top = rpn._get_top_n_idx(objectness, per_level)  # [B, K]: per-level top-n, torchvision's own
    L = len(per_level)
    level_of = torch.repeat_interleave(
        torch.arange(L, device=top.device), torch.tensor(per_level, device=top.device), output_size=sum(per_level)
    )
    levels = level_of[top]
    rows = torch.arange(B, device=top.device).view(-1, 1)
    scores = objectness[rows, top].sigmoid()
    sizes = torch.tensor(images.image_sizes, device=top.device)
    boxes = _clip(proposals[rows, top], sizes)
    ok = _big_enough(boxes, rpn.min_size) & (scores >= rpn.score_thresh)
    one_hot = levels.unsqueeze(-1) == torch.arange(L, device=top.device)
    per_class = torch.where(one_hot & ok.unsqueeze(-1), scores.unsqueeze(-1), -1.0)  # [B, K, L]
    out_boxes, _, _, counts = multiclass_nms(
        boxes, per_class, score_threshold=-0.5, iou_threshold=rpn.nms_thresh, max_det=rpn.post_nms_top_n()
    )
    return out_boxes, counts


def _box_detections(
    roi_heads: nn.Module, features: dict[str, Tensor], proposals: Tensor, counts: Tensor, image_sizes: list
) -> tuple[Tensor, Tensor, Tensor, Tensor]:
    """Padded detections ``boxes [B, D, 4], scores [B, D], labels [B, D] (model labels), counts [B]``."""
    B, P = proposals.shape[:2]
    props = list(proposals.unbind(0))
    x = roi_heads.box_roi_pool(features, props, image_sizes)
    x = roi_heads.box_head(x)
    class_logits, box_regression = roi_heads.box_predictor(x)
    C = class_logits.shape[-1]
    boxes = roi_heads.box_coder.decode(box_regression.float(), props).view(B, P, C, 4)
    scores = F.softmax(class_logits.float(), -1).view(B, P, C)
    sizes = torch.tensor(image_sizes, device=boxes.device)
    boxes = _clip(boxes, sizes)[:, :, 1:]  # drop the background column
    scores = scores[:, :, 1:]
    valid = torch.arange(P, device=boxes.device).view(1, -1) < counts.view(-1, 1)
    ok = valid.unsqueeze(-1) & _big_enough(boxes, _BOX_MIN_SIZE)
    scores = torch.where(ok, scores, -1.0)
    out_boxes, out_scores, labels, out_counts = multiclass_nms(
        boxes,
        scores,
        score_threshold=float(roi_heads.score_thresh),
        iou_threshold=float(roi_heads.nms_thresh),
        max_det=int(roi_heads.detections_per_img),
    )
    return out_boxes, out_scores, labels + 1, out_counts


def _mask_probs(
    roi_heads: nn.Module, features: dict[str, Tensor], dets: list[Detections], image_sizes: list
) -> list[Tensor]:
    """Mask probabilities ``[N_i, M, M]`` of each image's detections (the predicted class's channel)."""
    boxes = [d["boxes"] for d in dets]
    n = sum(int(b.shape[0]) for b in boxes)
    if n == 0:
        M = 2 * roi_heads.mask_roi_pool.output_size[0]
        return [b.new_zeros(0, M, M) for b in boxes]
    x = roi_heads.mask_roi_pool(features, boxes, image_sizes)
    x = roi_heads.mask_head(x)
    logits = roi_heads.mask_predictor(x)
    labels = torch.cat([d["labels"] for d in dets])
    probs = logits[torch.arange(n, device=labels.device), labels].float().sigmoid()
    return list(probs.split([int(b.shape[0]) for b in boxes]))


def fast_predict(model: Any, images: list[Tensor], *, amp: bool = True, channels_last: bool = True) -> list[Detections]:
    """Detections of an R-CNN model (eval mode) on ``images`` (float ``[3, H_i, W_i]`` in [0, 1]) by the fast path.

    Returns one dict per image: ``boxes`` float32 ``[N, 4]`` (xyxy, input pixels), ``scores`` float32 ``[N]``,
    ``labels`` int64 ``[N]`` (model labels), and for Mask R-CNN ``masks`` float32 ``[N, 1, H_i, W_i]``.

    On CUDA with ``channels_last`` the first call converts the model's convolution weights to channels_last memory
    format and leaves them so (values, state dict and the exact path are unchanged; converting back each call would
    cost a copy of every weight). Call ``model.to(memory_format=torch.contiguous_format)`` to undo it.
    """
    original = [(int(i.shape[-2]), int(i.shape[-1])) for i in images]
    image_list = _transform(model.transform, images)
    x = image_list.tensors
    cuda = x.device.type == "cuda"
    if cuda and channels_last:
        x = x.contiguous(memory_format=torch.channels_last)
        if not getattr(model, "_channels_last_weights", False):  # once: NHWC convolution weights (values unchanged)
            model.to(memory_format=torch.channels_last)
            model._channels_last_weights = True
    autocast = torch.autocast("cuda", dtype=torch.bfloat16) if cuda and amp else contextlib.nullcontext()
    roi_heads = model.roi_heads
    with autocast:
        features = model.backbone(x)
        proposals, counts = _rpn_proposals(model.rpn, image_list, features)
        boxes, scores, labels, det_counts = _box_detections(
            roi_heads, features, proposals, counts, image_list.image_sizes
        )
        n = det_counts.tolist()  # the one host sync
        dets = split_padded(boxes, scores, labels, n)
        probs = _mask_probs(roi_heads, features, dets, image_list.image_sizes) if roi_heads.has_mask() else None
    # back to the input images' pixels: one multiply for the batch
    dev = boxes.device
    resized = torch.tensor(image_list.image_sizes, dtype=torch.float32, device=dev)
    orig = torch.tensor(original, dtype=torch.float32, device=dev)
    ratio = orig / resized  # [B, 2] (h, w), float32 like torchvision's resize_boxes
    ratio = torch.stack((ratio[:, 1], ratio[:, 0], ratio[:, 1], ratio[:, 0]), 1).view(-1, 1, 4)
    boxes = boxes * ratio
    out = split_padded(boxes, scores, labels, n)
    if probs is not None:
        groups: dict[tuple[int, int], list[int]] = {}
        for b, size in enumerate(original):
            groups.setdefault(size, []).append(b)
        for size, members in groups.items():  # one paste per distinct image size
            pasted = paste_masks(
                torch.cat([probs[b] for b in members]), torch.cat([out[b]["boxes"] for b in members]), size
            )
            for b, part in zip(members, pasted.split([n[b] for b in members])):
                out[b]["masks"] = part
    return out
