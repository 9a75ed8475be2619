"""The engine in-process: outputs of a run, exact resume after an interruption, the NaN guard, errors."""

from __future__ import annotations

import csv

import pytest
import torch
import yaml
from safetensors.torch import load_file

from vision import load_model
from vision.engine import NonFiniteLossError, Trainer
from vision.engine.checkpoint import load_resume_state
from vision.engine.config import resolve_args
from vision.hub.metadata import read_safetensors_metadata
from vision.utils.keys import ArgumentError

BASE = [
    "model=tiny_convnet",
    "task=classification",
    "data=digits",
    "imgsz=16",
    "batch=32",
    "fraction=0.25",
    "workers=0",
    "lr=0.05",
    "deterministic=true",
    "tensorboard=false",
]


def _args(tmp_path, *extra):
    return resolve_args([*BASE, f"project={tmp_path}", *extra])


def test_run_writes_its_outputs(tiny_model, tmp_path, capsys):
    run = Trainer(_args(tmp_path, "epochs=2", "name=out")).fit()
    assert run == tmp_path / "classification" / "out"
    for name in (
        "args.yaml",
        "metrics.csv",
        "loss.png",
        "lr.png",
        "metrics.png",
        "confusion_matrix.png",
        "weights/last.safetensors",
        "weights/best.safetensors",
        "weights/last.state.pt",
    ):
        assert (run / name).is_file(), name
    args = yaml.safe_load((run / "args.yaml").read_text())
    assert args["model"] == "tiny_convnet" and args["epochs"] == 2 and args["fraction"] == 0.25
    rows = list(csv.DictReader((run / "metrics.csv").read_text().splitlines()))
    assert [r["epoch"] for r in rows] == ["1", "2"]
    assert {"lr", "train_loss", "top1", "top5", "precision", "recall", "f1", "auc", "val_loss"} <= set(rows[0])
    meta = read_safetensors_metadata(run / "weights" / "best.safetensors")
    assert meta["model"] == "tiny_convnet" and meta["classes"] == [str(i) for i in range(10)]
    model = load_model(run)
    assert model.categories == [str(i) for i in range(10)]
    out = capsys.readouterr().out.strip().splitlines()
    assert out[-1] == f"run saved to {run}"
    assert any(line.startswith("inference: python tools/infer.py weights=") for line in out)
    again = Trainer(_args(tmp_path, "epochs=1", "name=out")).fit()
    assert again.name == "out2", "run folders auto-increment"


EXTRA = ["ema=true", "warmup_epochs=1"]


@pytest.mark.parametrize(
    "extra", [[], EXTRA, ["cpu_replicas=2"], ["cpu_replicas=1"]], ids=["plain", "ema", "parts", "one_part"]
)
def test_interrupted_run_resumes_to_identical_weights(tiny_model, tmp_path, monkeypatch, extra):
    extra = [*extra, "save_period=2"]  # a checkpoint one batch into the second epoch: the resume starts mid-epoch
    reference = Trainer(_args(tmp_path, "epochs=3", "name=ref", *extra)).fit()
    trainer = Trainer(_args(tmp_path, "epochs=3", "name=cut", *extra))
    calls = {"n": 0}
    original = trainer.task.prepare_batch

    def dying(batch, device, *, train):
        calls["n"] += int(train)
        if train and calls["n"] == trainer_batches + 3:  # three batches into the second epoch
            raise KeyboardInterrupt("simulated kill")
        return original(batch, device, train=train)

    trainer_batches = int(0.25 * 1438) // 32
    monkeypatch.setattr(trainer.task, "prepare_batch", dying)
    with pytest.raises(KeyboardInterrupt):
        trainer.fit()
    cut = tmp_path / "classification" / "cut"
    state = load_resume_state(cut / "weights" / "last.state.pt")
    assert (state["epoch"], state["batch_in_epoch"]) == (1, 1)
    monkeypatch.undo()
    Trainer(resolve_args([f"resume={cut}"])).fit()
    a = load_file(reference / "weights" / "last.safetensors")
    b = load_file(cut / "weights" / "last.safetensors")
    assert a.keys() == b.keys()
    for key in a:
        assert torch.equal(a[key], b[key]), key
    rows = list(csv.DictReader((cut / "metrics.csv").read_text().splitlines()))
    assert [r["epoch"] for r in rows] == ["1", "2", "3"]
    ref_rows = list(csv.DictReader((reference / "metrics.csv").read_text().splitlines()))
    for ref, got in zip(ref_rows, rows):  # the resumed epoch's mean loss covers the steps before the kill too
        assert {k: v for k, v in got.items() if k != "time"} == {k: v for k, v in ref.items() if k != "time"}


def test_nan_loss_stops_naming_the_iteration_and_keeps_last_good(tiny_model, tmp_path):
    batches = int(0.25 * 1438) // 32
    args = _args(tmp_path, "epochs=3", "name=nan", f"model_kwargs.nan_at={batches + 4}")
    with pytest.raises(NonFiniteLossError, match=r"epoch 2, iteration 5") as info:
        Trainer(args).fit()
    assert "last.state.pt" in str(info.value)
    run = tmp_path / "classification" / "nan"
    state = load_resume_state(run / "weights" / "last.state.pt")
    assert state["epoch"] == 1
    assert all(torch.isfinite(v).all() for v in state["model"].values())
    model = load_model(run)
    assert all(torch.isfinite(p).all() for p in model.parameters())


def test_nan_policy_skip_continues(tiny_model, tmp_path, capsys):
    args = _args(tmp_path, "epochs=1", "name=skip", "model_kwargs.nan_at=3", "nan_policy=skip", "nan_skip_limit=20")
    run = Trainer(args).fit()
    assert (run / "weights" / "last.safetensors").is_file()
    assert "step(s) skipped for non-finite losses" in capsys.readouterr().out


def test_freeze_and_bad_keys(tiny_model, tmp_path):
    with pytest.raises(ArgumentError, match="Did you mean 'epochs'"):
        resolve_args([*BASE, "epoch=3"])
    with pytest.raises(ArgumentError, match="unknown recipe"):
        resolve_args(["recipe=no_such_recipe"])
    with pytest.raises(ArgumentError, match=r"did you mean 'yolo_n_bccd'\? Recipes: dcgan_digits, ddpm_digits, "):
        resolve_args(["recipe=yolo_n_bcd"])
    with pytest.raises(ArgumentError, match=r"unknown recipe 'mine.yaml' \(no such file; a recipe is a zoo name"):
        resolve_args(["recipe=mine.yaml"])
    trainer = Trainer(_args(tmp_path, "epochs=1", "name=frz", "freeze=[features.0]"))
    trainer.fit()
    assert not trainer.model.features[0].weight.requires_grad
    assert trainer.model.fc.weight.requires_grad
    with pytest.raises(ValueError, match="matched no parameter"):
        Trainer(_args(tmp_path, "epochs=1", "name=frz2", "freeze=[nothing]")).fit()
