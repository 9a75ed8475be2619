"""Issue 13, classes 5 (keys and CLI) and 6 (one meaning per key).

Every bad key stops before any run folder exists with one ``error:`` line naming the key, the value and what is
allowed (exit 2); a closed stdout ends quietly; ``imgsz=`` reaches the model, its evaluation and its saved card;
recipe expectations hold only for their data set; fine-tuning gets a slower body and a small new head.
"""

from __future__ import annotations

import math
import os
import subprocess
import sys
from pathlib import Path

import pytest
import torch

from vision.cli.main import main as vision_main
from vision.cli.train import main as train_main
from vision.engine.config import COMMON_SCHEMA, list_recipes, resolve_args
from vision.engine.optim import build_optimizer
from vision.engine.reporting import expectation_lines
from vision.utils.keys import ArgumentError

ROOT = Path(__file__).resolve().parents[2]
QUICK = ["device=cpu", "workers=0", "plots=false", "tensorboard=false"]


def _env() -> dict[str, str]:
    return {**os.environ, "PYTHONPATH": str(ROOT)}


def _refused(capsys, tmp_path: Path, argv: list[str], *names: str) -> str:
    """Run ``tools/train.py argv`` in this process: exit 2, one ``error:`` line naming ``names``, no run folder."""
    project = tmp_path / "runs"
    with pytest.raises(SystemExit) as exit_info:
        train_main([*argv, f"project={project}"])
    assert exit_info.value.code == 2
    err = capsys.readouterr().err.strip().splitlines()
    assert len(err) == 1 and err[0].startswith("error: "), err
    for name in names:
        assert name in err[0], (name, err[0])
    assert not project.exists(), list(project.rglob("*"))
    return err[0]


# ------------------------------------------------------------------------------------------------ class 5: keys
def test_epochs_abc_subprocess_exit_2_one_line_no_run_folder(tmp_path):
    project = tmp_path / "runs"
    cmd = [
        sys.executable,
        str(ROOT / "tools" / "train.py"),
        "recipe=resnet18_digits",
        "epochs=abc",
        f"project={project}",
    ]
    proc = subprocess.run(cmd, capture_output=True, text=True, env=_env(), timeout=300)
    assert proc.returncode == 2, proc.stderr
    lines = proc.stderr.strip().splitlines()
    assert lines == ["error: epochs=abc is not allowed: epochs must be an integer >= 1"]
    assert not project.exists()


@pytest.mark.parametrize(
    ("arg", "allowed"),
    [
        ("epochs=0", "an integer >= 1"),
        ("epochs=-1", "an integer >= 1"),
        ("epochs=1.5", "an integer >= 1"),
        ("lr=nan", "a finite number > 0"),
        ("lr=inf", "a finite number > 0"),
        ("lr=0", "a finite number > 0"),
        ("batch=0", "an integer >= 1"),
        ("fraction=1.5", "in (0.0, 1.0]"),
        ("optimizer=rmsprop", "one of sgd, adamw, adam"),
        ("nan_policy=maybe", "one of stop, skip"),
        ("amp=fp8", "one of auto, off, bf16, fp16"),
        ("channels_last=sometimes", "auto, true or false"),
        ("label_smoothing=2", "in [0.0, 0.99]"),
        ("ema=perhaps", "true or false"),
    ],
)
def test_bad_values_name_key_value_and_allowed(capsys, tmp_path, arg, allowed):
    key, value = arg.split("=")
    line = _refused(capsys, tmp_path, ["recipe=resnet18_digits", arg], f"{key}=", allowed)
    assert value in line


def test_values_are_converted_to_their_declared_type():
    args = resolve_args(["recipe=resnet18_digits", "lr=1e-3", "epochs=2.0", "channels_last=false", "amp=OFF"])
    assert args["lr"] == 0.001 and isinstance(args["lr"], float)
    assert args["epochs"] == 2 and isinstance(args["epochs"], int)
    assert args["channels_last"] is False and args["amp"] == "off"


def test_every_recipe_passes_its_schema_and_common_keys_are_declared():
    for name in list_recipes():
        resolve_args([f"recipe={name}"])  # raises on a recipe value outside its declared range
    for key in ("epochs", "batch", "imgsz", "lr", "optimizer", "schedule", "nan_policy", "amp"):
        assert key in COMMON_SCHEMA


