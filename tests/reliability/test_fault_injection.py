"""Fault injection (issue 13): a tiny training run is SIGKILLed at >= 20 seeded random moments, including inside
checkpoint writes (between the weights and the state file, after half a file's bytes, before a rename), and every
leftover run resumes to final weights bit-identical to an uninterrupted run. The kills happen in forked children of
one worker process (``fault_worker.py``), so the test pays for importing torch once."""

from __future__ import annotations

import json
import os
import subprocess
import sys
from pathlib import Path

import pytest

ROOT = Path(__file__).resolve().parents[2]
WORKER = Path(__file__).with_name("fault_worker.py")
ARGS = [
    "model=tiny_convnet",
    "task=classification",
    "data=digits",
    "imgsz=16",
    "batch=16",
    "fraction=0.1",  # 8 steps per epoch
    "epochs=2",
    "save_period=3",  # mid-epoch checkpoints too
    "workers=0",
    "lr=0.05",
    "ema=true",
    "deterministic=true",
    "tensorboard=false",
    "plots=false",
]


@pytest.mark.slow
def test_sigkill_at_random_moments_then_resume_is_bit_identical(tiny_model, tmp_path):
    config = {
        "plugin": str(tiny_model),
        "project": str(tmp_path),
        "args": ARGS,
        "seed": 13,
        "writer_kills": 12,
        "step_kills": 8,
        "timer_kills": 4,
    }
    env = {**os.environ, "PYTHONPATH": os.pathsep.join([str(ROOT), os.environ.get("PYTHONPATH", "")])}
    env["OMP_NUM_THREADS"] = "1"
    result = subprocess.run(
        [sys.executable, str(WORKER), json.dumps(config)], env=env, capture_output=True, text=True, timeout=900
    )
    assert result.returncode == 0, result.stderr[-3000:]
    report = json.loads(result.stdout.strip().splitlines()[-1])
    assert "error" not in report, report["error"]
    trials = report["trials"]
    killed = sum(t["kills"] for t in trials)
    in_writer = [t for t in trials if "label" in t and t["label"] not in ("step", "metrics row")]
    between = [t for t in trials if t.get("label") == "wrote weights.safetensors"]
    assert killed >= 20, f"only {killed} kills"
    assert len(in_writer) >= 10 and between, "kills inside checkpoint writes"
    assert any(t.get("label", "").startswith("half") for t in trials), "a kill that leaves a half-written file"
    said = [line for t in trials for line in t["resume_said"]]
    assert any("starting it again from epoch 1" in line for line in said), "a kill inside the first save"
    assert any("a save the run did not finish" in line for line in said), "a kill inside a later save"
    failed = {t["name"]: (t.get("label") or t.get("alarm"), t["problems"]) for t in trials if t["problems"]}
    assert not failed, json.dumps(failed, indent=1)
    print(f"{killed} kills over {len(trials)} runs of {report['events']} events; all resumed bit-identically")
