"""vision.ops NMS: exact agreement with torchvision's CPU ``nms`` per (image, class), on every backend.

The reference path is checked on >10k seeded problems, the Triton kernel (through Triton's interpreter on the CPU)
on a smaller set; CUDA-only properties (no host sync, CUDA-graph capture) run when a GPU is present.
"""

from __future__ import annotations

import math
import subprocess
import sys
import textwrap
import warnings

import pytest
import torch
import torchvision

import vision.ops._nms_reference as nms_reference
from vision.ops import batched_nms, multiclass_nms, nms
from vision.ops._nms_reference import threshold_for_dtype

pytestmark = pytest.mark.usefixtures("one_thread")

THRESHOLDS = (0.0, 1e-6, 1e-3, 0.1, 0.2, 0.25, 1 / 3, 0.5, 0.6, 0.7, 0.8, 0.9, 0.99, 1.0)
CUDA = torch.cuda.is_available()


def _triton_installed() -> bool:
    try:
        import triton  # noqa: F401
    except ImportError:
        return False
    return True


needs_triton = pytest.mark.skipif(not _triton_installed(), reason="triton is not installed")


def _boundary_problem(n: int, iou: float, seed: int) -> tuple[torch.Tensor, torch.Tensor]:
    """Random boxes where the last box overlaps the first with IoU just above ``iou`` (torchvision's test idea)."""
    g = torch.Generator().manual_seed(seed)
    boxes = torch.rand(n, 4, generator=g) * 100
    boxes[:, 2:] += boxes[:, :2]
    boxes[-1] = boxes[0]
    x0, _, x1, _ = boxes[0].tolist()
    target = iou + 1e-5
    boxes[-1, 2] += (x1 - x0) * (1 - target) / target
    return boxes, torch.rand(n, generator=g)


# ---------------------------------------------------------------------------------------------------------------------
# reference path against torchvision, many problems batched into few calls
# ---------------------------------------------------------------------------------------------------------------------


@pytest.mark.parametrize("iou", THRESHOLDS)
def test_batched_reference_matches_torchvision_on_random_problems(
    iou: float, nms_helpers: type, monkeypatch: pytest.MonkeyPatch
) -> None:
    # 7 kinds x 5 sizes x 24 problems = 840 problems per threshold (11,760 in all), decided in one call by the sparse
    # path (no group is handed to torchvision wholesale)
    monkeypatch.setattr(nms_reference, "_MAX_LOOPED_SEGMENTS", 0)
    parts = [b.flat() for b in nms_helpers.all_cases(seed=round(iou * 1e6), sizes=(1, 4, 12, 30, 70), per_combo=24)]
    boxes = torch.cat([p[0] for p in parts])
    scores = torch.cat([p[1] for p in parts])
    groups = torch.cat([p[2] + 1000 * i for i, p in enumerate(parts)])
    assert groups.unique().numel() == 840
    kept = batched_nms(boxes, scores, groups, iou, backend="reference")
    expected = nms_helpers.tv_nms_per_group(boxes, scores, groups, iou)
    # same set, and inside every problem torchvision's order (decreasing score, ties by index)
    assert torch.equal(nms_helpers.group_major(kept, groups), expected)
    # globally: decreasing score, ties by index
    s = scores[kept]
    assert bool(((s[:-1] > s[1:]) | ((s[:-1] == s[1:]) & (kept[:-1] < kept[1:]))).all())


@pytest.mark.parametrize("iou", [0.2, 0.5, 0.8])
@pytest.mark.parametrize("seed", list(range(10)))
def test_nms_boundary_pair_matches_torchvision(iou: float, seed: int) -> None:
    boxes, scores = _boundary_problem(1000, iou, seed)
    assert torch.equal(nms(boxes, scores, iou), torchvision.ops.nms(boxes, scores, iou))


@pytest.mark.parametrize("kind", ["uniform", "clustered", "multiscale", "grid"])
@pytest.mark.parametrize("iou", [0.0, 0.3, 0.5, 0.7])
def test_single_large_group_uses_sparse_path_and_matches(kind: str, iou: float, nms_helpers: type) -> None:
    batch = nms_helpers.make_cases(kind, 1, 5000, torch.Generator().manual_seed(7))
    boxes, scores = batch.boxes[0] * 10, batch.scores[0]
    assert boxes.shape[0] > nms_reference._SMALL_SEGMENT  # not handed to torchvision wholesale
    assert torch.equal(nms(boxes, scores, iou, backend="reference"), torchvision.ops.nms(boxes, scores, iou))