def test_task_model_mismatch_is_one_error_line(capsys, tmp_path):
    _refused(capsys, tmp_path, ["task=detection", "model=resnet18", *QUICK], "model=resnet18", "classification")


def test_wrong_architecture_weights_are_one_error_line(capsys, tmp_path):
    from safetensors.torch import save_file

    weights = tmp_path / "other.safetensors"
    save_file({"something.else": torch.zeros(3, 3)}, str(weights))
    argv = ["recipe=resnet18_digits", f"weights={weights}", "fraction=0.05", *QUICK]
    _refused(capsys, tmp_path, argv, str(weights), "does not fit")


def test_missing_data_leaves_no_run_folder(capsys, tmp_path):
    _refused(capsys, tmp_path, ["recipe=resnet18_digits", f"data={tmp_path / 'nope'}", *QUICK], "nope")


@pytest.mark.parametrize(
    ("recipe", "typo", "valid"),
    [
        ("resnet18_digits", "augment.hflp=0.5", "augment.hflip"),  # albumentations recipe
        ("yolo_n_synthetic", "augment.mosiac=1", "augment.mosaic"),  # GPU augmenter
    ],
)
def test_augment_typo_names_the_key_and_the_valid_ones(capsys, tmp_path, recipe, typo, valid):
    argv = [f"recipe={recipe}", typo, "synthetic.train=8" if "yolo" in recipe else "fraction=0.05"]
    line = _refused(capsys, tmp_path, [*argv, *QUICK], typo.split("=")[0], f"Did you mean '{valid}'", "Known keys")
    assert "TypeError" not in line


@pytest.mark.parametrize(
    ("recipe", "arg", "allowed"),
    [
        ("resnet18_digits", "augment.hflip=2", "a finite number in [0.0, 1.0]"),  # albumentations recipe
        ("resnet18_digits", "augment.scale=[0.5,1.5]", "a pair [low, high] with low <= high, both in (0.0, 1.0]"),
        ("yolo_n_synthetic", "augment.saturation=3", "a finite number in [0.0, 1.0]"),  # GPU augmenter
        ("yolo_n_synthetic", "augment.scale=[1.5,0.5]", "a number in [0.0, 0.99] or a pair [low, high] with low"),
        ("yolo_n_synthetic", "augment.mosaic=abc", "a finite number in [0.0, 1.0]"),
    ],
)
def test_augment_values_out_of_range_are_one_error_line(capsys, tmp_path, recipe, arg, allowed):
    argv = [f"recipe={recipe}", arg, "synthetic.train=8" if "yolo" in recipe else "fraction=0.05"]
    key = arg.split("=")[0]
    line = _refused(capsys, tmp_path, [*argv, *QUICK], f"error: {key}=", f"is not allowed: {key} must be {allowed}")
    assert "Traceback" not in line


def test_fid_preflight_fails_before_any_epoch(capsys, tmp_path, monkeypatch):
    monkeypatch.setenv("VISION_HOME", str(tmp_path / "empty_cache"))
    monkeypatch.setenv("VISION_OFFLINE", "1")
    _refused(capsys, tmp_path, ["recipe=dcgan_digits", "fid=true", *QUICK], "fid=true", "FID Inception", "fid=false")


@pytest.mark.parametrize(
    ("arg", "allowed"), [("batch=0", "an integer >= 1"), ("conf=1.5", "a finite number in [0.0, 1.0]")]
)
def test_infer_keys_are_checked_before_anything_is_loaded(capsys, tmp_path, arg, allowed):
    from vision.cli.infer import main as infer_main

    model = "yolo_n" if arg.startswith("conf") else "resnet18"
    with pytest.raises(SystemExit) as exit_info:
        infer_main([f"model={model}", "source=x.jpg", arg, f"project={tmp_path / 'out'}"])
    assert exit_info.value.code == 2
    assert capsys.readouterr().err.strip().splitlines() == [
        f"error: {arg} is not allowed: {arg.split('=')[0]} must be {allowed}"
    ]
    assert not (tmp_path / "out").exists()


