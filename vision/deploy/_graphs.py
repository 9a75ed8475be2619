"""Export wrappers: one ``nn.Module`` per model family whose ``forward`` is the whole ONNX graph.

Detector graphs end in final detections, padded to ``max_det`` rows per image plus a count, in data-set label space
(``0..K-1``; a background class is dropped inside the graph):

- inputs: ``images`` float32 ``[B, 3, S, S]`` in [0, 1] (YOLO: letterboxed; SSD: resized), normalisation inside;
- outputs: ``boxes`` float32 ``[B, max_det, 4]`` xyxy pixels of the ``S x S`` input, ``scores`` float32 ``[B, max_det]``
  (decreasing), ``labels`` int64 ``[B, max_det]``, ``num_dets`` int64 ``[B]``; rows past ``num_dets`` are zeros.

Class-aware NMS is the ONNX ``NonMaxSuppression`` operator (batched, per class, score threshold strictly below); in
eager mode the same semantics run through :func:`torchvision.ops.nms`, so the wrapper itself is testable.

R-CNN graphs are torchvision's own exportable path (``GeneralizedRCNN.forward`` traced on one image ``[3, H, W]``
in [0, 1], resize and normalisation inside): outputs ``boxes [N, 4]`` in input pixels, ``scores [N]``, ``labels [N]``
(data-set labels) [, ``masks [N, 1, H, W]``].
"""

from __future__ import annotations

from typing import Any

import torch
import torchvision
from torch import Tensor, nn

from vision.models.detection.yolo.decode import decode_boxes

__all__ = ["ClassifierGraph", "RCNNGraph", "SSDGraph", "YOLOGraph", "padded_nms"]


class _NonMaxSuppression(torch.autograd.Function):
    """``selected [M, 3] int64 (batch, class, box)`` for ``boxes [B, N, 4]`` and ``scores [B, C, N]``: ONNX
    ``NonMaxSuppression`` when exported, torchvision's NMS per (image, class) in eager mode."""

    @staticmethod
    def forward(ctx: Any, boxes: Tensor, scores: Tensor, max_out: int, iou: float, thr: float) -> Tensor:
        rows = []
        for b in range(scores.shape[0]):
            for c in range(scores.shape[1]):
                cand = (scores[b, c] > thr).nonzero().flatten()
                keep = cand[torchvision.ops.nms(boxes[b, cand], scores[b, c, cand], iou)][:max_out]
                rows.append(torch.stack([torch.full_like(keep, b), torch.full_like(keep, c), keep], 1))
        return torch.cat(rows) if rows else torch.zeros(0, 3, dtype=torch.int64)

    @staticmethod
    def symbolic(g: Any, boxes: Any, scores: Any, max_out: int, iou: float, thr: float) -> Any:
        return g.op(
            "NonMaxSuppression",
            boxes,
            scores,
            g.op("Constant", value_t=torch.tensor([max_out], dtype=torch.int64)),
            g.op("Constant", value_t=torch.tensor([iou], dtype=torch.float32)),
            g.op("Constant", value_t=torch.tensor([thr], dtype=torch.float32)),
            center_point_box_i=0,
        )


def padded_nms(
    boxes: Tensor, scores: Tensor, *, iou_threshold: float, score_threshold: float, max_det: int
) -> tuple[Tensor, Tensor, Tensor, Tensor]:
    """Class-aware NMS with fixed-size outputs, exportable to ONNX.

    Args:
        boxes: ``[B, N, 4]`` xyxy, shared by all classes.
        scores: ``[B, C, N]``; a candidate needs ``score > score_threshold``.
        iou_threshold: suppress a box whose IoU with a kept box of its class is above it.
        max_det: detections kept per image (the best scores over all classes).

    Returns:
        ``boxes [B, max_det, 4]``, ``scores [B, max_det]`` (decreasing), ``labels`` int64 ``[B, max_det]``,
        ``counts`` int64 ``[B]``; padding rows are zeros.
    """
    B, C, N = scores.shape
    sel = _NonMaxSuppression.apply(boxes, scores, max_det, float(iou_threshold), float(score_threshold))
    b, c, n = sel[:, 0], sel[:, 1], sel[:, 2]
    s = scores.reshape(-1)[(b * C + c) * N + n]
    mine = b.unsqueeze(0) == torch.arange(B, device=scores.device).unsqueeze(1)  # [B, M]
    mat = torch.where(mine, s.unsqueeze(0), torch.full_like(s, -1.0).unsqueeze(0))
    mat = torch.cat([mat, torch.full((B, max_det), -1.0, device=scores.device)], 1)  # never fewer than max_det
    vals, idx = mat.topk(max_det, dim=1)
    found = vals >= 0
    cand_boxes = torch.cat([boxes.reshape(-1, 4)[b * N + n], torch.zeros(max_det, 4, device=boxes.device)])
    cand_labels = torch.cat([c, torch.zeros(max_det, dtype=torch.int64, device=boxes.device)])
    out_boxes = cand_boxes[idx] * found.unsqueeze(-1).to(boxes.dtype)
    out_labels = cand_labels[idx] * found.long()
    return out_boxes, vals.clamp(min=0), out_labels, found.long().sum(1)


