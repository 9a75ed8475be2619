"""Task-aligned label assignment (TOOD, https://arxiv.org/abs/2108.07755, section 3.2), batched and sync-free.

For every ground-truth box ``g`` and every anchor point ``a`` (a feature-map location centre):

1. ``a`` is a *candidate* for ``g`` when its centre lies strictly inside ``g``.
2. The alignment metric is ``t = s^alpha * u^beta`` where ``s`` is the predicted probability of ``g``'s class at
   ``a`` and ``u`` the IoU of the predicted box at ``a`` with ``g`` (Complete-IoU clamped at 0 by default, as the
   YOLOv8 family does; plain IoU as in the paper with ``iou="iou"``). Both are treated as constants (no gradient).
3. The ``topk`` candidates of ``g`` with the largest ``t > 0`` become its positives.
4. An anchor that is a positive of several boxes keeps the one its prediction overlaps most (largest ``u``).
5. Soft targets: the positive anchors of ``g`` get the class target ``t_hat = t / max(t) * max(u)`` (maxima over the
   positives of ``g``), so the best-aligned anchor of ``g`` is asked for its IoU and the others proportionally less;
   every other class and every negative anchor get 0.

The paper uses ``alpha = 1, beta = 6, topk = 13``; the YOLOv8 family ``alpha = 0.5, beta = 6, topk = 10`` (our
defaults). Everything is dense ``[B, M, N]`` tensor algebra over padded ground truth (``M`` boxes per image, a
``valid`` mask for the padding): no host synchronisation, so it runs inside CUDA graphs and ``torch.compile``.
"""

from __future__ import annotations

from dataclasses import dataclass

import torch
import torch.nn.functional as F
from torch import Tensor

from vision.ops.iou import paired_ciou, paired_iou

__all__ = ["AssignedTargets", "candidate_overlaps", "task_aligned_assign"]


@dataclass
class AssignedTargets:
    """Per-anchor training targets of one batch.

    Attributes:
        foreground: bool ``[B, N]``, the positive anchors.
        labels: int64 ``[B, N]``, class of the assigned box (0 for negatives).
        boxes: float ``[B, N, 4]``, assigned box ``xyxy`` in pixels (zeros for negatives).
        scores: float ``[B, N, C]``, soft classification targets (``t_hat`` on the assigned class, else 0).
        gt_index: int64 ``[B, N]``, index of the assigned box in the padded ground truth (0 for negatives).
    """

    foreground: Tensor
    labels: Tensor
    boxes: Tensor
    scores: Tensor
    gt_index: Tensor


def candidate_overlaps(
    gt_boxes: Tensor, pred_boxes: Tensor, candidate: Tensor, *, iou: str = "ciou", sparse: bool | None = None
) -> Tensor:
    """Overlap (CIoU clamped at 0, or IoU) of every ground-truth box with every predicted box where ``candidate``,
    else 0.

    Args:
        gt_boxes: ``[B, M, 4]`` and pred_boxes: ``[B, N, 4]``, ``xyxy``.
        candidate: bool ``[B, M, N]``.
        iou: ``"ciou"`` or ``"iou"``.
        sparse: compute only the candidate pairs (a few % of them: an anchor lies inside few boxes), which costs a
            host sync for their count; default: on the CPU (where the sync is free), dense on other devices (no
            data-dependent shapes: CUDA graphs and ``torch.compile`` keep working). Both give the same values.

    Returns:
        float ``[B, M, N]``.
    """
    fn = paired_ciou if iou == "ciou" else paired_iou
    if sparse if sparse is not None else candidate.device.type == "cpu":
        b, m, n = candidate.nonzero(as_tuple=True)
        out = torch.zeros(candidate.shape, dtype=pred_boxes.dtype, device=pred_boxes.device)
        out[b, m, n] = fn(gt_boxes[b, m], pred_boxes[b, n]).clamp(min=0)
        return out
    return fn(gt_boxes[:, :, None, :], pred_boxes[:, None, :, :]).clamp(min=0) * candidate


