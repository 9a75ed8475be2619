"""``vision export weights=<run> data=<the run's data>``: the check, calibration and int8 report images are the run's
own splits, rebuilt from its ``args.yaml`` (``synthetic.*``, ``imgsz``, ``val_fraction``) as ``vision val`` rebuilds
them, each key given on the command line overriding the run's; a ``data=`` other than the run's is used as given."""

from __future__ import annotations

from pathlib import Path

import pytest
import torch
import yaml

import vision
from vision.cli.export import KEYS, _data_args, _data_split, _images
from vision.engine.checkpoint import save_weights
from vision.engine.config import resolve_args
from vision.utils.keys import ArgumentError

pytest.importorskip("onnxruntime")

#: a detection run on 6 training and 5 validation synthetic images of 32 px (the defaults: 512, 128, 256 px)
SYNTHETIC = ["data=synthetic", "imgsz=32", "synthetic.train=6", "synthetic.val=5", "synthetic.size=32"]


def _fake_run(root: Path, argv: list[str], model: torch.nn.Module, meta: dict) -> Path:
    """A run folder as training writes it (``args.yaml``, ``weights/best.safetensors``), without the training."""
    args = resolve_args(argv)
    run = root / "trained"
    (run / "weights").mkdir(parents=True)
    (run / "args.yaml").write_text(yaml.safe_dump(args), encoding="utf-8")
    meta = {"model": args["model"], "model_kwargs": args["model_kwargs"], "task": args["task"], **meta}
    save_weights(run / "weights" / "best.safetensors", model.state_dict(), meta)
    return run


@pytest.fixture(scope="module")
def yolo_run(tmp_path_factory: pytest.TempPathFactory) -> Path:
    torch.manual_seed(0)
    model = vision.create_model("yolo_n", num_classes=3)
    meta = {"classes": ["circle", "rectangle", "triangle"], "label_offset": 0, "imgsz": 32}
    return _fake_run(tmp_path_factory.mktemp("det"), ["task=detection", "model=yolo_n", *SYNTHETIC], model, meta)


def _args(**keys: object) -> dict:
    return {**KEYS, **keys}


def test_int8_report_is_on_the_runs_own_synthetic_val(yolo_run, tmp_path, capsys):
    from vision.cli.main import main

    argv = ["export", f"weights={yolo_run}", "int8=true", "data=synthetic", "calib=2", "check_images=1"]
    assert main([*argv, f"file={tmp_path / 'y.onnx'}"]) == 0
    assert "int8 vs fp32 on synthetic val (5 images): mAP50-95" in capsys.readouterr().out


def test_int8_without_data_calibrates_on_the_runs_own_data(yolo_run, tmp_path, capsys):
    from vision.cli.main import main

    argv = ["export", f"weights={yolo_run}", "int8=true", "calib=2", "check_images=1", f"file={tmp_path / 'y.onnx'}"]
    assert main(argv) == 0
    out = capsys.readouterr().out
    assert "int8=true: calibration and report on the run's data=synthetic" in out
    assert "int8 vs fp32 on synthetic val (5 images): mAP50-95" in out


def test_int8_without_data_and_without_a_run_is_refused(tmp_path, capsys):
    from vision.cli.main import main

    with pytest.raises(SystemExit) as info:
        main(["export", "model=resnet18", "int8=true", f"file={tmp_path / 'r.onnx'}"])
    err = capsys.readouterr().err.strip().splitlines()
    assert info.value.code == 2 and err == ["error: int8=true needs data= (calibration images: a dataset name, a data "
                                           "spec or a folder)"]  # fmt: skip


@pytest.mark.parametrize("weights", ["", "weights/best.safetensors"])
def test_run_data_keys_and_overrides(yolo_run, weights):
    """The run folder or a file in its ``weights/``: the run's 5 validation images of 32 px, 6 for calibration; a
    key given on the command line overrides the run's; a typo is named with the closest keys."""
    args = _args(weights=str(yolo_run / weights), data="synthetic")
    shaping = _data_args(args, [], "detection")
    assert [len(_data_split("synthetic", "detection", split, shaping)) for split in ("val", "train")] == [5, 6]
    assert [tuple(im.shape) for im in _images(args, "check", 8, "detection", shaping)] == [(3, 32, 32)] * 5
    shaping = _data_args(args, ["synthetic.val=3"], "detection")
    assert len(_data_split("synthetic", "detection", "val", shaping)) == 3
    with pytest.raises(ArgumentError) as info:
        _data_args(args, ["synthetic.vall=3"], "detection")
    assert str(info.value).startswith("unknown key 'synthetic.vall'. Did you mean 'synthetic.val'")


def test_data_other_than_the_runs_is_used_as_given(tmp_path):
    """A run on data=bccd: data=synthetic is the synthetic defaults (128 validation images), not the run's keys."""
    torch.manual_seed(0)
    model = vision.create_model("yolo_n", num_classes=3)
    meta = {"classes": ["RBC", "WBC", "Platelets"], "label_offset": 0, "imgsz": 32}
    argv = ["task=detection", "model=yolo_n", "data=bccd", "imgsz=32", "synthetic.val=5"]
    run = _fake_run(tmp_path, argv, model, meta)
    shaping = _data_args(_args(weights=str(run), data="synthetic"), [], "detection")
    assert len(_data_split("synthetic", "detection", "val", shaping)) == 128
    shaping = _data_args(_args(weights=str(run), data="synthetic"), ["synthetic.val=7"], "detection")
    assert len(_data_split("synthetic", "detection", "val", shaping)) == 7


def test_classification_run_rebuilds_its_digits_split(tmp_path):
    """A digits run at 16 px with a 5 % validation split: the check images are its 16-px validation images (90 of
    1,797, not the default 20 % at 32 px); ``imgsz=`` on the command line overrides the run's."""
    torch.manual_seed(0)
    model = vision.create_model("resnet18", num_classes=10)
    pre = {"input_size": [16, 16], "resize_size": 16, "interpolation": "bilinear", "mean": [0.5] * 3,
           "std": [0.25] * 3, "crop": True}  # fmt: skip
    argv = ["task=classification", "model=resnet18", "data=digits", "imgsz=16", "val_fraction=0.05", "batch=64"]
    run = _fake_run(tmp_path, argv, model, {"classes": [str(i) for i in range(10)], "preprocess": pre})
    args = _args(weights=str(run), data="digits")
    shaping = _data_args(args, [], "classification")
    assert len(_data_split("digits", "classification", "val", shaping)) == 90
    assert {tuple(im.shape) for im in _images(args, "check", 4, "classification", shaping)} == {(3, 16, 16)}
    shaping = _data_args({**args, "imgsz": 24}, [], "classification")
    assert {tuple(im.shape) for im in _images(args, "check", 4, "classification", shaping)} == {(3, 24, 24)}
