"""What a run records and what a resume accepts: ``epochs=`` at or below the epochs done is refused (nothing is
rewritten), ``--key=value`` is ``key=value`` for the keys that pick the recipe and task, a relative ``data=`` folder is
recorded absolute (resume and ``vision val`` work from another folder), and classification takes ``cache=ram``."""

from __future__ import annotations

import os

import cv2
import numpy as np
import pytest
import torch
import yaml
from safetensors.torch import load_file

from vision.cli.train import main as train_main
from vision.cli.val import main as val_main
from vision.engine.config import resolve_args

QUICK = ["model=tiny_convnet", "imgsz=16", "batch=4", "lr=0.05", "workers=0", "tensorboard=false", "plots=false"]


def _images(root, n=6):
    rng = np.random.default_rng(0)
    for cls in ("cat", "dog"):
        (root / cls).mkdir(parents=True)
        for i in range(n):
            cv2.imwrite(str(root / cls / f"{i}.png"), rng.integers(0, 256, (20, 18, 3), dtype=np.uint8))
    return root


def _train(argv, capsys):
    """``tools/train.py argv``: (exit status, stdout, stderr)."""
    try:
        code = train_main(argv)
    except SystemExit as stop:
        code = stop.code
    out, err = capsys.readouterr()
    return code, out, err


def _files(run):
    return {p.relative_to(run): p.read_bytes() for p in sorted(run.rglob("*")) if p.is_file()}


def test_resume_with_no_epochs_left_is_refused_and_leaves_the_run_as_it_was(tiny_model, tmp_path, capsys):
    code, _, _ = _train([*QUICK, "data=digits", "fraction=0.02", "epochs=2", f"project={tmp_path}"], capsys)
    run = tmp_path / "classification" / "train"
    assert code == 0
    before = _files(run)
    code, out, err = _train([f"resume={run}"], capsys)  # finished: nothing to resume, said in one line, exit 0
    assert (code, err) == (0, "")
    assert out == f"{run} has finished its 2 epochs: nothing to resume; give epochs=3 or more to train it further\n"
    code, out, err = _train([f"resume={run}", "epochs=1"], capsys)
    assert (code, out) == (2, "")
    assert (
        err == f"error: epochs=1 is fewer than the 2 epochs {run} has done; give epochs=3 or more to train it further\n"
    )
    older = sorted((run / "weights" / "ckpt").iterdir())[0]  # end of epoch 1: its metrics row 2 must stay
    code, out, err = _train([f"resume={older}", "epochs=1"], capsys)
    assert (code, out) == (2, "")
    assert err.startswith(f"error: epochs=1: {run} has done 1 epoch already, nothing is left to train")
    assert _files(run) == before  # args.yaml still says epochs: 2, metrics.csv keeps both rows
    code, out, err = _train([f"resume={run}", "--epochs=3"], capsys)  # --key=value is key=value on resume too
    assert code == 0, err
    assert yaml.safe_load((run / "args.yaml").read_text())["epochs"] == 3
    assert (run / "metrics.csv").read_text().count("\n") == 4  # header + 3 epochs


def test_a_run_killed_after_its_last_save_resumes_to_its_views_and_says_it_finished(tiny_model, tmp_path, capsys):
    code, _, _ = _train([*QUICK, "data=digits", "fraction=0.02", "epochs=2", f"project={tmp_path}"], capsys)
    assert code == 0
    weights = tmp_path / "classification" / "train" / "weights"
    older, newest = sorted((weights / "ckpt").iterdir())
    (weights / "last.safetensors").unlink()  # as if killed before the last view pointed at the newest unit
    os.link(older / "weights.safetensors", weights / "last.safetensors")
    code, out, _ = _train([f"resume={weights.parent}"], capsys)
    assert code == 0 and out.count("\n") == 1 and "has finished its 2 epochs" in out
    assert os.path.samefile(weights / "last.safetensors", newest / "weights.safetensors")


def test_double_dash_keys_pick_the_recipe_and_the_task(tiny_model):
    args = resolve_args(["--recipe=resnet18_digits", "--epochs=1"])
    assert (args["recipe"], args["model"], args["task"], args["epochs"]) == (
        "resnet18_digits",
        "resnet18",
        "classification",
        1,
    )
    assert resolve_args(["--model=tiny_convnet"], default_recipe="yolo_n_synthetic")["task"] == "classification"
    assert resolve_args(["--task=classification", "model=tiny_convnet"])["recipe"] == ""


def test_a_relative_data_folder_is_recorded_absolute_so_resume_and_val_work_elsewhere(
    tiny_model, tmp_path, monkeypatch, capsys
):
    start, elsewhere = tmp_path / "start", tmp_path / "elsewhere"
    _images(start / "data" / "pets")
    elsewhere.mkdir()
    monkeypatch.chdir(start)
    code, _, err = _train([*QUICK, "data=data/pets", "epochs=1", "project=runs", "val_fraction=0.25"], capsys)
    assert code == 0, err
    run = start / "runs" / "classification" / "train"
    assert yaml.safe_load((run / "args.yaml").read_text())["data"] == str(start / "data" / "pets")
    assert resolve_args(["model=tiny_convnet", "data=digits"])["data"] == "digits"  # a registered name stays
    monkeypatch.chdir(elsewhere)
    code, _, err = _train([f"resume={run}", "epochs=2"], capsys)
    assert code == 0, err
    assert val_main([f"weights={run}", "project=vals"]) == 0
    assert "on " + str(start / "data" / "pets") in capsys.readouterr().out


def test_cache_ram_trains_a_classifier_to_the_same_weights(tiny_model, tmp_path, capsys):
    data = _images(tmp_path / "pets")
    common = [*QUICK, f"data={data}", "epochs=1", f"project={tmp_path}"]
    code, _, err = _train([*common, "name=files"], capsys)
    assert code == 0, err
    code, out, err = _train([*common, "name=ram", "cache=ram"], capsys)
    assert code == 0, err
    assert "cache=ram: 12 images decoded in" in out  # the 10 training and 2 validation images, each once
    a = load_file(tmp_path / "classification" / "files" / "weights" / "last.safetensors")
    b = load_file(tmp_path / "classification" / "ram" / "weights" / "last.safetensors")
    assert all(torch.equal(a[k], b[k]) for k in a)
    code, out, err = _train([*QUICK, "data=digits", "fraction=0.02", "epochs=1", "cache=ram", f"project={tmp_path}"],
                            capsys)  # fmt: skip
    assert code == 0, err
    assert "cache=ram: data=digits is not read from image files; nothing to cache" in out


@pytest.mark.parametrize("value", ["disk", "yes"])
def test_a_bad_cache_value_is_one_error_line(tiny_model, tmp_path, capsys, value):
    code, _, err = _train([*QUICK, "data=digits", f"cache={value}", f"project={tmp_path}"], capsys)
    assert (
        code == 2
        and err.count("\n") == 1
        and err.startswith("error: cache=")
        and not (tmp_path / "classification").exists()
    )
