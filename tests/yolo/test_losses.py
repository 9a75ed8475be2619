"""CIoU, DFL, decoding and the task-aligned assigner against small cases computed by hand from their definitions."""

from __future__ import annotations

import math

import pytest
import torch
from torchvision.ops import box_iou, complete_box_iou

from vision.models.detection.yolo.assigner import candidate_overlaps, task_aligned_assign
from vision.models.detection.yolo.decode import decode_boxes, make_anchors, side_distances
from vision.models.detection.yolo.loss import dfl_loss, yolo_loss
from vision.ops.iou import paired_ciou, paired_iou


def _t(*rows):
    return torch.tensor(rows, dtype=torch.float64)


# ------------------------------------------------------------------------------------------------------------ IoU
def test_iou_and_ciou_hand_cases():
    # overlapping squares: inter 1, union 4 + 4 - 1 = 7; centres (1, 1), (2, 2): rho^2 = 2; enclosing 3x3: c^2 = 18
    a, b = _t([0, 0, 2, 2]), _t([1, 1, 3, 3])
    assert paired_iou(a, b).item() == pytest.approx(1 / 7, abs=1e-7)
    assert paired_ciou(a, b).item() == pytest.approx(1 / 7 - 2 / 18, abs=1e-7)  # same aspect ratio: v = 0
    # same corner, 4x2 vs 2x2: IoU 4 / 8; rho^2 = 1; c^2 = 4^2 + 2^2 = 20; v = 4/pi^2 (atan(1) - atan(2))^2
    a, b = _t([0, 0, 4, 2]), _t([0, 0, 2, 2])
    v = 4 / math.pi**2 * (math.atan(1.0) - math.atan(2.0)) ** 2
    alpha = v / ((1 - 0.5) + v)
    assert paired_ciou(a, b).item() == pytest.approx(0.5 - 1 / 20 - alpha * v, abs=1e-7)
    assert paired_ciou(b, a).item() == pytest.approx(0.5 - 1 / 20 - alpha * v, abs=1e-7)  # symmetric
    # disjoint unit squares: IoU 0; centres 2 apart: rho^2 = 4; enclosing 3x1: c^2 = 10
    assert paired_ciou(_t([0, 0, 1, 1]), _t([2, 0, 3, 1])).item() == pytest.approx(-0.4, abs=1e-7)
    # identical boxes
    assert paired_ciou(_t([1, 2, 5, 9]), _t([1, 2, 5, 9])).item() == pytest.approx(1.0, abs=1e-6)


def test_iou_broadcasts_and_agrees_with_torchvision():
    g = torch.Generator().manual_seed(0)
    xy = torch.rand(7, 2, generator=g, dtype=torch.float64) * 50
    a = torch.cat([xy, xy + 1 + torch.rand(7, 2, generator=g, dtype=torch.float64) * 30], 1)
    xy = torch.rand(5, 2, generator=g, dtype=torch.float64) * 50
    b = torch.cat([xy, xy + 1 + torch.rand(5, 2, generator=g, dtype=torch.float64) * 30], 1)
    assert torch.allclose(paired_iou(a[:, None], b[None], eps=0), box_iou(a, b))
    assert torch.allclose(paired_ciou(a[:, None], b[None], eps=0), complete_box_iou(a, b, eps=0), atol=1e-9)


def test_ciou_gradient_is_finite_for_degenerate_targets():
    pred = torch.tensor([[1.0, 1.0, 4.0, 5.0]], requires_grad=True)
    (1 - paired_ciou(pred, torch.zeros(1, 4))).sum().backward()
    assert torch.isfinite(pred.grad).all()


