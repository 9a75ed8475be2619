"""The engine across processes: SIGKILL mid-epoch then exact resume; torchrun with 2 CPU processes (gloo)."""

from __future__ import annotations

import os
import signal
import subprocess
import sys
import time
from pathlib import Path

import pytest
import torch
from safetensors.torch import load_file

from vision.engine.checkpoint import load_resume_state

ROOT = Path(__file__).resolve().parents[2]
TRAIN = str(ROOT / "tools" / "train.py")
BASE = [
    "model=tiny_convnet",
    "task=classification",
    "data=digits",
    "imgsz=24",
    "batch=32",
    "fraction=0.5",
    "workers=0",
    "lr=0.05",
    "deterministic=true",
    "tensorboard=false",
    "plots=false",
]

pytestmark = pytest.mark.slow


def _env(plugin: Path) -> dict[str, str]:
    return {**os.environ, "PYTHONPATH": os.pathsep.join([str(plugin), str(ROOT), os.environ.get("PYTHONPATH", "")])}


def _run(cmd: list[str], env: dict[str, str]) -> subprocess.CompletedProcess:
    result = subprocess.run(cmd, env=env, capture_output=True, text=True, timeout=900)
    assert result.returncode == 0, f"{cmd}\n{result.stdout[-3000:]}\n{result.stderr[-3000:]}"
    return result


def _assert_same_weights(a: Path, b: Path, *, atol: float = 0.0) -> None:
    wa, wb = load_file(a), load_file(b)
    assert wa.keys() == wb.keys()
    for key in wa:
        if atol == 0.0:
            assert torch.equal(wa[key], wb[key]), key
        else:
            torch.testing.assert_close(wa[key], wb[key], atol=atol, rtol=0, msg=key)


def test_sigkill_mid_epoch_then_resume_gives_bitwise_identical_weights(tiny_model, tmp_path):
    env = _env(tiny_model)
    args = [*BASE, f"project={tmp_path}", "epochs=3"]
    _run([sys.executable, TRAIN, *args, "name=ref"], env)
    cut = tmp_path / "classification" / "cut"
    state_file = cut / "weights" / "last.state.pt"
    proc = subprocess.Popen(
        [sys.executable, TRAIN, *args, "name=cut", "save_period=3"],
        env=env,
        stdout=subprocess.DEVNULL,
        stderr=subprocess.PIPE,
        text=True,
    )
    killed_at = None
    deadline = time.time() + 600
    while time.time() < deadline and proc.poll() is None:
        if state_file.is_file():
            try:
                state = load_resume_state(state_file)
            except ValueError:  # never expected (atomic rename), but do not race on it
                continue
            if state["epoch"] == 1 and state["batch_in_epoch"] > 0:
                proc.send_signal(signal.SIGKILL)
                killed_at = (state["epoch"], state["batch_in_epoch"])
                break
        time.sleep(0.01)
    proc.wait(timeout=60)
    assert killed_at is not None, f"the run ended before a mid-epoch checkpoint: {proc.stderr.read()[-2000:]}"
    assert proc.returncode == -signal.SIGKILL
    state = load_resume_state(state_file)
    assert 0 < state["epoch"] < 3, "killed before the end of the run"
    _run([sys.executable, TRAIN, f"resume={cut}"], env)
    _assert_same_weights(
        tmp_path / "classification" / "ref" / "weights" / "last.safetensors", cut / "weights" / "last.safetensors"
    )


def test_torchrun_two_cpu_processes_match_one_process(tiny_model, tmp_path):
    # a short run: rounding differs (per-rank sums, then the average) and training amplifies it over many steps
    env = {**_env(tiny_model), "OMP_NUM_THREADS": "1"}
    args = [*BASE, f"project={tmp_path}", "epochs=2", "fraction=0.25", "lr=0.02"]
    _run([sys.executable, TRAIN, *args, "name=one"], env)
    cmd = [
        sys.executable,
        "-m",
        "torch.distributed.run",
        "--standalone",
        "--nproc_per_node",
        "2",
        TRAIN,
        *args,
        "name=two",
    ]
    result = _run(cmd, env)
    runs = sorted(p.name for p in (tmp_path / "classification").iterdir())
    assert runs == ["one", "two"], f"only rank 0 creates a run folder: {runs}"
    _assert_same_weights(
        tmp_path / "classification" / "one" / "weights" / "last.safetensors",
        tmp_path / "classification" / "two" / "weights" / "last.safetensors",
        atol=1e-5,
    )
    files = sorted(
        str(p.relative_to(tmp_path / "classification" / "two"))
        for p in (tmp_path / "classification" / "two").rglob("*")
    )
    units = [f"weights/ckpt/{u}" for u in ("e0001-s00000011", "e0002-s00000022")]  # one checkpoint unit per epoch
    unit_files = [f"{u}/{f}" for u in units for f in ("manifest.json", "state.pt", "weights.safetensors")]
    assert files == sorted(
        [
            "args.yaml",
            "metrics.csv",
            "weights",
            "weights/best.safetensors",
            "weights/ckpt",
            *units,
            *unit_files,
            "weights/last.safetensors",
            "weights/last.state.pt",
        ]
    ), files
    assert result.stdout.count("run saved to") == 1, "only rank 0 prints"


def _average_worker(rank: int, world: int, port: int, out: str) -> None:
    import torch.distributed as dist

    from vision.engine.distributed import average_gradients

    dist.init_process_group("gloo", init_method=f"tcp://127.0.0.1:{port}", rank=rank, world_size=world)
    layer = torch.nn.Linear(3, 2)
    for p in layer.parameters():
        p.grad = torch.full_like(p, float(rank + 1))
    average_gradients(layer)
    torch.save({k: p.grad for k, p in layer.named_parameters()}, f"{out}/rank{rank}.pt")
    dist.destroy_process_group()


def test_average_gradients_over_two_gloo_ranks(tmp_path):
    import socket

    import torch.multiprocessing as mp

    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        port = s.getsockname()[1]
    mp.spawn(_average_worker, args=(2, port, str(tmp_path)), nprocs=2, join=True)
    for rank in range(2):
        grads = torch.load(tmp_path / f"rank{rank}.pt", weights_only=True)
        for g in grads.values():
            assert torch.allclose(g, torch.full_like(g, 1.5)), "the mean of 1 and 2 on every rank"
