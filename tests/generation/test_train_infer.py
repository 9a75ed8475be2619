"""``tools/train.py`` and ``tools/infer.py`` for generation, as subprocesses on the CPU at toy size."""

from __future__ import annotations

import json
import os
import subprocess
import sys
from pathlib import Path

import pytest
import torch

from vision import load_model
from vision.engine.checkpoint import load_resume_state
from vision.hub.metadata import read_safetensors_metadata
from vision.io import read_image

ROOT = Path(__file__).resolve().parents[2]
TRAIN, INFER = str(ROOT / "tools" / "train.py"), str(ROOT / "tools" / "infer.py")
TOY = [
    "device=cpu",
    "workers=0",
    "epochs=1",
    "repeat=1",
    "fraction=0.05",
    "batch=16",
    "tensorboard=false",
    "plots=false",
]

pytestmark = pytest.mark.slow


def _run(args: list[str]) -> subprocess.CompletedProcess:
    env = {**os.environ, "OMP_NUM_THREADS": "1", "VISION_OFFLINE": "1"}
    result = subprocess.run([sys.executable, *args], capture_output=True, text=True, timeout=600, env=env)
    assert result.returncode == 0, f"{args}\n{result.stdout[-3000:]}\n{result.stderr[-3000:]}"
    return result


def test_ddpm_recipe_trains_and_samples(tmp_path):
    out = _run(
        [
            TRAIN,
            "recipe=ddpm_digits",
            *TOY,
            "model_kwargs.base_channels=8",
            "model_kwargs.timesteps=50",
            "eval_samples=20",
            "eval_steps=3",
            "sample_every=2",
            "sample_grid=10",
            f"project={tmp_path}",
        ]
    )
    run = tmp_path / "generation" / "train"
    assert out.stdout.strip().splitlines()[-1] == f"run saved to {run}"
    for name in ("args.yaml", "metrics.csv", "weights/best.safetensors", "weights/last.state.pt"):
        assert (run / name).is_file(), name
    assert sorted(p.name for p in (run / "samples").iterdir()) == ["step0000002.png", "step0000004.png"]
    header = (run / "metrics.csv").read_text().splitlines()[0].split(",")
    assert {"fd_digits", "fd_digits_floor", "class_acc", "nn_ratio"} <= set(header)
    meta = read_safetensors_metadata(run / "weights" / "best.safetensors")
    assert meta["model"] == "ddpm_unet_s" and meta["classes"] == [str(d) for d in range(10)]
    assert meta["model_kwargs"]["image_channels"] == 1 and meta["model_kwargs"]["base_channels"] == 8

    weights = run / "weights" / "best.safetensors"
    _run([INFER, f"weights={weights}", "n=12", "seed=5", "steps=3", f"project={tmp_path}", "name=samples"])
    folder = tmp_path / "generation" / "samples"
    files = sorted((folder / "images").iterdir())
    assert [f.name for f in files] == [f"{i:05d}_c{i % 10}.png" for i in range(12)]
    grid = read_image(folder / "grid.png")
    assert grid.shape == (3, 2 * 32 + 3 * 2, 10 * 32 + 11 * 2)
    summary = json.loads((folder / "samples.json").read_text())
    assert summary["n"] == 12 and summary["steps"] == 3 and len(summary["images"]) == 12
    # the files hold exactly what the model samples in-process with the same seed (EMA weights, CPU noise)
    model = load_model(run)
    expected = model.sample(12, labels="balanced", seed=5, steps=3)
    got = torch.stack([read_image(f)[:1] for f in files])
    assert torch.equal(got, expected)


def test_sngan_recipe_trains_with_two_optimisers_and_samples(tmp_path):
    _run(
        [
            TRAIN,
            "recipe=sngan_digits",
            *TOY,
            "model_kwargs.g_channels=16",
            "model_kwargs.d_channels=16",
            "eval_samples=20",
            "sample_every=0",
            f"project={tmp_path}",
        ]
    )
    run = tmp_path / "generation" / "train"
    state = load_resume_state(run / "weights" / "last.state.pt")
    assert set(state["optimizers"]) == {"discriminator", "generator"}
    assert set(state["schedulers"]) == {"discriminator", "generator"}
    assert state["ema"] is not None and state["step"] == 4
    out = _run(
        [INFER, f"weights={run / 'weights' / 'best.safetensors'}", "n=4", "labels=3", f"project={tmp_path}", "name=g"]
    )
    assert sorted(p.name for p in (tmp_path / "generation" / "g" / "images").iterdir()) == [
        f"{i:05d}_c3.png" for i in range(4)
    ]
    assert "class 3 (3)" in out.stdout
    bad = subprocess.run(
        [sys.executable, INFER, f"weights={run / 'weights' / 'best.safetensors'}", "steps=10", f"project={tmp_path}"],
        capture_output=True,
        text=True,
        env={**os.environ, "OMP_NUM_THREADS": "1"},
        timeout=300,
    )
    assert bad.returncode == 2 and "a GAN samples in one step" in bad.stderr