# ------------------------------------------------------------------------------------------------------------ DFL
def test_dfl_hand_cases():
    # one distribution for every side: p = (1/5, 2/5, 1/5, 1/5) over bins 0..3
    logits = torch.tensor([0.0, math.log(2.0), 0.0, 0.0]).expand(1, 4, 4)
    nll = [math.log(5), math.log(5 / 2), math.log(5), math.log(5)]  # -log p(bin)
    # y = 1.25: 0.75 on bin 1, 0.25 on bin 2; y = 2: all on bin 2; y = 0: bin 0; y = 0.5: half bin 0, half bin 1
    per_side = [0.75 * nll[1] + 0.25 * nll[2], nll[2], nll[0], 0.5 * nll[0] + 0.5 * nll[1]]
    got = dfl_loss(logits, torch.tensor([[1.25, 2.0, 0.0, 0.5]]))
    assert got.item() == pytest.approx(sum(per_side) / 4, abs=1e-6)
    # the clamped maximum 3 - 0.01: 0.01 on bin 2, 0.99 on bin 3
    got = dfl_loss(logits, torch.full((1, 4), 2.99))
    assert got.item() == pytest.approx(0.01 * nll[2] + 0.99 * nll[3], abs=1e-6)


def test_side_distances_and_decoding():
    logits = torch.tensor([0.0, math.log(2.0), 0.0, 0.0]).repeat(4)[None, None]  # [1, 1, 16]
    # mean of (1/5, 2/5, 1/5, 1/5) over bins 0..3: 0.4 + 0.4 + 0.6 = 1.4 strides
    assert torch.allclose(side_distances(logits, 4), torch.full((1, 1, 4), 1.4))
    points, strides = make_anchors([(2, 3)], [8], device=torch.device("cpu"), dtype=torch.float32)
    assert points.tolist() == [[4, 4], [12, 4], [20, 4], [4, 12], [12, 12], [20, 12]]
    assert strides.tolist() == [8] * 6
    box = decode_boxes(logits, points[1:2], strides[1:2], 4)  # anchor (12, 4), 1.4 * 8 = 11.2 px each side
    assert torch.allclose(box, torch.tensor([[[0.8, -7.2, 23.2, 15.2]]]), atol=1e-5)


# ------------------------------------------------------------------------------------------------------------ assigner
def _row_anchors():
    return torch.tensor([[4.0, 4.0], [12.0, 4.0], [20.0, 4.0], [28.0, 4.0]])  # one row of stride-8 cells


def test_assigner_single_box_by_hand():
    # GT (0, 0, 16, 8), class 1: anchors 0 and 1 lie inside, 2 and 3 do not.
    # anchor 0 predicts the GT exactly (IoU 1) with p = 0.25; anchor 1 predicts (0, 0, 8, 8) (IoU 64/128) with p = 0.64
    # t = p^0.5 * IoU^6: t0 = 0.5, t1 = 0.8 / 64 = 0.0125
    scores = torch.tensor([[[0.0, 0.25], [0.0, 0.64], [0.9, 0.9], [0.9, 0.9]]])
    boxes = torch.tensor([[[0.0, 0, 16, 8], [0, 0, 8, 8], [16, 0, 24, 8], [24, 0, 32, 8]]])
    gt = {
        "gt_labels": torch.tensor([[1]]),
        "gt_boxes": torch.tensor([[[0.0, 0, 16, 8]]]),
        "gt_valid": torch.tensor([[True]]),
    }
    t = task_aligned_assign(scores, boxes, _row_anchors(), **gt, topk=2, alpha=0.5, beta=6.0, iou="iou")
    assert t.foreground.tolist() == [[True, True, False, False]]
    assert t.labels.tolist() == [[1, 1, 0, 0]]
    # t_hat = t / max t * max IoU = (1, 0.0125 / 0.5)
    expected = torch.tensor([[[0.0, 1.0], [0.0, 0.025], [0.0, 0.0], [0.0, 0.0]]])
    assert torch.allclose(t.scores, expected, atol=1e-6)
    assert t.boxes[0, :2].tolist() == [[0, 0, 16, 8]] * 2 and t.boxes[0, 2:].abs().sum() == 0
    # top-1: only the best-aligned anchor
    t = task_aligned_assign(scores, boxes, _row_anchors(), **gt, topk=1, alpha=0.5, beta=6.0, iou="iou")
    assert t.foreground.tolist() == [[True, False, False, False]]
    assert torch.allclose(t.scores[0, 0], torch.tensor([0.0, 1.0]))