@torch.no_grad()
def task_aligned_assign(
    pred_scores: Tensor,
    pred_boxes: Tensor,
    anchor_points: Tensor,
    gt_labels: Tensor,
    gt_boxes: Tensor,
    gt_valid: Tensor,
    *,
    topk: int = 10,
    alpha: float = 0.5,
    beta: float = 6.0,
    iou: str = "ciou",
    eps: float = 1e-9,
) -> AssignedTargets:
    """Assign ground truth to anchors by the task-alignment metric (see the module docstring).

    Args:
        pred_scores: ``[B, N, C]`` predicted class probabilities in [0, 1] (after the sigmoid).
        pred_boxes: ``[B, N, 4]`` predicted boxes, ``xyxy`` pixels.
        anchor_points: ``[N, 2]`` anchor centres ``(x, y)`` in pixels.
        gt_labels: int64 ``[B, M]`` classes in ``[0, C)`` on valid rows (not checked here: callers validate, as
            :meth:`vision.models.detection.yolo.model.YOLO.loss` does); padding rows may hold any value.
        gt_boxes: ``[B, M, 4]`` ``xyxy`` pixels.
        gt_valid: bool ``[B, M]``, false for padding rows.
        topk: positives per box (at most).
        alpha, beta: exponents of the classification score and the IoU in the metric.
        iou: ``"ciou"`` (Complete-IoU clamped at 0) or ``"iou"``.

    Returns:
        :class:`AssignedTargets`.

    Example:
        >>> t = task_aligned_assign(scores.sigmoid(), boxes, anchors, labels, gt_boxes, valid)
        >>> t.foreground.sum()  # number of positive anchors in the batch
    """
    B, N, C = pred_scores.shape
    M = gt_boxes.shape[1]
    device = pred_scores.device
    if M == 0:
        return AssignedTargets(
            foreground=torch.zeros(B, N, dtype=torch.bool, device=device),
            labels=torch.zeros(B, N, dtype=torch.int64, device=device),
            boxes=torch.zeros(B, N, 4, dtype=pred_boxes.dtype, device=device),
            scores=torch.zeros(B, N, C, dtype=pred_scores.dtype, device=device),
            gt_index=torch.zeros(B, N, dtype=torch.int64, device=device),
        )
    pred_scores = pred_scores.float()
    pred_boxes = pred_boxes.float()
    gt_boxes = gt_boxes.float()
    labels = torch.where(gt_valid, gt_labels.long(), 0)  # padding rows: any value; real rows must be in [0, C)
    # 1. candidates: anchor centre strictly inside the box (and the box is real)
    xy = anchor_points.float().view(1, 1, N, 2)
    deltas = torch.cat([xy - gt_boxes[:, :, None, :2], gt_boxes[:, :, None, 2:] - xy], -1)  # [B, M, N, 4]
    candidate = (deltas.amin(-1) > eps) & gt_valid[:, :, None]
    # 2. alignment metric t = s^alpha * u^beta on the candidates
    overlaps = candidate_overlaps(gt_boxes, pred_boxes, candidate, iou=iou)  # [B, M, N]
    cls_scores = pred_scores.gather(2, labels[:, None, :].expand(B, N, M)).transpose(1, 2)  # [B, M, N]
    align = cls_scores.pow(alpha) * overlaps.pow(beta) * candidate
    # 3. the top-k candidates of each box (with a positive metric)
    k = min(topk, N)
    top_idx = align.topk(k, dim=-1).indices  # [B, M, k]
    positive = torch.zeros_like(candidate).scatter_(-1, top_idx, True) & candidate & (align > 0)
    # 4. an anchor claimed by several boxes keeps the one its prediction overlaps most
    claims = positive.sum(1, keepdim=True)  # [B, 1, N]
    best = (overlaps * positive).argmax(1, keepdim=True)  # [B, 1, N]
    only_best = torch.zeros_like(positive).scatter_(1, best, True)
    positive = torch.where(claims > 1, only_best & positive, positive)
    foreground = positive.any(1)  # [B, N]
    gt_index = positive.to(torch.uint8).argmax(1)  # [B, N]
    # 5. soft targets normalised per box: t / max t * max u over its positives
    align = align * positive
    max_align = align.amax(-1, keepdim=True)  # [B, M, 1]
    max_overlap = (overlaps * positive).amax(-1, keepdim=True)
    norm = (align / (max_align + eps) * max_overlap).amax(1)  # [B, N]
    assigned_labels = labels.gather(1, gt_index) * foreground
    boxes = gt_boxes.gather(1, gt_index[..., None].expand(B, N, 4)) * foreground[..., None]
    scores = F.one_hot(assigned_labels, C).to(pred_scores.dtype) * (norm * foreground)[..., None]
    return AssignedTargets(foreground, assigned_labels, boxes, scores, gt_index * foreground)
