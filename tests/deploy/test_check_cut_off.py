"""The onnxruntime check of a detector (:mod:`vision.deploy.check`): near ties at the ``max_det`` / score-threshold
cut-off may differ between the two sides, everything clearly above it must match; a check with no detection on
either side says that nothing was compared instead of claiming that boxes matched."""

from __future__ import annotations

import pytest
import torch

import vision

pytest.importorskip("onnxruntime")
pytest.importorskip("skimage")

from vision.cli.export import _sample_photos
from vision.cli.main import main
from vision.deploy import check_export, export_onnx, load_onnx
from vision.deploy.check import match_detections


def _dets(boxes: list[list[float]], scores: list[float], labels: list[int]) -> dict[str, torch.Tensor]:
    return {"boxes": torch.tensor(boxes, dtype=torch.float32).reshape(-1, 4), "scores": torch.tensor(scores),
            "labels": torch.tensor(labels, dtype=torch.int64)}  # fmt: skip


#: three clear detections, then two at the max_det=5 cut-off (score 0.05) among many near-equal ones
ABOVE = ([[0, 0, 10, 10], [20, 20, 40, 40], [50, 0, 70, 30]], [0.9, 0.6, 0.3], [0, 1, 2])
REF = _dets([*ABOVE[0], [80, 80, 90, 90], [100, 0, 110, 10]], [*ABOVE[1], 0.0502, 0.05], [*ABOVE[2], 0, 1])


def test_near_ties_at_the_max_det_cut_off_may_differ():
    """Two other boxes within the score tolerance of the last kept score fell in on the ONNX side."""
    got = _dets([*ABOVE[0], [120, 120, 130, 130], [0, 100, 10, 110]], [*ABOVE[1], 0.0505, 0.0499], [*ABOVE[2], 2, 0])
    ok, min_iou, diff, msg = match_detections(REF, got, score_threshold=0.001, max_det=5)
    assert ok, msg
    assert (min_iou, diff) == (1.0, 0.0)
    assert "2 near tie(s) at the cut-off score 0.0499 (within 0.001): 2 detection(s) only in PyTorch, 2 only in ONNX" \
        in msg  # fmt: skip
    assert not match_detections(REF, got)[0]  # without the cut-off (max_det, threshold) every box must match


@pytest.mark.parametrize(
    ("boxes", "scores", "why"),
    [
        ([[0, 0, 10, 10], [25, 25, 45, 45], [50, 0, 70, 30]], [0.9, 0.6, 0.3], "a wrong box above the cut-off"),
        ([[0, 0, 10, 10], [20, 20, 40, 40], [50, 0, 70, 30]], [0.9, 0.62, 0.3], "a wrong score above the cut-off"),
        ([[0, 0, 10, 10], [20, 20, 40, 40], [120, 0, 140, 30]], [0.9, 0.6, 0.3], "a box moved above the cut-off"),
    ],
)
def test_a_mismatch_above_the_cut_off_still_fails(boxes, scores, why):
    got = _dets([*boxes, [80, 80, 90, 90], [100, 0, 110, 10]], [*scores, 0.0502, 0.05], [*ABOVE[2], 0, 1])
    ok, *_, msg = match_detections(REF, got, score_threshold=0.001, max_det=5)
    assert not ok, why
    assert "above the cut-off" in msg


def test_the_score_threshold_is_a_cut_off_too():
    """Below ``max_det`` a side is cut at the score threshold: a detection just above it may be missing on the other
    side (the counts differ by it); one clearly above it may not, on either side."""
    ref = _dets([[0, 0, 10, 10], [20, 20, 40, 40]], [0.9, 0.2504], [0, 1])
    ok, _, _, msg = match_detections(ref, _dets([[0, 0, 10, 10]], [0.9], [0]), score_threshold=0.25, max_det=300)
    assert ok and "2 detections in PyTorch, 1 in ONNX" in msg and "1 near tie(s) at the cut-off score 0.2500" in msg
    ref = _dets([[0, 0, 10, 10], [20, 20, 40, 40]], [0.9, 0.4], [0, 1])
    ok, _, _, msg = match_detections(ref, _dets([[0, 0, 10, 10]], [0.9], [0]), score_threshold=0.25, max_det=300)
    assert not ok and "1 PyTorch detection(s) above the cut-off unmatched" in msg
    ok, _, _, msg = match_detections(_dets([[0, 0, 10, 10]], [0.9], [0]), ref, score_threshold=0.25, max_det=300)
    assert not ok and "1 ONNX detection(s) above the cut-off not in PyTorch" in msg


@pytest.fixture(scope="module")
def photos() -> list[torch.Tensor]:
    return [p.float() / 255 for p in _sample_photos()[:2]]


def test_untrained_yolo_with_near_equal_scores_at_max_det_passes(tmp_path, photos):
    """A random-init YOLO scores every anchor about the same (~0.05): fp32 differences between onnxruntime and
    PyTorch reorder them, so other boxes fall in at ``max_det=20``. The file is right; the check passes and counts
    the near ties at the cut-off."""
    torch.manual_seed(0)
    model = vision.create_model("yolo_n", num_classes=3, imgsz=64).eval()
    path = export_onnx(model, tmp_path / "y.onnx", score_threshold=0.001, max_det=20)
    result = check_export(model, load_onnx(path), photos)
    assert result.ok and result.compared, result.lines
    assert all("near tie(s) at the cut-off" in line for line in result.lines[:-1]), result.lines
    assert result.summary().startswith("onnxruntime check: PASS on 2 images")


def test_no_detection_on_either_side_says_nothing_was_compared(tmp_path, capsys):
    """An untrained ``yolo_n`` finds nothing at the default threshold: exit 0, but no claim that boxes matched."""
    out = tmp_path / "y.onnx"
    assert main(["export", "model=yolo_n", "imgsz=64", "check_images=1", f"file={out}"]) == 0
    lines = capsys.readouterr().out.splitlines()
    conf = load_onnx(out).metadata["score_threshold"]
    told = f"0 detections on both sides at conf={float(conf):g}: boxes not compared; lower conf= to compare"
    assert lines[-1] == f"onnxruntime check: nothing compared on 1 images ({told})"
    assert not any("PASS" in line for line in lines)