def test_assigner_conflict_goes_to_highest_iou_and_padding_is_ignored():
    # A = (0, 0, 16, 8) class 0 holds anchors 0, 1; B = (8, 0, 24, 8) class 1 holds anchors 1, 2.
    # Predictions: anchor 0 = A (IoU_A 1), anchor 1 = B (IoU_A 64/192 = 1/3, IoU_B 1), anchor 2 = (16, 0, 24, 8)
    # (IoU_B 0.5); all probabilities 0.5. Anchor 1 is claimed by both and goes to B (IoU 1 > 1/3).
    scores = torch.full((1, 4, 2), 0.5)
    boxes = torch.tensor([[[0.0, 0, 16, 8], [8, 0, 24, 8], [16, 0, 24, 8], [24, 0, 32, 8]]])
    gt_boxes = torch.tensor([[[0.0, 0, 16, 8], [8, 0, 24, 8], [24, 0, 32, 8]]])  # the third row is padding
    t = task_aligned_assign(
        scores, boxes, _row_anchors(), torch.tensor([[0, 1, 0]]), gt_boxes, torch.tensor([[True, True, False]]),
        topk=3, iou="iou",
    )  # fmt: skip
    assert t.foreground.tolist() == [[True, True, True, False]]
    assert t.labels.tolist() == [[0, 1, 1, 0]]
    assert t.gt_index.tolist() == [[0, 1, 1, 0]]
    # A keeps anchor 0 only: t_hat 1. B: t1 = 0.5^0.5 * 1, t2 = 0.5^0.5 * 0.5^6 -> t_hat (1, 0.5^6) (max IoU 1)
    expected = torch.tensor([[[1.0, 0.0], [0.0, 1.0], [0.0, 0.5**6], [0.0, 0.0]]])
    assert torch.allclose(t.scores, expected, atol=1e-6)


@pytest.mark.parametrize("iou", ["ciou", "iou"])
def test_candidate_overlaps_sparse_equals_dense_and_torchvision(iou: str):
    # the CPU computes only the candidate pairs; the result must be the dense computation masked, whose values
    # torchvision's complete_box_iou / box_iou give
    g = torch.Generator().manual_seed(3)
    B, M, N = 2, 5, 40
    gt = torch.rand(B, M, 2, generator=g) * 50
    gt = torch.cat([gt, gt + 5 + torch.rand(B, M, 2, generator=g) * 30], -1)
    near = torch.randint(0, M, (B, N), generator=g)  # each prediction jitters one of the boxes
    pred = gt.gather(1, near[..., None].expand(B, N, 4)) + torch.randn(B, N, 4, generator=g) * 3
    pred[..., 2:] = torch.maximum(pred[..., 2:], pred[..., :2] + 1)
    candidate = torch.rand(B, M, N, generator=g) < 0.5
    sparse = candidate_overlaps(gt, pred, candidate, iou=iou, sparse=True)
    dense = candidate_overlaps(gt, pred, candidate, iou=iou, sparse=False)
    torch.testing.assert_close(sparse, dense, rtol=0, atol=1e-6)
    ref_fn = complete_box_iou if iou == "ciou" else box_iou
    ref = torch.stack([ref_fn(gt[b], pred[b]) for b in range(B)]).clamp(min=0) * candidate
    torch.testing.assert_close(sparse, ref, rtol=1e-4, atol=1e-5)
    assert int((sparse > 0).sum()) > 10 and not bool(sparse[~candidate].any())