@pytest.mark.parametrize(
    ("argv", "message"),
    [
        (["model=resnet18", "weights=m.onnx", "source=x.jpg"],
         "model=resnet18 does not apply to weights=m.onnx: an exported file carries its own network (a yolo_n); "
         "leave model= out"),
        (["model=dcgan_32", "source=x.jpg"], "source=x.jpg does not apply to a generator: it draws new images (n= sets "
         "how many)"),
    ],
)  # fmt: skip
def test_infer_keys_that_would_be_ignored_are_refused(capsys, tmp_path, monkeypatch, argv, message):
    import sys
    import types

    from vision.cli.infer import main as infer_main

    deploy = types.ModuleType("vision.deploy")  # an exported yolo_n file, as load_onnx reads it
    deploy.load_onnx = lambda path: types.SimpleNamespace(task="detection", metadata={"model": "yolo_n"})  # type: ignore[attr-defined]
    monkeypatch.setitem(sys.modules, "vision.deploy", deploy)
    with pytest.raises(SystemExit) as exit_info:
        infer_main([*argv, f"project={tmp_path / 'out'}"])
    assert exit_info.value.code == 2
    assert capsys.readouterr().err.strip().splitlines() == [f"error: {message}"]
    assert not (tmp_path / "out").exists()


def test_vision_info_bad_tag_is_an_error(capsys):
    with pytest.raises(SystemExit) as exit_info:
        vision_main(["info", "resnet50.bad_tag"])
    assert exit_info.value.code == 2
    err = capsys.readouterr().err.strip().splitlines()
    assert err == ["error: resnet50 has no weights tagged 'bad_tag'; its tags: tv2_in1k, tv_in1k"]


def test_vision_list_into_a_closed_pipe_ends_quietly():
    proc = subprocess.Popen(
        [sys.executable, "-m", "vision", "list"], stdout=subprocess.PIPE, stderr=subprocess.PIPE, env=_env(), cwd=ROOT
    )
    proc.stdout.close()  # the reader is gone before the first line is written (`vision list | head -0`)
    err = proc.stderr.read().decode()
    assert proc.wait(timeout=300) == 0, err
    assert "Traceback" not in err and "BrokenPipe" not in err, err


# ------------------------------------------------------------------------------------------------ class 6: one meaning
def test_imgsz_reaches_model_kwargs_and_conflicts_are_errors(capsys, tmp_path):
    args = resolve_args(["recipe=yolo_n_bccd", "imgsz=320"])
    assert args["imgsz"] == 320 and args["model_kwargs"]["imgsz"] == 320
    args = resolve_args(["recipe=yolo_n_bccd", "model_kwargs.imgsz=320"])
    assert args["imgsz"] == 320 and args["model_kwargs"]["imgsz"] == 320
    args = resolve_args(["task=detection", "model=yolo_n", "imgsz=320"])  # no recipe: the builder's class takes it
    assert args["model_kwargs"] == {"imgsz": 320}
    args = resolve_args(["task=detection", "model=faster_rcnn", "imgsz=320"])  # a model without that keyword
    assert args["model_kwargs"] == {}
    with pytest.raises(ArgumentError, match=r"imgsz=320 and model_kwargs\.imgsz=640 name one value"):
        resolve_args(["recipe=yolo_n_bccd", "imgsz=320", "model_kwargs.imgsz=640"])
    _refused(capsys, tmp_path, ["recipe=yolo_n_bccd", "imgsz=320", "model_kwargs.imgsz=640"], "imgsz=320")


@pytest.mark.slow
def test_imgsz_override_trains_evaluates_and_saves_at_that_size(tmp_path, capsys):
    """A real (tiny) run: the model, its per-epoch evaluation and the saved card all use imgsz=64, not 128."""
    import vision
    from vision.hub.metadata import read_safetensors_metadata

    project = tmp_path / "runs"
    argv = ["recipe=yolo_n_synthetic", "imgsz=64", "epochs=1", "batch=4", "synthetic.train=8", "synthetic.val=4",
            "synthetic.size=96", "augment.name=none", "ema=false", f"project={project}", *QUICK]  # fmt: skip
    assert train_main(argv) == 0
    out = capsys.readouterr().out
    run = project / "detection" / "train"
    meta = read_safetensors_metadata(run / "weights" / "last.safetensors")
    assert meta["imgsz"] == 64 and meta["model_kwargs"]["imgsz"] == 64
    assert vision.load_model(run, device="cpu").imgsz == 64  # inference runs at the trained size
    assert "recipe expects map" in out  # data=synthetic is what the recipe's expectation was measured on


