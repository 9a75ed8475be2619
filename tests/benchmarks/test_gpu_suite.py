"""The GPU suite (benchmarks/gpu_suite.py): its target judgement, its time limits, and its CPU dry run end to end."""

from __future__ import annotations

import json
import os
import subprocess
import sys
from pathlib import Path

import pytest

ROOT = Path(__file__).resolve().parents[2]
SUITE = ROOT / "benchmarks" / "gpu_suite.py"
sys.path.insert(0, str(ROOT / "benchmarks"))

from _gpu_suite import targets  # noqa: E402
from _gpu_suite.parts_a import gpu_test_files  # noqa: E402

REPORT_KEYS = {"schema", "dry_run", "date", "device", "versions", "git", "wheels", "bccd", "budget_s", "wall_s",
               "parts", "targets", "all_held", "exit_code", "summary"}  # fmt: skip
PART_KEYS = {"name", "title", "budget_s", "seconds", "status", "reason", "numbers", "errors", "skipped"}
TARGET_KEYS = {"id", "part", "text", "path", "op", "threshold", "value", "held", "verdict"}
PART_NAMES = ["pytest", "nms", "augment", "rcnn", "yolo", "engine", "quality"]


def _numbers(values: dict[str, object]) -> dict[str, dict]:
    """``{part: nested numbers}`` holding ``values`` (``target id -> value``) at each target's path."""
    parts: dict[str, dict] = {}
    for t in targets.TARGETS:
        node = parts.setdefault(t.part, {})
        *parents, leaf = t.path.split(".")
        for p in parents:
            node = node.setdefault(p, {})
        node[leaf] = values[t.id]
    return parts


def _passing() -> dict[str, object]:
    return {t.id: t.threshold for t in targets.TARGETS}  # a value at the threshold holds (>=, <=, ==)


def _failing(t: targets.Target) -> object:
    if isinstance(t.threshold, bool):
        return not t.threshold
    step = max(abs(t.threshold) * 0.01, 1e-6)
    return t.threshold - step if t.op == ">=" else t.threshold + step


def test_targets_are_the_issues_list() -> None:
    ids = {t.id for t in targets.TARGETS}
    assert len(ids) == len(targets.TARGETS)
    got = {t.id: (t.op, t.threshold) for t in targets.TARGETS}
    assert got["nms_16x8400x80"] == (">=", 100.0) and got["nms_one_class_20k"] == (">=", 5.0)
    assert got["aug_rate"] == (">=", 30_000.0) and got["aug_vs_albumentations"] == (">=", 250.0)
    assert got["mask_rcnn_speed"] == (">=", 5.0) and got["yolo_n_train"] == (">=", 1.5)
    assert got["yolo_bccd_map"] == (">=", 0.583) and got["yolo_bccd_time"] == ("<=", 65.0)
    assert got["ddpm_fd"] == ("<=", 1.5) and got["engine_step"] == (">=", 0.9)
    assert {t.part for t in targets.TARGETS} <= set(PART_NAMES)


def test_judge_marks_every_target_held_at_its_threshold() -> None:
    rows = targets.judge(_numbers(_passing()))
    assert [r["held"] for r in rows] == [True] * len(targets.TARGETS)
    assert {r["verdict"] for r in rows} == {"held"}
    assert targets.all_held(rows)


@pytest.mark.parametrize("target", targets.TARGETS, ids=lambda t: t.id)
def test_judge_marks_a_target_not_held_just_past_its_threshold(target: targets.Target) -> None:
    values = _passing()
    values[target.id] = _failing(target)
    rows = {r["id"]: r for r in targets.judge(_numbers(values))}
    assert rows[target.id]["held"] is False and rows[target.id]["verdict"] == "NOT held"
    assert all(r["held"] is True for k, r in rows.items() if k != target.id)
    assert not targets.all_held(list(rows.values()))


def test_judge_directions_with_concrete_numbers() -> None:
    values = _passing()
    values.update(nms_16x8400x80=250.0, yolo_bccd_time=40.0, ddpm_fd=1.2, aug_rate=41_000.0)
    rows = {r["id"]: r["held"] for r in targets.judge(_numbers(values))}
    assert rows["nms_16x8400x80"] and rows["yolo_bccd_time"] and rows["ddpm_fd"] and rows["aug_rate"]
    values.update(nms_16x8400x80=99.9, yolo_bccd_time=65.1, ddpm_fd=1.51, aug_rate=29_999.0, nms_identical=False)
    rows = {r["id"]: r["held"] for r in targets.judge(_numbers(values))}
    assert rows["nms_16x8400x80"] is False and rows["yolo_bccd_time"] is False and rows["ddpm_fd"] is False
    assert rows["aug_rate"] is False and rows["nms_identical"] is False