class ClassifierGraph(nn.Module):
    """``images [B, 3, H, W]`` normalised -> ``logits [B, K]``."""

    def __init__(self, model: nn.Module) -> None:
        super().__init__()
        self.model = model

    def forward(self, images: Tensor) -> Tensor:
        return self.model(images)


class YOLOGraph(nn.Module):
    """A :class:`~vision.models.detection.yolo.YOLO` from letterboxed ``images [B, 3, S, S]`` in [0, 1] to padded
    detections (module docstring), with the model's decoding, ``pre_nms_topk`` and thresholds."""

    def __init__(self, model: nn.Module, *, size: int, score_threshold: float, iou_threshold: float, max_det: int):
        super().__init__()
        self.model = model
        self.thr, self.iou, self.max_det = float(score_threshold), float(iou_threshold), int(max_det)
        shapes = [(size // s, size // s) for s in model.strides]
        points, strides = model.anchors(shapes, torch.device("cpu"))
        self.register_buffer("points", points.clone(), persistent=False)
        self.register_buffer("strides", strides.clone(), persistent=False)

    def forward(self, images: Tensor) -> tuple[Tensor, Tensor, Tensor, Tensor]:
        box_logits, cls_logits, _ = self.model.forward_raw(images)
        boxes = decode_boxes(box_logits, self.points, self.strides, self.model.reg_max)  # [B, N, 4]
        scores = cls_logits.sigmoid()  # [B, N, C]
        B, N, C = scores.shape
        topk = self.model.pre_nms_topk
        if topk is not None and topk < N * C:  # the model's pre-NMS top-k over (anchor, class) pairs
            vals, f = scores.reshape(B, N * C).topk(int(topk), dim=1, sorted=False)  # NMS sorts per class itself
            cls = f % C
            boxes = boxes.gather(1, (f // C).unsqueeze(-1).expand(-1, -1, 4))
            # [B, C, k]: each candidate's score in its class row, zeros elsewhere (a scatter of k values, not a
            # select over all C x k)
            per_class = vals.new_zeros(B, C, vals.shape[1]).scatter(1, cls.unsqueeze(1), vals.unsqueeze(1))
        else:
            per_class = scores.transpose(1, 2)
        return padded_nms(
            boxes, per_class.contiguous(), iou_threshold=self.iou, score_threshold=self.thr, max_det=self.max_det
        )


class SSDGraph(nn.Module):
    """A vision-zoo :class:`~vision.models.detection.ssd.SSD` from resized ``images [B, 3, S, S]`` in [0, 1] to
    padded detections: torchvision's normalisation, default boxes (constant for ``S``), box coder, clipping, the
    per-class ``topk_candidates`` above ``score_thresh`` and NMS; labels are data-set labels (model label - 1)."""

    def __init__(self, model: nn.Module, *, size: int, score_threshold: float, iou_threshold: float, max_det: int):
        super().__init__()
        from torchvision.models.detection.image_list import ImageList

        self.model, self.size = model, int(size)
        self.thr, self.iou, self.max_det = float(score_threshold), float(iou_threshold), int(max_det)
        t = model.transform
        self.register_buffer("mean", torch.tensor(t.image_mean).view(1, 3, 1, 1), persistent=False)
        self.register_buffer("std", torch.tensor(t.image_std).view(1, 3, 1, 1), persistent=False)
        with torch.no_grad():
            x = torch.zeros(1, 3, size, size)
            feats = model._features(x)
            anchors = model.anchor_generator(ImageList(x, [(size, size)]), feats)[0]
        self.register_buffer("anchors", anchors, persistent=False)

    def forward(self, images: Tensor) -> tuple[Tensor, Tensor, Tensor, Tensor]:
        x = (images - self.mean) / self.std
        out = self.model.head(self.model._features(x))
        B = images.shape[0]
        A = self.anchors.shape[0]
        reg = out["bbox_regression"].reshape(-1, A, 4)
        anchors = self.anchors.unsqueeze(0).expand(reg.shape[0], -1, -1)
        boxes = self.model.box_coder.decode_single(reg.reshape(-1, 4), anchors.reshape(-1, 4)).reshape(-1, A, 4)
        boxes = boxes.clamp(min=0, max=float(self.size))
        scores = out["cls_logits"].softmax(-1)[..., 1:].transpose(1, 2)  # [B, C - 1, A]
        k = min(int(self.model.topk_candidates), A)
        vals, idx = scores.topk(k, dim=2)
        per_class = torch.zeros_like(scores).scatter(2, idx, vals)  # only each class's top-k candidates
        return padded_nms(
            boxes.reshape(B, A, 4), per_class, iou_threshold=self.iou, score_threshold=self.thr, max_det=self.max_det
        )


class RCNNGraph(nn.Module):
    """torchvision's Faster / Mask R-CNN forward on one image ``[3, H, W]`` in [0, 1] (exactly the ``fast=False``
    path of :meth:`predict`); labels shifted to data-set labels."""

    def __init__(self, model: nn.Module) -> None:
        super().__init__()
        self.model = model

    def forward(self, image: Tensor) -> tuple[Tensor, ...]:
        from torchvision.models.detection.generalized_rcnn import GeneralizedRCNN

        det = GeneralizedRCNN.forward(self.model, [image])[0]
        out = (det["boxes"], det["scores"], det["labels"] - 1)
        return (*out, det["masks"]) if "masks" in det else out
