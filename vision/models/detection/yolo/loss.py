"""YOLO training losses: distribution focal loss, Complete-IoU box loss and BCE classification (decoding of the
predicted distributions into boxes is in :mod:`vision.models.detection.yolo.decode`).

- Box sides are predicted as discrete distributions over ``0 .. R-1`` (``R = reg_max``) in units of the level's
  stride (Generalized Focal Loss, https://arxiv.org/abs/2006.04388); the side length is the distribution's mean.
- **Distribution focal loss** (GFL eq. 6): for a target distance ``y`` with ``y_l = floor(y)``, ``y_r = y_l + 1``,
  ``DFL = -((y_r - y) log p(y_l) + (y - y_l) log p(y_r))``: the two bins around ``y`` are pushed up in proportion to
  their closeness (the target is clamped to ``[0, R - 1 - 0.01]`` so that ``y_r`` exists). Averaged over the 4 sides.
- **Box loss**: ``1 - CIoU(predicted, assigned)`` (https://arxiv.org/abs/1911.08287).
- **Classification**: binary cross-entropy of every class logit against the task-aligned soft target (0 for
  negatives), summed over anchors and classes.

Box and DFL terms of a positive anchor are weighted by its soft target (the task-aligned ``t_hat``); all three terms
are divided by the sum of the soft targets of the batch (at least 1), i.e. by the effective number of positives. The
default gains (box 7.5, cls 0.5, dfl 1.5) are those commonly used with this loss.
"""

from __future__ import annotations

import torch
import torch.nn.functional as F
from torch import Tensor

from vision.models.detection.yolo.assigner import AssignedTargets, task_aligned_assign
from vision.models.detection.yolo.decode import decode_boxes
from vision.ops.iou import paired_ciou

__all__ = ["dfl_loss", "yolo_loss"]


def dfl_loss(logits: Tensor, target: Tensor) -> Tensor:
    """Distribution focal loss per box: ``logits [P, 4, R]``, ``target [P, 4]`` in bins -> ``[P]`` (mean of sides).

    ``target`` must lie in ``[0, R - 1)`` (callers clamp it to ``R - 1 - 0.01``).

    Example:
        >>> logits = torch.tensor([[[0.0, math.log(2), 0.0, 0.0]] * 4])  # p = (1/5, 2/5, 1/5, 1/5) for every side
        >>> dfl_loss(logits, torch.full((1, 4), 1.25))  # 0.75 * -log(2/5) + 0.25 * -log(1/5)
        tensor([1.0896])
    """
    R = logits.shape[-1]
    left = target.floor().long().clamp(0, R - 2)
    w_right = target - left
    logp = logits.float().log_softmax(-1)
    nll_left = -logp.gather(-1, left[..., None]).squeeze(-1)
    nll_right = -logp.gather(-1, (left + 1)[..., None]).squeeze(-1)
    return ((1 - w_right) * nll_left + w_right * nll_right).mean(-1)


def yolo_loss(
    box_logits: Tensor,
    cls_logits: Tensor,
    points: Tensor,
    strides: Tensor,
    gt_labels: Tensor,
    gt_boxes: Tensor,
    gt_valid: Tensor,
    *,
    reg_max: int,
    gains: tuple[float, float, float] = (7.5, 0.5, 1.5),
    topk: int = 10,
    alpha: float = 0.5,
    beta: float = 6.0,
) -> tuple[dict[str, Tensor], AssignedTargets]:
    """The YOLO losses of one batch (see the module docstring); no host synchronisation.

    Args:
        box_logits: ``[B, N, 4 * R]`` head output.
        cls_logits: ``[B, N, C]`` head output.
        points, strides: anchor points ``[N, 2]`` (pixels) and their strides ``[N]`` (:func:`make_anchors`).
        gt_labels, gt_boxes, gt_valid: padded ground truth ``[B, M]``, ``[B, M, 4]`` xyxy pixels, ``[B, M]`` bool.
        reg_max: bins per side ``R``.
        gains: weights of the box (CIoU), classification and DFL terms.
        topk, alpha, beta: task-aligned assigner parameters.

    Returns:
        ``({"box", "cls", "dfl"} scalar losses already multiplied by their gains, assigned targets)``.
    """
    box_logits = box_logits.float()
    cls_logits = cls_logits.float()
    pred_boxes = decode_boxes(box_logits, points, strides, reg_max)
    targets = task_aligned_assign(
        cls_logits.detach().sigmoid(),
        pred_boxes.detach(),
        points,
        gt_labels,
        gt_boxes,
        gt_valid,
        topk=topk,
        alpha=alpha,
        beta=beta,
    )
    norm = targets.scores.sum().clamp(min=1.0)
    loss_cls = F.binary_cross_entropy_with_logits(cls_logits, targets.scores, reduction="sum") / norm
    weight = targets.scores.sum(-1) * targets.foreground  # [B, N]
    # box terms on every anchor, zero-weighted on negatives: dense shapes, no data-dependent indexing
    ciou = paired_ciou(pred_boxes, targets.boxes)
    loss_box = ((1.0 - ciou) * weight).sum() / norm
    sides = torch.cat([points - targets.boxes[..., :2], targets.boxes[..., 2:] - points], -1) / strides[:, None]
    sides = sides.clamp(0, reg_max - 1 - 0.01)
    dfl = dfl_loss(box_logits.unflatten(-1, (4, reg_max)), sides)
    loss_dfl = (dfl * weight).sum() / norm
    g_box, g_cls, g_dfl = gains
    return {"box": g_box * loss_box, "cls": g_cls * loss_cls, "dfl": g_dfl * loss_dfl}, targets