def test_mixed_small_and_large_groups(nms_helpers: type) -> None:
    # small groups go to torchvision one by one, large ones through the sparse path, in the same call
    g = torch.Generator().manual_seed(4)
    parts = [nms_helpers.make_cases(k, 1, n, g) for k, n in (("clustered", 300), ("uniform", 6000), ("grid", 40))]
    boxes = torch.cat([p.boxes[0] * 10 for p in parts])
    scores = torch.cat([p.scores[0] for p in parts])
    groups = torch.cat([torch.full((p.scores.shape[1],), i) for i, p in enumerate(parts)])
    perm = torch.randperm(groups.numel(), generator=g)
    boxes, scores, groups = boxes[perm], scores[perm], groups[perm]
    for iou in (0.3, 0.6):
        kept = batched_nms(boxes, scores, groups, iou, backend="reference")
        expected = nms_helpers.tv_nms_per_group(boxes, scores, groups, iou)
        assert torch.equal(nms_helpers.group_major(kept, groups), expected)


def test_sparse_path_on_small_groups_too(nms_helpers: type, monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setattr(nms_reference, "_SMALL_SEGMENT", 0)
    for batch in nms_helpers.all_cases(seed=11, sizes=(2, 9, 40), per_combo=6):
        for iou in (0.0, 0.5, 0.9):
            for b, s in zip(batch.boxes, batch.scores):
                assert torch.equal(nms(b, s, iou, backend="reference"), torchvision.ops.nms(b, s, iou)), batch.kind


def test_long_suppression_chain_falls_back_exactly() -> None:
    # boxes sliding by a small step with decreasing scores: suppression alternates along a 5000-long chain
    n = 5000
    x = torch.arange(n, dtype=torch.float32) * 0.3
    boxes = torch.stack([x, torch.zeros(n), x + 1, torch.ones(n)], 1)
    scores = torch.linspace(1, 0, n)
    assert torch.equal(nms(boxes, scores, 0.5, backend="reference"), torchvision.ops.nms(boxes, scores, 0.5))


def test_threshold_compared_in_float64_like_torchvision_cpu() -> None:
    # IoU = fl32(60 / 100) = 0.6000000238 > 0.6 (float64), but == float32(0.6): the CPU build suppresses
    boxes = torch.tensor([[0.0, 0.0, 10.0, 10.0], [0.0, 0.0, 10.0, 6.0]])
    scores = torch.tensor([0.9, 0.8])
    assert torchvision.ops.nms(boxes, scores, 0.6).tolist() == [0]
    assert nms(boxes, scores, 0.6, backend="reference").tolist() == [0]
    assert threshold_for_dtype(0.6, torch.float32) < 0.6 < float(torch.tensor(0.6, dtype=torch.float32))
    assert threshold_for_dtype(0.5, torch.float32) == 0.5
    assert threshold_for_dtype(0.6, torch.float64) == 0.6


@pytest.mark.parametrize("dtype", [torch.float16, torch.bfloat16])
def test_half_inputs_equal_float32_of_the_same_values(dtype: torch.dtype, nms_helpers: type) -> None:
    for batch in nms_helpers.all_cases(seed=3, sizes=(25,), per_combo=8):
        boxes, scores, groups = batch.flat()
        b16, s16 = boxes.to(dtype), scores.to(dtype)
        expected = batched_nms(b16.float(), s16.float(), groups, 0.5)
        assert torch.equal(batched_nms(b16, s16, groups, 0.5), expected)
    # torchvision's float16 regression boxes
    boxes = torch.tensor([[285.3538, 185.5758, 1193.5110, 851.4551], [285.1472, 188.7374, 1192.4984, 851.0669],
                          [279.2440, 197.9812, 1189.4746, 849.2019]])  # fmt: skip
    scores = torch.tensor([0.6370, 0.7569, 0.3966])
    assert torch.equal(nms(boxes.to(dtype), scores.to(dtype), 0.2), nms(boxes, scores, 0.2))


def test_float64_is_computed_in_float64() -> None:
    boxes = torch.tensor([[0.0, 0.0, 10.0, 10.0], [0.0, 0.0, 10.0, 6.0]], dtype=torch.float64)
    scores = torch.tensor([0.9, 0.8], dtype=torch.float64)
    assert nms(boxes, scores, 0.6).tolist() == torchvision.ops.nms(boxes, scores, 0.6).tolist() == [0, 1]
    boxes, scores = _boundary_problem(3000, 0.5, 0)
    b64, s64 = boxes.double(), scores.double()
    assert torch.equal(nms(b64, s64, 0.5), torchvision.ops.nms(b64, s64, 0.5))


def test_batched_nms_many_overlapping_groups_and_max_det(nms_helpers: type) -> None:
    # torchvision's batched test: near-identical boxes, 4 classes, high threshold
    g = torch.Generator().manual_seed(0)
    boxes = torch.cat([torch.rand(1000, 2, generator=g), torch.rand(1000, 2, generator=g) + 10], 1)
    scores = torch.rand(1000, generator=g)
    idxs = torch.randint(0, 4, (1000,), generator=g)
    kept = batched_nms(boxes, scores, idxs, 0.9)
    assert torch.equal(nms_helpers.group_major(kept, idxs), nms_helpers.tv_nms_per_group(boxes, scores, idxs, 0.9))
    assert torch.equal(torchvision.ops.batched_nms(boxes, scores, idxs, 0.9).sort().values, kept.sort().values)
    assert torch.equal(batched_nms(boxes, scores, idxs, 0.9, max_det=7), kept[:7])
    assert batched_nms(boxes, scores, idxs, 0.9, max_det=0).numel() == 0


def test_empty_inputs() -> None:
    for backend in ("reference", "auto"):
        assert nms(torch.empty(0, 4), torch.empty(0), 0.5, backend=backend).dtype == torch.int64
        assert batched_nms(torch.empty(0, 4), torch.empty(0), torch.empty(0, dtype=torch.int64), 0.5).numel() == 0
    out = multiclass_nms(torch.empty(2, 0, 4), torch.empty(2, 0, 3), score_threshold=0.1, iou_threshold=0.5, max_det=5)
    boxes, scores, labels, counts = out
    assert boxes.shape == (2, 5, 4) and scores.shape == (2, 5) and counts.tolist() == [0, 0]
    assert bool((labels == -1).all()) and bool((boxes == 0).all())
    boxes, *_ = multiclass_nms(
        torch.empty(0, 4, 4), torch.empty(0, 4, 3), score_threshold=0, iou_threshold=0.5, max_det=2
    )
    assert boxes.shape == (0, 2, 4)


# ---------------------------------------------------------------------------------------------------------------------
# semantics and errors
# ---------------------------------------------------------------------------------------------------------------------


def test_zero_area_boxes_never_suppress_or_get_suppressed() -> None:
    boxes = torch.tensor([[5.0, 5.0, 5.0, 5.0], [5.0, 5.0, 5.0, 5.0], [0.0, 0.0, 10.0, 10.0], [5.0, 0.0, 5.0, 10.0]])
    scores = torch.tensor([0.9, 0.8, 0.7, 0.6])
    for iou in (0.0, 0.5):
        assert nms(boxes, scores, iou).tolist() == torchvision.ops.nms(boxes, scores, iou).tolist() == [0, 1, 2, 3]


def test_nan_scores_are_dropped() -> None:
    boxes = torch.tensor([[0.0, 0.0, 10.0, 10.0], [0.0, 0.0, 10.0, 10.0], [20.0, 20.0, 30.0, 30.0]])
    scores = torch.tensor([float("nan"), 0.5, 0.4])
    assert nms(boxes, scores, 0.5).tolist() == [1, 2]
    # torchvision sorts NaN first: the NaN box is kept and suppresses box 1 (documented difference)
    assert torchvision.ops.nms(boxes, scores, 0.5).tolist() == [0, 2]
    assert nms(boxes, torch.full((3,), float("nan")), 0.5).numel() == 0
    assert batched_nms(boxes, scores, torch.tensor([0, 1, 1]), 0.5).tolist() == [1, 2]


@pytest.mark.parametrize(
    ("box", "message"),
    [
        ([10.0, 0.0, 5.0, 10.0], r"boxes\[2\] = \(10, 0, 5, 10\) has x1 > x2"),
        ([0.0, 10.0, 5.0, 3.0], r"boxes\[2\] = \(0, 10, 5, 3\) has y1 > y2"),
        ([0.0, float("nan"), 5.0, 3.0], r"boxes\[2\] .* has a NaN coordinate"),
    ],
)
def test_invalid_boxes_raise_naming_the_box(box: list[float], message: str) -> None:
    boxes = torch.tensor([[0.0, 0.0, 1.0, 1.0], [0.0, 0.0, 2.0, 2.0], box])
    with pytest.raises(ValueError, match=message):
        nms(boxes, torch.rand(3), 0.5)
    with pytest.raises(ValueError, match=message):
        batched_nms(boxes, torch.rand(3), torch.zeros(3, dtype=torch.int64), 0.5)


def _mc(boxes: torch.Tensor, scores: torch.Tensor, **kw: object) -> tuple[torch.Tensor, ...]:
    return multiclass_nms(boxes, scores, **{"score_threshold": 0.1, "iou_threshold": 0.5, "max_det": 3, **kw})


_R = torch.rand
_ZEROS3 = torch.zeros(3, dtype=torch.int64)


@pytest.mark.parametrize(
    ("call", "error", "message"),
    [
        (lambda: nms(_R(4), _R(3), 0.5), ValueError, r"boxes must have shape \[N, 4\].*\[4\]"),
        (lambda: nms(_R(3, 5), _R(3), 0.5), ValueError, r"boxes must have shape \[N, 4\].*\[3, 5\]"),
        (lambda: nms(_R(3, 4), _R(3, 2), 0.5), ValueError, r"scores must have shape \[N\] = \[3\]"),
        (lambda: nms(_R(3, 4), _R(4), 0.5), ValueError, r"scores must have shape \[N\] = \[3\].*\[4\]"),
        (lambda: nms(torch.ones(3, 4, dtype=torch.int64), _R(3), 0.5), TypeError, "boxes must be a floating"),
        (lambda: nms([[0, 0, 1, 1]], _R(1), 0.5), TypeError, "boxes must be a torch.Tensor"),
        (lambda: nms(_R(3, 4), _R(3), float("nan")), ValueError, "iou_threshold must not be NaN"),
        (lambda: nms(_R(3, 4), _R(3), 0.5, backend="cuda"), ValueError, "backend must be one of"),
        (lambda: batched_nms(_R(3, 4), _R(3), _ZEROS3[:2], 0.5), ValueError, r"idxs must have shape \[N\] = \[3\]"),
        (lambda: batched_nms(_R(3, 4), _R(3), _ZEROS3.float(), 0.5), TypeError, "idxs must be an integer"),
        (lambda: batched_nms(_R(3, 4), _R(3), _ZEROS3, 0.5, max_det=-1), ValueError, "max_det must be >= 0"),
        (lambda: _mc(_R(2, 5, 4), _R(2, 5)), ValueError, r"scores must have shape \[B, N, C\]"),
        (lambda: _mc(_R(2, 6, 4), _R(2, 5, 3)), ValueError, r"boxes must have shape \[B, N, 4\] = \[2, 5, 4\] or"),
        (lambda: _mc(_R(2, 5, 2, 4), _R(2, 5, 3)), ValueError, r"\[B, N, C, 4\] = \[2, 5, 3, 4\].*\[2, 5, 2, 4\]"),
        (lambda: _mc(_R(2, 5, 4), _R(2, 5, 3), pre_nms_topk=0), ValueError, "pre_nms_topk must be >= 1"),
        (lambda: _mc(_R(2, 5, 4), _R(2, 5, 3), max_det=2.5), TypeError, "max_det must be an int"),
        (lambda: _mc(_R(2, 5, 4), _R(2, 5, 3), score_threshold="0.1"), TypeError, "score_threshold must be a float"),
    ],
)
def test_argument_errors_name_the_argument(call, error: type[Exception], message: str) -> None:
    with pytest.raises(error, match=message):
        call()


def test_inputs_that_require_grad() -> None:
    # detector outputs often carry autograd history: NMS only picks indices, gathered outputs keep the graph
    g = torch.Generator().manual_seed(0)
    raw = (torch.rand(2, 30, 4, generator=g) * 50).requires_grad_()
    boxes = torch.cat([raw[..., :2], raw[..., :2] + raw[..., 2:] + 1], -1)
    scores = torch.rand(2, 30, 3, generator=g).requires_grad_()
    with warnings.catch_warnings():
        warnings.simplefilter("error")  # e.g. "converting a tensor with requires_grad=True to a scalar"
        assert torch.equal(nms(boxes[0], scores[0, :, 0], 0.5), nms(boxes[0].detach(), scores[0, :, 0].detach(), 0.5))
        big = (torch.rand(5000, 4, generator=g) * 100).cumsum(1).requires_grad_()  # x1 <= y1 <= x2 <= y2
        assert nms(big, torch.rand(5000, generator=g), 0.5).numel() > 0
        for backend in ("reference", *(("triton",) if _triton_installed() else ())):
            out_boxes, out_scores, *_ = multiclass_nms(
                boxes, scores, score_threshold=0.1, iou_threshold=0.5, max_det=8, backend=backend
            )
            (out_boxes.sum() + out_scores.sum()).backward()
            assert raw.grad is not None and scores.grad is not None
            raw.grad, scores.grad = None, None


def test_more_than_400k_boxes() -> None:
    n, side = 410_000, 641
    i = torch.arange(n)
    xy = torch.stack([(i % side) * 20.0, (i // side) * 20.0], 1)
    boxes = torch.cat([xy, xy + 10], 1)
    scores = torch.rand(n, generator=torch.Generator().manual_seed(0))
    twin = torch.arange(0, n - 1, 7)
    boxes[twin + 1] = boxes[twin] + 0.5  # IoU 0.82 with its twin, far from everything else
    loser = torch.where(scores[twin] >= scores[twin + 1], twin + 1, twin)
    expected = torch.ones(n, dtype=torch.bool)
    expected[loser] = False
    kept = nms(boxes, scores, 0.5, backend="reference")
    assert kept.numel() == n - twin.numel()
    assert torch.equal(kept.sort().values, expected.nonzero().squeeze(1))
    s = scores[kept]
    assert bool((s[:-1] >= s[1:]).all())
    # the same problem split into 3 groups that never share a twin pair: nothing is suppressed
    assert batched_nms(boxes, scores, i % 3, 0.5, backend="reference").numel() == n


def test_import_is_cheap_and_lazy() -> None:
    code = textwrap.dedent(
        """
        import sys
        import vision.ops
        print("vision.ops._nms_triton" in sys.modules)
        """
    )
    out = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, check=True)
    assert out.stdout.strip() == "False"


# ---------------------------------------------------------------------------------------------------------------------
# multiclass_nms
# ---------------------------------------------------------------------------------------------------------------------


def _detector_batch(
    B: int, N: int, C: int, seed: int, class_specific: bool = False
) -> tuple[torch.Tensor, torch.Tensor]:
    g = torch.Generator().manual_seed(seed)
    centre = torch.rand(B, 6, 2, generator=g) * 200
    size = 10 + torch.rand(B, 6, 2, generator=g) * 60
    obj = torch.randint(0, 6, (B, N), generator=g).unsqueeze(-1).expand(B, N, 2)
    wh = size.gather(1, obj) * torch.exp(torch.randn(B, N, 2, generator=g) * 0.2)
    ctr = centre.gather(1, obj) + torch.randn(B, N, 2, generator=g) * wh * 0.2
    boxes = torch.cat([ctr - wh / 2, ctr + wh / 2], -1)
    if class_specific:
        boxes = boxes.unsqueeze(2) + torch.randn(B, N, C, 4, generator=g) * 2
    scores = torch.rand(B, N, C, generator=g) ** 2
    return boxes, scores


def _check_multiclass(out: tuple[torch.Tensor, ...], boxes, scores, expected: list[torch.Tensor], max_det: int) -> None:
    out_boxes, out_scores, labels, counts, indices = out
    B, _, C = scores.shape
    assert out_boxes.shape == (B, max_det, 4) and out_boxes.dtype == boxes.dtype
    assert out_scores.shape == (B, max_det) and out_scores.dtype == scores.dtype
    assert labels.dtype == counts.dtype == indices.dtype == torch.int64
    for b, flat in enumerate(expected):
        k = int(counts[b])
        assert k == flat.numel()
        n, c = flat // C, flat % C
        assert torch.equal(indices[b, :k].cpu(), n) and torch.equal(labels[b, :k].cpu(), c)
        exp_boxes = boxes[b, n] if boxes.dim() == 3 else boxes[b, n, c]
        torch.testing.assert_close(out_boxes[b, :k].cpu(), exp_boxes.cpu(), rtol=0, atol=0, equal_nan=True)
        torch.testing.assert_close(out_scores[b, :k].cpu(), scores[b, n, c].cpu(), rtol=0, atol=0, equal_nan=True)
        assert bool((labels[b, k:] == -1).all()) and bool((indices[b, k:] == -1).all())
        assert bool((out_scores[b, k:] == 0).all()) and bool((out_boxes[b, k:] == 0).all())


MULTICLASS_SETTINGS = [
    # (B, N, C, class_specific, score_threshold, iou, max_det, pre_nms_topk)
    (3, 60, 5, False, 0.2, 0.5, 30, None),
    (2, 80, 4, True, 0.1, 0.6, 25, None),
    (2, 60, 3, False, 0.05, 0.45, 500, 40),  # max_det larger than any candidate count
    (2, 50, 6, True, 0.3, 0.7, 10, 25),
    (1, 40, 2, False, 0.0, 0.0, 15, None),
]


@pytest.mark.parametrize("setting", MULTICLASS_SETTINGS)
def test_multiclass_reference_matches_loop(setting: tuple, nms_helpers: type) -> None:
    B, N, C, specific, st, iou, max_det, topk = setting
    boxes, scores = _detector_batch(B, N, C, seed=B * N + C, class_specific=specific)
    scores[0, :5] = 0.5  # score ties across boxes and classes
    kw = {"score_threshold": st, "iou_threshold": iou, "max_det": max_det, "pre_nms_topk": topk}
    out = multiclass_nms(boxes, scores, return_indices=True, backend="reference", **kw)
    _check_multiclass(out, boxes, scores, nms_helpers.loop_multiclass_reference(boxes, scores, **kw), max_det)
    assert len(multiclass_nms(boxes, scores, backend="reference", **kw)) == 4


@pytest.mark.parametrize("topk", [1, 37, 100])
def test_multiclass_reference_topk_ties_at_the_cut(topk: int, nms_helpers: type) -> None:
    # scores on a coarse grid: many candidates share the k-th score, so which of them enter NMS is decided by the
    # tie rule (lower n * C + c first), as the loop reference does it with a full stable sort
    boxes, scores = _detector_batch(2, 60, 3, seed=11)
    scores = (scores * 4).round() / 4
    kw = {"score_threshold": 0.1, "iou_threshold": 0.5, "max_det": 100, "pre_nms_topk": topk}
    out = multiclass_nms(boxes, scores, return_indices=True, backend="reference", **kw)
    _check_multiclass(out, boxes, scores, nms_helpers.loop_multiclass_reference(boxes, scores, **kw), 100)


@pytest.mark.parametrize("dtype", [torch.float16, torch.bfloat16])
def test_multiclass_half_precision(dtype: torch.dtype, nms_helpers: type) -> None:
    boxes, scores = _detector_batch(2, 50, 4, seed=5)
    boxes, scores = boxes.to(dtype), scores.to(dtype)
    kw = {"score_threshold": 0.1, "iou_threshold": 0.5, "max_det": 40}
    out = multiclass_nms(boxes, scores, return_indices=True, backend="reference", **kw)
    _check_multiclass(out, boxes, scores, nms_helpers.loop_multiclass_reference(boxes, scores, **kw), 40)


def test_multiclass_score_threshold_is_exact() -> None:
    # float32(0.1) = 0.10000000149 and bfloat16(0.1) = 0.10009765625 are above 0.1, float16(0.1) = 0.0999755859 is
    # not.  `tensor > 0.1` would round the threshold to the tensor's dtype first and get float32 and bfloat16 wrong.
    boxes = torch.tensor([[[0.0, 0.0, 1.0, 1.0]]])
    for dtype, expected in ((torch.float32, 1), (torch.float16, 0), (torch.bfloat16, 1), (torch.float64, 0)):
        scores = torch.full((1, 1, 1), 0.1, dtype=dtype)
        for backend in ("reference", *(("triton",) if _triton_installed() and dtype != torch.float64 else ())):
            out = multiclass_nms(boxes, scores, score_threshold=0.1, iou_threshold=0.5, max_det=1, backend=backend)
            assert out[3].tolist() == [expected], (dtype, backend)


def test_multiclass_invalid_boxes_and_nan_scores(nms_helpers: type) -> None:
    boxes = torch.tensor([[[0.0, 0.0, 10.0, 10.0], [10.0, 0.0, 0.0, 10.0], [1.0, 1.0, 10.0, 10.0],
                           [float("nan"), 0.0, 10.0, 10.0], [0.0, 0.0, 10.0, 10.0]]])  # fmt: skip
    scores = torch.tensor([[[0.5], [0.9], [0.4], [0.8], [float("nan")]]])
    kw = {"score_threshold": 0.0, "iou_threshold": 0.5, "max_det": 5}
    for backend in ("reference", *(("triton",) if _triton_installed() else ())):
        out = multiclass_nms(boxes, scores, return_indices=True, backend=backend, **kw)
        # inverted box 1 and NaN box 3 are kept on their own score and suppress nothing; box 2 loses to box 0;
        # the NaN-scored box 4 never appears
        assert out[4][0].tolist() == [1, 3, 0, -1, -1], backend
        assert torch.equal(out[0][0, 0], boxes[0, 1])
        _check_multiclass(out, boxes, scores, nms_helpers.loop_multiclass_reference(boxes, scores, **kw), 5)


# ---------------------------------------------------------------------------------------------------------------------
# Triton kernel through the interpreter (CPU tensors)
# ---------------------------------------------------------------------------------------------------------------------


@pytest.fixture
def no_reference_path(monkeypatch: pytest.MonkeyPatch) -> None:
    """Make every reference / torchvision path raise, so a passing test proves the kernel produced the answer."""

    def boom(*args: object, **kwargs: object) -> None:
        raise AssertionError("the reference path was used")

    import vision.ops._nms_common as common

    monkeypatch.setattr(nms_reference, "keep_sorted", boom)
    monkeypatch.setattr(nms_reference, "tv_nms", boom)
    monkeypatch.setattr(common, "keep_sorted", boom)


@needs_triton
@pytest.mark.usefixtures("no_reference_path")
@pytest.mark.parametrize("iou", [0.0, 0.5, 0.7, 1.0])
def test_triton_kernel_interpreted_matches_torchvision(iou: float, nms_helpers: type) -> None:
    from vision.ops import _nms_triton

    launches = _nms_triton.launch_count()
    parts = [b.flat() for b in nms_helpers.all_cases(seed=100 + round(iou * 10), sizes=(3, 17, 90), per_combo=2)]
    boxes = torch.cat([p[0] for p in parts])
    scores = torch.cat([p[1] for p in parts])
    groups = torch.cat([p[2] + 10 * i for i, p in enumerate(parts)])  # 90-box groups span two 64-box tiles
    kept = batched_nms(boxes, scores, groups, iou, backend="triton")
    expected = nms_helpers.tv_nms_per_group(boxes, scores, groups, iou)
    assert torch.equal(nms_helpers.group_major(kept, groups), expected)
    assert _nms_triton.launch_count() == launches + 1


@needs_triton
@pytest.mark.usefixtures("no_reference_path")
def test_triton_kernel_interpreted_long_group_and_limit() -> None:
    boxes, scores = _boundary_problem(300, 0.5, 1)  # 5 tiles in one segment
    boxes[:150] = boxes[:150] / 4  # dense corner: many suppressions across tiles
    expected = torchvision.ops.nms(boxes, scores, 0.5)
    assert torch.equal(nms(boxes, scores, 0.5, backend="triton"), expected)
    idxs = torch.zeros(300, dtype=torch.int64)
    assert torch.equal(batched_nms(boxes, scores, idxs, 0.5, max_det=9, backend="triton"), expected[:9])


@needs_triton
@pytest.mark.parametrize("setting", MULTICLASS_SETTINGS[:4])
def test_multiclass_triton_interpreted_matches_loop(setting: tuple, nms_helpers: type) -> None:
    B, N, C, specific, st, iou, max_det, topk = setting
    boxes, scores = _detector_batch(B, min(N, 40), C, seed=N + C, class_specific=specific)
    kw = {"score_threshold": st, "iou_threshold": iou, "max_det": max_det, "pre_nms_topk": topk}
    out = multiclass_nms(boxes, scores, return_indices=True, backend="triton", **kw)
    _check_multiclass(out, boxes, scores, nms_helpers.loop_multiclass_reference(boxes, scores, **kw), max_det)
    ref = multiclass_nms(boxes, scores, return_indices=True, backend="reference", **kw)
    for a, b in zip(out, ref):
        torch.testing.assert_close(a, b, rtol=0, atol=0, equal_nan=True)


@needs_triton
def test_multiclass_triton_path_traces_into_one_graph() -> None:
    # the sync-free path has no data-dependent Python control flow: dynamo captures it whole (fullgraph), the kernel
    # being an opaque custom op with a shape-only fake; aot_eager keeps the test free of a C++ toolchain
    boxes, scores = _detector_batch(2, 30, 3, seed=2)
    kw = {"score_threshold": 0.2, "iou_threshold": 0.5, "max_det": 10, "pre_nms_topk": 40, "return_indices": True}
    eager = multiclass_nms(boxes, scores, backend="triton", **kw)
    torch._dynamo.reset()
    compiled = torch.compile(
        lambda b, s: multiclass_nms(b, s, backend="triton", **kw), fullgraph=True, backend="aot_eager"
    )
    for a, e in zip(compiled(boxes, scores), eager):
        assert torch.equal(a, e)


@needs_triton
def test_multiclass_triton_half_precision(nms_helpers: type) -> None:
    boxes, scores = _detector_batch(1, 30, 3, seed=9)
    kw = {"score_threshold": 0.1, "iou_threshold": 0.5, "max_det": 20}
    for dtype in (torch.float16, torch.bfloat16):
        b, s = boxes.to(dtype), scores.to(dtype)
        out = multiclass_nms(b, s, return_indices=True, backend="triton", **kw)
        _check_multiclass(out, b, s, nms_helpers.loop_multiclass_reference(b, s, **kw), 20)


@needs_triton
def test_triton_kernel_compiles_for_the_gpu_without_one() -> None:
    # the interpreter does not type-check the kernel like the compiler does: build PTX and a cubin for sm_90 —
    # after an interpreted run in the same process, which must leave triton.language as it found it
    from vision.ops import _nms_triton

    boxes = torch.tensor([[0.0, 0.0, 10.0, 10.0], [1.0, 1.0, 11.0, 11.0]])
    assert nms(boxes, torch.tensor([0.9, 0.8]), 0.5, backend="triton").tolist() == [0]
    try:
        kernel = _nms_triton.compile_for(90)
    except (ImportError, RuntimeError, FileNotFoundError) as e:  # no CUDA backend / ptxas in this triton build
        pytest.skip(f"cannot compile for CUDA here: {e}")
    ptx = kernel.asm["ptx"]
    assert "div.rn.f32" in ptx and "div.full.f32" not in ptx  # IEEE division, as torchvision's CPU build
    assert "fma.rn.f32" not in ptx  # no contraction
    assert "fence.acq_rel.gpu" in ptx and ".release." in ptx and ".acquire." in ptx


def test_triton_backend_rejects_float64() -> None:
    if not _triton_installed():
        pytest.skip("triton is not installed")
    with pytest.raises(TypeError, match="float64"):
        nms(torch.rand(3, 4, dtype=torch.float64), torch.rand(3, dtype=torch.float64), 0.5, backend="triton")


# ---------------------------------------------------------------------------------------------------------------------
# CUDA
# ---------------------------------------------------------------------------------------------------------------------


@pytest.mark.gpu
@pytest.mark.skipif(not CUDA, reason="needs a CUDA device")
@pytest.mark.parametrize("iou", [0.0, 0.5, 0.7])
def test_cuda_kernel_matches_torchvision_cpu(iou: float, nms_helpers: type) -> None:
    for batch in nms_helpers.all_cases(seed=5, sizes=(7, 64, 300), per_combo=20):
        boxes, scores, groups = batch.flat()
        kept = batched_nms(boxes.cuda(), scores.cuda(), groups.cuda(), iou)
        assert kept.is_cuda
        assert torch.equal(
            nms_helpers.group_major(kept, groups), nms_helpers.tv_nms_per_group(boxes, scores, groups, iou)
        )
    for kind in ("uniform", "clustered", "multiscale"):
        batch = nms_helpers.make_cases(kind, 1, 50_000, torch.Generator().manual_seed(1))
        boxes, scores = batch.boxes[0] * 20, batch.scores[0]
        assert torch.equal(nms(boxes.cuda(), scores.cuda(), iou).cpu(), nms(boxes, scores, iou, backend="reference"))


@pytest.mark.gpu
@pytest.mark.skipif(not CUDA, reason="needs a CUDA device")
def test_cuda_kernel_more_than_400k_boxes() -> None:
    n, side = 450_000, 671
    i = torch.arange(n)
    xy = torch.stack([(i % side) * 20.0, (i // side) * 20.0], 1)
    boxes = torch.cat([xy, xy + 10], 1)
    boxes[1::2] = boxes[0::2][: n // 2] + 0.5
    scores = torch.rand(n, generator=torch.Generator().manual_seed(0))
    expected = nms(boxes, scores, 0.5, backend="reference")
    assert torch.equal(nms(boxes.cuda(), scores.cuda(), 0.5).cpu(), expected)


def _multiclass_inputs_cuda(seed: int) -> tuple[torch.Tensor, torch.Tensor]:
    boxes, scores = _detector_batch(4, 2000, 20, seed=seed)
    return boxes.cuda(), scores.cuda()


@pytest.mark.gpu
@pytest.mark.skipif(not CUDA, reason="needs a CUDA device")
def test_multiclass_cuda_is_sync_free_and_cuda_graph_capturable(nms_helpers: type) -> None:
    kw = {"score_threshold": 0.05, "iou_threshold": 0.5, "max_det": 100, "pre_nms_topk": 4000, "return_indices": True}
    boxes, scores = _multiclass_inputs_cuda(0)
    eager = multiclass_nms(boxes, scores, **kw)  # also compiles the kernel
    ref = multiclass_nms(boxes.cpu(), scores.cpu(), backend="reference", **kw)
    for a, b in zip(eager, ref):
        assert torch.equal(a.cpu(), b)
    torch.cuda.synchronize()
    torch.cuda.set_sync_debug_mode("error")
    try:
        again = multiclass_nms(boxes, scores, **kw)
    finally:
        torch.cuda.set_sync_debug_mode("default")
    for a, b in zip(again, eager):
        assert torch.equal(a, b)

    static_boxes, static_scores = boxes.clone(), scores.clone()
    side = torch.cuda.Stream()
    side.wait_stream(torch.cuda.current_stream())
    with torch.cuda.stream(side):
        multiclass_nms(static_boxes, static_scores, **kw)
    torch.cuda.current_stream().wait_stream(side)
    graph = torch.cuda.CUDAGraph()
    with torch.cuda.graph(graph):
        captured = multiclass_nms(static_boxes, static_scores, **kw)
    graph.replay()
    torch.cuda.synchronize()
    for a, b in zip(captured, eager):
        assert torch.equal(a, b)
    # new inputs through the same graph
    boxes2, scores2 = _multiclass_inputs_cuda(1)
    static_boxes.copy_(boxes2)
    static_scores.copy_(scores2)
    graph.replay()
    torch.cuda.synchronize()
    for a, b in zip(captured, multiclass_nms(boxes2, scores2, **kw)):
        assert torch.equal(a, b)


@pytest.mark.gpu
@pytest.mark.skipif(not CUDA, reason="needs a CUDA device")
def test_multiclass_cuda_class_specific_half_and_compile(nms_helpers: type) -> None:
    boxes, scores = _detector_batch(2, 1000, 8, seed=3, class_specific=True)
    kw = {"score_threshold": 0.05, "iou_threshold": 0.5, "max_det": 50, "return_indices": True}
    for dtype in (torch.float32, torch.float16, torch.bfloat16):
        b, s = boxes.to(dtype).cuda(), scores.to(dtype).cuda()
        out = multiclass_nms(b, s, **kw)
        expected = nms_helpers.loop_multiclass_reference(
            b.cpu(), s.cpu(), **{k: v for k, v in kw.items() if k != "return_indices"}
        )
        _check_multiclass(out, b, s, expected, 50)
    b, s = boxes.cuda(), scores.cuda()
    compiled = torch.compile(lambda x, y: multiclass_nms(x, y, **kw), fullgraph=True)
    for a, e in zip(compiled(b, s), multiclass_nms(b, s, **kw)):
        assert torch.equal(a, e)


def test_threshold_rounding_is_pure_python() -> None:
    # used inside CUDA-graph capture / torch.compile: plain Python floats, exact float32 round-down
    for t in (0.1, 0.3, 0.6, 0.7, 1 / 3, 1e-40, -0.25, 0.0, 1.0, 0.05, 7.3, -123.456, 3e38):
        r = threshold_for_dtype(t, torch.float32)
        r32 = torch.tensor(r, dtype=torch.float32)
        assert isinstance(r, float) and r == r32.item() and r <= t
        assert torch.nextafter(r32, torch.tensor(math.inf)).item() > t
    assert threshold_for_dtype(5.0, torch.float32) == 5.0
    assert threshold_for_dtype(1e39, torch.float32) == torch.finfo(torch.float32).max
    assert threshold_for_dtype(-1e39, torch.float32) == -math.inf
    assert threshold_for_dtype(math.inf, torch.float32) == math.inf
