"""Checkpoints (issue 13, class 3): one atomic unit per save, resume from complete units only, disk-full errors that
name the file, the NaN guard's last finite weights, the skip limit, and one run per run folder."""

from __future__ import annotations

import csv
import errno
import os
from pathlib import Path

import pytest
import torch
from safetensors.torch import load_file

from vision.cli.train import main as train_main
from vision.engine import NonFiniteLossError, Trainer
from vision.engine import checkpoint as C
from vision.engine._nan_guard import NanGuard
from vision.engine.config import resolve_args
from vision.engine.reporting import is_better
from vision.hub.metadata import read_safetensors_metadata

BASE = [
    "model=tiny_convnet",
    "task=classification",
    "data=digits",
    "imgsz=16",
    "batch=16",
    "fraction=0.1",  # 143 images: 8 steps per epoch
    "workers=0",
    "lr=0.05",
    "deterministic=true",
    "tensorboard=false",
    "plots=false",
]
STEPS = 143 // 16


def _args(tmp_path: Path, *extra: str) -> dict:
    return resolve_args([*BASE, f"project={tmp_path}", *extra])


def _run(tmp_path: Path, name: str) -> Path:
    return tmp_path / "classification" / name


def _same(a: Path, b: Path) -> None:
    wa, wb = load_file(a), load_file(b)
    assert wa.keys() == wb.keys()
    for key in wa:
        assert torch.equal(wa[key], wb[key]), key


def _units(run: Path) -> list[Path]:
    return sorted(p for p in (run / "weights" / "ckpt").iterdir() if not p.name.startswith("."))