def test_assigner_without_ground_truth():
    t = task_aligned_assign(
        torch.rand(2, 4, 3), torch.rand(2, 4, 4), _row_anchors(), torch.zeros(2, 0, dtype=torch.long),
        torch.zeros(2, 0, 4), torch.zeros(2, 0, dtype=torch.bool),
    )  # fmt: skip
    assert not t.foreground.any() and t.scores.sum() == 0


# ------------------------------------------------------------------------------------------------------------ loss
def test_perfect_prediction_has_no_box_loss():
    # one level 1x4 at stride 8, R = 4 bins; GT (0, 0, 16, 8) seen from anchor (4, 4): sides 4, 4, 12, 4 px
    # = 0.5, 0.5, 1.5, 0.5 strides: half-and-half between two bins each
    points, strides = make_anchors([(1, 4)], [8], device=torch.device("cpu"), dtype=torch.float32)
    logits = torch.full((1, 4, 4, 4), -30.0)
    for side, (lo, hi) in enumerate([(0, 1), (0, 1), (1, 2), (0, 1)]):
        logits[0, 0, side, lo] = logits[0, 0, side, hi] = 10.0  # mean exactly halfway
    cls = torch.full((1, 4, 2), -30.0)
    cls[0, 0, 1] = 30.0
    losses, targets = yolo_loss(
        logits.flatten(2), cls, points, strides, torch.tensor([[1]]), torch.tensor([[[0.0, 0, 16, 8]]]),
        torch.tensor([[True]]), reg_max=4,
    )  # fmt: skip
    assert targets.foreground.tolist() == [[True, True, False, False]]
    # Anchor 0: CIoU 1 and p = 1, so t = 1 and t_hat = 1. Anchor 1 (uniform sides, 1.5 strides: box (0, -8, 24, 16),
    # CIoU ~0.2) has p = sigmoid(-30) ~ 1e-13: t_hat ~ 1e-11, nothing. Sum of the soft targets: 1 (the divisor).
    assert targets.scores[0, 0].tolist() == pytest.approx([0.0, 1.0], abs=1e-6)
    assert targets.scores[0, 1:].abs().max().item() < 1e-6
    assert losses["box"].item() == pytest.approx(0.0, abs=1e-5)
    # DFL of anchor 0: each side's target is the midpoint of the two bins holding p = 1/2 each (the other bins
    # e^-40), so -(1/2 log 1/2 + 1/2 log 1/2) = ln 2 per side, ln 2 averaged over the sides; weight 1 / sum 1, gain 1.5
    assert losses["dfl"].item() == pytest.approx(1.5 * math.log(2), abs=1e-4)
    # classification: anchor 0 predicts its class with logit 30 for target 1, everything else logit -30 for ~0:
    # BCE ~ e^-30 each
    assert losses["cls"].item() == pytest.approx(0.0, abs=1e-6)


def _ciou_by_hand(p: tuple[float, ...], g: tuple[float, ...]) -> float:
    """CIoU = IoU - rho^2 / c^2 - alpha v (Zheng et al. 2020), written out for two axis-aligned boxes."""
    iw = max(0.0, min(p[2], g[2]) - max(p[0], g[0]))
    ih = max(0.0, min(p[3], g[3]) - max(p[1], g[1]))
    wp, hp, wg, hg = p[2] - p[0], p[3] - p[1], g[2] - g[0], g[3] - g[1]
    iou = iw * ih / (wp * hp + wg * hg - iw * ih)
    rho2 = ((p[0] + p[2]) / 2 - (g[0] + g[2]) / 2) ** 2 + ((p[1] + p[3]) / 2 - (g[1] + g[3]) / 2) ** 2
    c2 = (max(p[2], g[2]) - min(p[0], g[0])) ** 2 + (max(p[3], g[3]) - min(p[1], g[1])) ** 2
    v = 4 / math.pi**2 * (math.atan(wg / hg) - math.atan(wp / hp)) ** 2
    return iou - rho2 / c2 - v / (1 - iou + v) * v


