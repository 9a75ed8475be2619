"""Tiny training runs shared by the evaluation tests (one per task, trained once per session)."""

from __future__ import annotations

from pathlib import Path

import pytest

from vision.engine import Trainer
from vision.engine.config import resolve_args

#: csp_darknet_n on scikit-learn's digits at 32 px, 5% of the training set, one epoch, EMA on
CLS_ARGS = [
    "task=classification", "model=csp_darknet_n", "data=digits", "imgsz=32", "fraction=0.05", "epochs=1", "batch=32",
    "workers=0", "ema=true", "ema_decay=0.9", "tensorboard=false", "lr=0.05",
]  # fmt: skip
#: yolo_n on 8 synthetic 64-px images (4 to validate), one epoch, EMA on
DET_ARGS = [
    "task=detection", "model=yolo_n", "data=synthetic", "synthetic.train=8", "synthetic.val=4", "synthetic.size=64",
    "imgsz=64", "model_kwargs.imgsz=64", "epochs=1", "batch=4", "workers=0", "ema=true", "ema_decay=0.9",
    "tensorboard=false", "val_samples=2",
]  # fmt: skip


@pytest.fixture(scope="session")
def cls_run(tmp_path_factory: pytest.TempPathFactory) -> Path:
    project = tmp_path_factory.mktemp("cls_runs")
    return Trainer(resolve_args([*CLS_ARGS, f"project={project}"])).fit()


@pytest.fixture(scope="session")
def det_run(tmp_path_factory: pytest.TempPathFactory) -> Path:
    project = tmp_path_factory.mktemp("det_runs")
    return Trainer(resolve_args([*DET_ARGS, f"project={project}"])).fit()