def test_expectations_apply_only_to_their_data_set():
    args = resolve_args(["recipe=yolo_n_bccd", "data=synthetic"])
    assert args["expected"]["data"] == "bccd"
    lines = expectation_lines(args["expected"], data=args["data"], metric="map", best=0.1, maximize=True)
    assert lines == ["recipe expectations skipped: measured on data=bccd, this run used data=synthetic"]
    same = resolve_args(["recipe=yolo_n_bccd"])
    lines = expectation_lines(same["expected"], data=same["data"], metric="map", best=0.1, maximize=True)
    assert lines == ["recipe expects map >= 0.583: NOT reached"]


def test_param_groups_give_the_pretrained_body_a_lower_lr():
    model = torch.nn.Sequential(torch.nn.Linear(4, 4), torch.nn.BatchNorm1d(4), torch.nn.Linear(4, 2))
    opt = build_optimizer(model, name="adamw", lr=3e-3, head_prefixes=("2",), backbone_lr_mult=0.1)
    head = {id(p) for p in model[2].parameters()}
    for group in opt.param_groups:
        in_head = {id(p) in head for p in group["params"]}
        assert len(in_head) == 1  # a group is all head or all body
        assert math.isclose(group["lr"], 3e-3 if in_head.pop() else 3e-4)
    assert sum(len(g["params"]) for g in opt.param_groups) == len(list(model.parameters()))


def test_finetuning_defaults_small_head_slow_body(tmp_path, capsys):
    """Pretrained weights with another class count: new head std 0.01 (initial loss ~ log K), body at lr x 0.1,
    and the printed start says so."""
    from safetensors.torch import save_file

    import vision
    from vision.engine.trainer import Trainer

    torch.manual_seed(0)
    weights = tmp_path / "pretrained.safetensors"
    save_file(vision.create_model("resnet18", num_classes=7).state_dict(), str(weights))
    args = resolve_args(["recipe=resnet18_digits", f"weights={weights}", "fraction=0.2", "batch=16", *QUICK])
    trainer = Trainer(args)
    trainer._setup_device()
    trainer._build_loaders()
    trainer._build_model()
    out = capsys.readouterr().out
    assert "new head fc initialised with std 0.01" in out
    assert f"new head fc at lr {args['lr']:g}, pretrained body at lr {args['lr'] * 0.1:g}" in out
    model = trainer.model
    assert model.new_head_prefixes == ("fc",)
    head_w, head_b = model.fc.weight.detach(), model.fc.bias.detach()
    assert abs(float(head_w.std()) - 0.01) < 0.002 and float(head_b.abs().max()) == 0.0
    lrs = {round(g["initial_lr"], 8) for g in trainer.optimizers["main"].param_groups}  # before the schedule
    assert lrs == {round(args["lr"], 8), round(args["lr"] * 0.1, 8)}
    images, labels = next(iter(trainer.train_loader))
    model.eval()
    with torch.no_grad():
        loss = float(torch.nn.functional.cross_entropy(model(images), labels))
    assert abs(loss - math.log(10)) < 0.3, loss  # a std-0.4 head starts far above log(10)


# ------------------------------------------------------------------------------------------------ start of training
def test_data_summary_line_per_split_at_start(tmp_path, capsys):
    import cv2
    import numpy as np

    from vision.engine.trainer import Trainer

    rng = np.random.default_rng(0)
    for cls in ("cat", "dog"):
        for i in range(5):
            (tmp_path / "imgs" / cls).mkdir(parents=True, exist_ok=True)
            cv2.imwrite(str(tmp_path / "imgs" / cls / f"{i}.png"), rng.integers(0, 256, (16, 16, 3), dtype=np.uint8))
    (tmp_path / "imgs" / "empty").mkdir()
    args = resolve_args(["model=resnet18", f"data={tmp_path / 'imgs'}", "imgsz=16", "batch=2", *QUICK])
    trainer = Trainer(args)
    trainer._setup_device()
    trainer._build_loaders()
    lines = [ln for ln in capsys.readouterr().out.splitlines() if ln.startswith("data ")]
    summary = "10 image(s) in 2 class(es) kept; 1 empty class folder(s) skipped: empty"
    # one folder split by val_fraction (0.2 of 10): its summary, and how much of it each split uses
    assert lines == [
        f"data train: {summary}; this split uses 8 of them",
        f"data val: {summary}; this split uses 2 of them",
    ]