def _dying_writer(monkeypatch: pytest.MonkeyPatch, *, file_name: str, nth: int, exc: BaseException) -> None:
    """Make the ``nth`` write of ``file_name`` inside a checkpoint write half its bytes, then raise ``exc``."""
    original = C._write_file
    seen = {"n": 0}

    def writer(path: Path, data: bytes | memoryview) -> None:
        if path.name == file_name:
            seen["n"] += 1
            if seen["n"] == nth:
                with open(path, "wb") as f:
                    f.write(bytes(data[: len(data) // 2]))
                raise exc
        original(path, data)

    monkeypatch.setattr(C, "_write_file", writer)


@pytest.mark.parametrize("nth", [1, 2], ids=["first-save", "later-save"])
def test_kill_between_weights_and_state_resumes_from_a_complete_unit(tiny_model, tmp_path, monkeypatch, capsys, nth):
    """A run killed after a save's weights but before its state never says "no resume state found": it resumes from
    the previous complete unit, or starts again from epoch 1 when the first save never finished."""
    reference = Trainer(_args(tmp_path, "epochs=2", "name=ref", "save_period=3")).fit()
    _dying_writer(monkeypatch, file_name="state.pt", nth=nth, exc=KeyboardInterrupt("killed"))
    with pytest.raises(KeyboardInterrupt):
        Trainer(_args(tmp_path, "epochs=2", "name=cut", "save_period=3")).fit()
    monkeypatch.undo()
    cut = _run(tmp_path, "cut")
    assert list((cut / "weights" / "ckpt").glob(".tmp-*")), "the interrupted save is left as a temporary folder"
    capsys.readouterr()
    Trainer(resolve_args([f"resume={cut}"])).fit()
    out = capsys.readouterr().out
    assert "a save the run did not finish" in out
    if nth == 1:
        assert "no complete checkpoint yet" in out and "starting it again from epoch 1" in out
    else:
        assert "resume: from checkpoint" in out and "-s00000003" in out  # the unit before the interrupted one
    _same(reference / "weights" / "last.safetensors", cut / "weights" / "last.safetensors")
    _same(reference / "weights" / "best.safetensors", cut / "weights" / "best.safetensors")
    rows = list(csv.DictReader((cut / "metrics.csv").read_text().splitlines()))
    assert [r["epoch"] for r in rows] == ["1", "2"]
    assert not list((cut / "weights").rglob("*.tmp*")), "leftovers of the interrupted save are removed"


def test_damaged_newest_unit_falls_back_to_the_previous_one(tiny_model, tmp_path, capsys):
    run = Trainer(_args(tmp_path, "epochs=2", "name=dmg")).fit()
    newest, previous = _units(run)[-1], _units(run)[-2]
    reference = load_file(run / "weights" / "last.safetensors")
    with open(newest / "state.pt", "r+b") as f:  # one flipped byte
        f.seek(100)
        byte = f.read(1)
        f.seek(100)
        f.write(bytes([byte[0] ^ 0xFF]))
    logged: list[str] = []
    run_dir, state = C.locate_resume(run, log=logged.append)
    assert run_dir == run and state == previous / "state.pt"
    assert any("damaged" in m and "SHA-256" in m and "falling back" in m for m in logged), logged
    Trainer(resolve_args([f"resume={run}"])).fit()
    resumed = load_file(run / "weights" / "last.safetensors")
    assert all(torch.equal(reference[k], resumed[k]) for k in reference)


def test_disk_full_mid_save_names_the_file_and_keeps_the_last_complete_unit(tiny_model, tmp_path, monkeypatch):
    full = OSError(errno.ENOSPC, os.strerror(errno.ENOSPC))
    _dying_writer(monkeypatch, file_name="state.pt", nth=2, exc=full)
    with pytest.raises(C.CheckpointError) as info:
        Trainer(_args(tmp_path, "epochs=3", "name=full")).fit()
    run = _run(tmp_path, "full")
    message = str(info.value)
    assert str(run / "weights" / "ckpt") in message and "state.pt" in message
    assert "No space left on device" in message and "ENOSPC" in message
    assert "last complete checkpoint is kept" in message and "end of epoch 1" in message
    assert info.value.errno == errno.ENOSPC
    assert not [p for p in (run / "weights").rglob("*") if ".tmp" in p.name], "the partial files are removed"
    (unit,) = _units(run)
    assert C.verify_unit(unit).epoch == 1
    assert os.path.samefile(run / "weights" / "last.state.pt", unit / "state.pt")
    assert os.path.samefile(run / "weights" / "last.safetensors", unit / "weights.safetensors")
    assert C.load_resume_state(C.find_resume_state(run))["epoch"] == 1


def test_a_failed_single_file_write_names_the_file_and_removes_the_partial(tmp_path, monkeypatch):
    def full(path: Path, data: bytes | memoryview) -> None:
        path.write_bytes(bytes(data[:10]))
        raise OSError(errno.EDQUOT, os.strerror(errno.EDQUOT))

    monkeypatch.setattr(C, "_write_file", full)
    target = tmp_path / "w.safetensors"
    with pytest.raises(C.CheckpointError, match=r"w\.safetensors: Disk quota exceeded \(EDQUOT\)"):
        C.save_weights(target, {"x": torch.zeros(3)}, {"model": "m"})
    assert list(tmp_path.iterdir()) == []


def test_nan_stop_writes_the_last_finite_weights_and_names_them(tiny_model, tmp_path):
    # the loss is NaN from the (STEPS + 5)-th step on: the weights after STEPS + 3 steps gave the last finite loss
    args = _args(tmp_path, "epochs=3", "name=nan", "save_period=1", f"model_kwargs.nan_at={STEPS + 4}")
    with pytest.raises(NonFiniteLossError) as info:
        Trainer(args).fit()
    run = _run(tmp_path, "nan")
    message = str(info.value)
    assert f"epoch 2, iteration 5 (global step {STEPS + 5})" in message
    written = run / "weights" / "last_finite.safetensors"
    assert f"after global step {STEPS + 3}" in message and str(written) in message
    assert "last.state.pt (epoch 2, batch 4, step 12)" in message  # the last complete checkpoint
    assert read_safetensors_metadata(written)["step"] == STEPS + 3
    (unit,) = [u for u in _units(run) if u.name.endswith(f"-s{STEPS + 3:08d}")]
    _same(unit / "weights.safetensors", written)
    for u in _units(run):
        state = C.load_resume_state(u / "state.pt")
        assert all(torch.isfinite(v).all() for v in state["model"].values())


@pytest.mark.parametrize("extra", [[], ["ema=true"]], ids=["plain", "ema"])
def test_save_period_1_never_saves_nonfinite_weights(tiny_model, tmp_path, monkeypatch, extra):
    """Weights that turn non-finite after a step with a finite loss are caught before the save of that step."""
    trainer = Trainer(_args(tmp_path, "epochs=2", "name=inf", "save_period=1", *extra))
    original = trainer._optimizer_step

    def poisoned() -> None:
        original()
        if trainer.step == 5:
            with torch.no_grad():
                trainer.model.fc.weight[0, 0] = float("inf")
                if trainer.ema is not None:
                    trainer.ema.module.fc.weight[0, 0] = float("inf")

    monkeypatch.setattr(trainer, "_optimizer_step", poisoned)
    with pytest.raises(NonFiniteLossError, match=r"weights are non-finite \(model\.fc\.weight.*at step 5") as info:
        trainer.fit()
    run = _run(tmp_path, "inf")
    assert "after global step 4" in str(info.value)
    assert max(C.verify_unit(u).step for u in _units(run)) == 4
    for u in _units(run):
        state = C.load_resume_state(u / "state.pt")
        for part in ("model", "ema"):
            assert all(torch.isfinite(v).all() for v in (state[part] or {}).values()), (u, part)
    for name in ("last_finite.safetensors", "last_finite.raw.safetensors" if extra else "last.safetensors"):
        assert all(torch.isfinite(v).all() for v in load_file(run / "weights" / name).values()), name


def test_nan_policy_skip_stops_after_the_limit_without_a_best(tiny_model, tmp_path):
    args = _args(tmp_path, "epochs=2", "name=skip", "nan_policy=skip", "nan_skip_limit=4", "model_kwargs.nan_at=3")
    with pytest.raises(NonFiniteLossError, match=r"nan_policy=skip: 4 consecutive steps had non-finite losses") as info:
        Trainer(args).fit()
    run = _run(tmp_path, "skip")
    assert "epoch 1, iteration 7" in str(info.value) and "No checkpoint was completed before this" in str(info.value)
    assert not (run / "weights" / "best.safetensors").exists(), "no best checkpoint of a run that diverged"
    assert not (run / "metrics.csv").exists()
    assert read_safetensors_metadata(run / "weights" / "last_finite.safetensors")["step"] == 2


def test_skip_limit_counts_consecutive_skips_only(tmp_path):
    guard = NanGuard(
        {"model": torch.nn.Linear(2, 2)},
        policy="skip",
        skip_limit=3,
        weights_dir=tmp_path,
        metadata=lambda epoch: {"epoch": epoch},
        print_fn=lambda *a: None,
    )
    for step in range(10):  # two non-finite steps, then a finite one, again and again: never three in a row
        if step % 3 == 2:
            guard.keep(epoch=0, iteration=step, step=step)
        else:
            guard.nonfinite_loss(float("nan"), {"cls": float("nan")}, epoch=0, iteration=step, step=step)
    assert guard.state_dict() == {"consecutive_skips": 1}
    guard.nonfinite_loss(float("nan"), {}, epoch=0, iteration=10, step=10)
    with pytest.raises(NonFiniteLossError, match="3 consecutive"):
        guard.nonfinite_loss(float("nan"), {}, epoch=0, iteration=11, step=11)
    with pytest.raises(ValueError, match="nan_skip_limit=0"):
        NanGuard({}, policy="skip", skip_limit=0, weights_dir=tmp_path, metadata=dict)


def test_a_nonfinite_metric_never_makes_a_best_checkpoint():
    assert not is_better(float("nan"), None, maximize=True)
    assert is_better(None, None, maximize=True), "without the metric, the latest validated epoch is best (unchanged)"
    assert not is_better(float("inf"), 0.5, maximize=True) and is_better(0.6, 0.5, maximize=True)
    assert is_better(0.4, 0.5, maximize=False) and not is_better(float("-inf"), 0.5, maximize=False)


def test_exist_ok_moves_an_earlier_run_aside(tiny_model, tmp_path, capsys):
    old = _run(tmp_path, "same")
    (old / "weights").mkdir(parents=True)
    (old / "metrics.csv").write_text("epoch,lr,train_loss\n1,0.1,2.0\n2,0.1,1.5\n3,0.1,1.2\n")
    (old / "weights" / "last.state.pt").write_bytes(b"an old run")
    run = Trainer(_args(tmp_path, "epochs=1", "name=same", "exist_ok=true")).fit()
    assert run == old
    out = capsys.readouterr().out
    (aside,) = [p for p in old.parent.iterdir() if p.name.startswith("same.old-")]
    assert f"moved it to {aside}" in out
    assert (aside / "metrics.csv").read_text().count("\n") == 4, "the old run is kept as it was"
    rows = list(csv.DictReader((run / "metrics.csv").read_text().splitlines()))
    assert [r["epoch"] for r in rows] == ["1"], "never appended to the old metrics.csv"
    assert C.load_resume_state(run / "weights" / "last.state.pt")["epoch"] == 1
    empty = _run(tmp_path, "empty")
    empty.mkdir()
    assert C.move_aside_old_run(empty) is None, "an empty folder is simply reused"


def test_every_unit_damaged_refuses_to_resume_and_keeps_the_weights(tiny_model, tmp_path, capsys):
    """A run whose only checkpoints are all damaged is not started again over its own weights."""
    run = Trainer(_args(tmp_path, "epochs=1", "name=alldmg")).fit()
    for unit in _units(run):
        (unit / "state.pt").write_bytes(b"truncated")
    before = (run / "weights" / "best.safetensors").read_bytes()
    with pytest.raises(FileNotFoundError, match=r"checkpoints in .*ckpt are damaged \(newest, e0001-.*state\.pt holds"):
        C.locate_resume(run)
    with pytest.raises(SystemExit) as exit_info:
        train_main([f"resume={run}"])
    assert exit_info.value.code == 2 and "are damaged" in capsys.readouterr().err
    assert (run / "weights" / "best.safetensors").read_bytes() == before