def test_missing_or_nan_numbers_are_not_measured_and_not_held() -> None:
    values = _passing()
    values["mask_rcnn_speed"] = float("nan")
    parts = _numbers(values)
    del parts["quality"]["ddpm"]
    rows = {r["id"]: r for r in targets.judge(parts)}
    assert rows["mask_rcnn_speed"]["held"] is None and rows["ddpm_fd"]["held"] is None
    assert rows["ddpm_fd"]["verdict"] == "not measured"
    assert not targets.all_held(list(rows.values()))
    assert targets.judge_one(targets.TARGETS[0], 1) is None  # a number where a flag is wanted is no verdict


def test_dry_run_judges_nothing() -> None:
    rows = targets.judge(_numbers(_passing()), dry_run=True)
    assert all(r["held"] is None and r["verdict"] == "not judged (dry run)" for r in rows)


def test_gpu_test_files_are_found() -> None:
    files = gpu_test_files()
    assert "tests/ops/test_nms.py" in files and "tests/generation/test_gpu.py" in files
    assert "tests/benchmarks/test_gpu_suite.py" not in files


def _run_suite(out: Path, *args: str, timeout: float) -> subprocess.CompletedProcess:
    env = {**os.environ, "PYTHONPATH": str(ROOT)}
    cmd = [sys.executable, str(SUITE), "--out", str(out), *args]
    return subprocess.run(cmd, cwd=ROOT, env=env, capture_output=True, text=True, timeout=timeout)


def test_a_part_over_its_budget_is_killed_and_recorded_as_timed_out(tmp_path: Path) -> None:
    proc = _run_suite(tmp_path, "--dry-run", "--parts", "quality", "--part-budget", "quality=6", timeout=120)
    report = json.loads((tmp_path / "gpu_suite.json").read_text())
    (part,) = report["parts"]
    assert part["status"] == "timeout" and "budget" in part["reason"]
    assert part["seconds"] < 30
    assert proc.returncode == 1 and report["exit_code"] == 1


@pytest.mark.slow
def test_dry_run_runs_every_part_on_the_cpu(tmp_path: Path) -> None:
    # generous limits: this checks that every part runs, not how fast a shared CI machine is (~2.5 min on 2 cores)
    budgets = [f"--part-budget={name}=240" for name in PART_NAMES]
    proc = _run_suite(tmp_path, "--dry-run", "--budget", "1200", *budgets, timeout=1300)
    assert (tmp_path / "gpu_suite.md").is_file() and (tmp_path / "gpu_suite.log").is_file()
    report = json.loads((tmp_path / "gpu_suite.json").read_text())
    failures = {p["name"]: (p["status"], p["reason"], p["errors"]) for p in report["parts"] if p["status"] not in
                ("ran", "skipped")}  # fmt: skip
    assert not failures, (failures, proc.stdout[-3000:])
    assert proc.returncode == 0, proc.stdout[-3000:] + proc.stderr[-3000:]
    assert set(report) == REPORT_KEYS
    assert report["schema"] == "vision-zoo/gpu-suite/1" and report["dry_run"] is True and report["exit_code"] == 0
    assert report["versions"]["torch"] and report["device"]["name"]
    assert [p["name"] for p in report["parts"]] == PART_NAMES
    for p in report["parts"]:
        assert set(p) == PART_KEYS
        assert not p["errors"], p
        assert p["numbers"], f"part {p['name']} measured nothing"
        if p["status"] == "skipped":
            assert p["reason"] and p["skipped"]
    assert [t["id"] for t in report["targets"]] == [t.id for t in targets.TARGETS]
    for t in report["targets"]:
        assert set(t) == TARGET_KEYS and t["held"] is None
    parts = {p["name"]: p["numbers"] for p in report["parts"]}
    assert parts["nms"]["all_identical"] is True  # correctness holds even at toy sizes
    assert parts["pytest"]["skipped"] > 0  # the gpu tests were collected (and skip without CUDA)
    measured = {t["id"] for t in report["targets"] if t["value"] is not None}
    expected = {"nms_16x8400x80", "aug_rate", "faster_rcnn_speed", "mask_rcnn_matched", "engine_step", "ddpm_fd"}
    assert expected <= measured
    md = (tmp_path / "gpu_suite.md").read_text()
    assert "## Targets" in md and all(p["title"] in md for p in report["parts"])
