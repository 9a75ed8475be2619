"""benchmarks/_timing.py's sides in their own processes (``Remote``, ``call_in_process``): each runs with the
environment, first imports and thread count it was given, and times its calls there; benchmarks/yolo.py starts
ultralytics' side without the OpenMP setting that importing vision adds."""

from __future__ import annotations

import os
import sys
import textwrap
from pathlib import Path

import pytest

ROOT = Path(__file__).resolve().parents[2]
sys.path.insert(0, str(ROOT / "benchmarks"))

from _timing import Remote, alternate, call_in_process  # noqa: E402

PROBE = """
import os, sys, time

def report():
    import torch
    return {"pid": os.getpid(), "omp": os.environ.get("OMP_WAIT_POLICY"), "spin": os.environ.get("GOMP_SPINCOUNT"),
            "threads": torch.get_num_threads(), "vision": "vision" in sys.modules}

def sleeper(seconds):
    return lambda: time.sleep(seconds)

def broken():
    raise ValueError("no such side")
"""


@pytest.fixture
def probe_env(tmp_path: Path) -> dict[str, str]:
    (tmp_path / "probe.py").write_text(textwrap.dedent(PROBE))
    env = {k: v for k, v in os.environ.items() if k not in ("OMP_WAIT_POLICY", "GOMP_SPINCOUNT")}
    env["PYTHONPATH"] = os.pathsep.join([str(tmp_path), str(ROOT), env.get("PYTHONPATH", "")])
    return env


def test_a_side_runs_in_its_own_process_with_its_environment_imports_and_threads(probe_env):
    plain = call_in_process("probe", "report", {}, threads=1, env=probe_env)
    assert plain["pid"] != os.getpid()
    assert plain == {"pid": plain["pid"], "omp": None, "spin": None, "threads": 1, "vision": False}
    ours = call_in_process("probe", "report", {}, threads=2, first=("vision",), env=probe_env)
    assert ours["omp"] == "PASSIVE" and ours["spin"] == "3000" and ours["vision"] and ours["threads"] == 2
    own = {**probe_env, "GOMP_SPINCOUNT": "7"}
    mine = call_in_process("probe", "report", {}, threads=1, first=("vision",), env=own)
    assert mine["omp"] is None and mine["spin"] == "7"  # a user's own setting: vision sets neither


def test_remote_calls_are_timed_in_the_worker_and_alternate_with_local_ones(probe_env):
    remote = Remote("probe", "sleeper", {"seconds": 0.05}, threads=1, env=probe_env)
    try:
        assert 0.05 <= remote.timed() < 1.0
        med = alternate({"remote": remote, "local": lambda: None}, warmup=1, iters=3)
    finally:
        remote.close()
    assert med["remote"] >= 0.05 > med["local"]


def test_a_side_that_fails_to_start_is_reported(probe_env):
    with pytest.raises(RuntimeError, match=r"probe\.broken"):
        call_in_process("probe", "broken", {}, threads=1, env=probe_env)
    with pytest.raises(RuntimeError, match=r"benchmark worker for probe\.broken stopped \(exit code 1\)"):
        Remote("probe", "broken", {}, threads=1, env=probe_env)


def test_yolo_benchmark_starts_the_peer_without_visions_openmp_setting():
    import importlib.util

    import vision._openmp

    spec = importlib.util.spec_from_file_location("bench_yolo_sides_test", ROOT / "benchmarks" / "yolo.py")
    bench = importlib.util.module_from_spec(spec)
    spec.loader.exec_module(bench)
    ours, peer = bench._process_of("ours"), bench._process_of("ultralytics")
    assert ours == {"first": ("vision",), "env": None}
    assert peer["first"] == ()
    if vision._openmp.SET_HERE:
        assert not {"OMP_WAIT_POLICY", "GOMP_SPINCOUNT"} & set(peer["env"])
    else:  # the user's own setting is kept for both
        assert all(peer["env"].get(k) == os.environ.get(k) for k in vision._openmp.SETTINGS)
