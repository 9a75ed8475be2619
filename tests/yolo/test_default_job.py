"""The README's main job: ``tools/train.py`` with no arguments trains YOLO-n on synthetic shapes to a useful mAP on
2 CPU cores, and ``tools/infer.py`` on its output draws the boxes on the bundled sample images."""

from __future__ import annotations

import csv
import json
import os
import subprocess
import sys
from pathlib import Path

import cv2
import numpy as np
import pytest
import torch
from torchvision.ops import box_iou

from vision.data import SyntheticShapes

ROOT = Path(__file__).resolve().parents[2]
SAMPLES = ROOT / "vision" / "assets" / "samples" / "shapes"


def _run(args: list[str], cwd: Path) -> str:
    env = {**os.environ, "PYTHONPATH": str(ROOT)}
    result = subprocess.run([sys.executable, *args], cwd=cwd, env=env, capture_output=True, text=True, timeout=1200)
    assert result.returncode == 0, result.stdout[-3000:] + result.stderr[-3000:]
    return result.stdout + result.stderr


@pytest.mark.slow
def test_default_train_then_infer(tmp_path):
    _run([str(ROOT / "tools" / "train.py"), "tensorboard=false"], cwd=tmp_path)
    run = tmp_path / "runs" / "detection" / "train"
    args = (run / "args.yaml").read_text(encoding="utf-8")
    assert "model: yolo_n" in args and "data: synthetic" in args
    rows = list(csv.DictReader((run / "metrics.csv").read_text(encoding="utf-8").splitlines()))
    assert float(rows[-1]["map50"]) >= 0.5, rows[-1]

    out = _run([str(ROOT / "tools" / "infer.py"), f"weights={run / 'weights' / 'best.safetensors'}",
                f"source={SAMPLES}", "name=drawn"], cwd=tmp_path)  # fmt: skip
    drawn = tmp_path / "runs" / "detection" / "drawn"
    samples = sorted(SAMPLES.glob("*.png"))
    assert samples and "detections" in out
    truth = SyntheticShapes(len(samples), size=(128, 160), seed=2026, masks=False)  # how the samples were made
    found = total = 0
    for i, sample in enumerate(samples):
        annotated = cv2.imread(str(drawn / sample.name))
        assert annotated is not None and annotated.shape == cv2.imread(str(sample)).shape
        records = json.loads((drawn / "labels" / f"{sample.stem}.json").read_text(encoding="utf-8"))
        detections = records["detections"] if isinstance(records, dict) else records
        assert np.array_equal(cv2.imread(str(sample))[..., ::-1], truth[i][0].permute(1, 2, 0).numpy())
        if detections:  # boxes were drawn: the picture changed
            assert np.abs(annotated.astype(int) - cv2.imread(str(sample)).astype(int)).sum() > 0
        target = truth[i][1]
        boxes = torch.tensor([d["box"] for d in detections]).reshape(-1, 4)
        labels = torch.tensor([d["label"] for d in detections], dtype=torch.int64)
        hit = (box_iou(target["boxes"], boxes) > 0.5) & (target["labels"][:, None] == labels[None])
        found += int(hit.any(1).sum())
        total += len(target["boxes"])
    assert found >= 0.6 * total, f"{found} of {total} sample objects found"