def test_imperfect_box_losses_by_hand():
    # one level 1x4 at stride 8 (anchors x = 4, 12, 20, 28; y = 4), R = 4 bins, gains (7.5, 0.5, 1.5).
    # GT A = (0, 0, 16, 8) class 1 (candidates: anchors 0, 1); GT B = (16, 0, 32, 8) class 0 (anchors 2, 3).
    # Anchor 0 predicts A exactly (sides 0.5, 0.5, 1.5, 0.5 strides as 50/50 bin pairs), class 1 with logit 30.
    # Anchor 2 predicts sides l = t = b = 0.5 (50/50 pairs) and r = 1.25 (p = 3/4 on bin 1, 1/4 on bin 2):
    # box (20 - 4, 4 - 4, 20 + 10, 4 + 4) = (16, 0, 30, 8), class 0 with logit 30. Anchors 1 and 3 predict logit -30.
    points, strides = make_anchors([(1, 4)], [8], device=torch.device("cpu"), dtype=torch.float32)
    logits = torch.full((1, 4, 4, 4), -30.0)
    for side, (lo, hi) in enumerate([(0, 1), (0, 1), (1, 2), (0, 1)]):
        logits[0, 0, side, lo] = logits[0, 0, side, hi] = 10.0
    for side in (0, 1, 3):
        logits[0, 2, side, 0] = logits[0, 2, side, 1] = 10.0
    logits[0, 2, 2, 1], logits[0, 2, 2, 2] = 10.0 + math.log(3.0), 10.0
    cls = torch.full((1, 4, 2), -30.0)
    cls[0, 0, 1] = cls[0, 2, 0] = 30.0
    losses, targets = yolo_loss(
        logits.flatten(2), cls, points, strides, torch.tensor([[1, 0]]),
        torch.tensor([[[0.0, 0, 16, 8], [16, 0, 32, 8]]]), torch.tensor([[True, True]]), reg_max=4,
    )  # fmt: skip
    assert decode_boxes(logits.flatten(2), points, strides, 4)[0, 2].tolist() == pytest.approx([16, 0, 30, 8], abs=1e-4)
    # assignment (alignment by CIoU, p = 1): A -> anchor 0 with t_hat = CIoU 1; B -> anchor 2 with t_hat = its CIoU c
    c = _ciou_by_hand((16, 0, 30, 8), (16, 0, 32, 8))  # IoU 7/8, rho^2 = 1, c^2 = 320, aspect 2 vs 1.75
    assert 0.85 < c < 0.875
    assert targets.labels[0, [0, 2]].tolist() == [1, 0]
    assert targets.scores[0, 0].tolist() == pytest.approx([0.0, 1.0], abs=1e-6)
    assert targets.scores[0, 2].tolist() == pytest.approx([c, 0.0], abs=1e-6)
    norm = 1 + c  # the sum of the soft targets (> 1, so the division shows)
    # box: gain * sum over positives of (1 - CIoU) * t_hat / norm; anchor 0 contributes 0
    assert losses["box"].item() == pytest.approx(7.5 * (1 - c) * c / norm, abs=1e-4)
    # DFL: anchor 0 ln 2 (every side a 50/50 midpoint). Anchor 2's targets l = t = b = 0.5 (ln 2 each) and
    # r = (32 - 20) / 8 = 1.5: 1/2 (-ln 3/4) + 1/2 (-ln 1/4); mean over the 4 sides
    dfl_2 = (3 * math.log(2) + 0.5 * math.log(4 / 3) + 0.5 * math.log(4)) / 4
    assert losses["dfl"].item() == pytest.approx(1.5 * (math.log(2) * 1 + dfl_2 * c) / norm, abs=1e-4)
    # classification: BCE(logit 30, target 1) ~ 0; BCE(logit 30, target c) = 30 - 30 c; every other entry ~ 0
    assert losses["cls"].item() == pytest.approx(0.5 * (30 - 30 * c) / norm, abs=1e-4)
