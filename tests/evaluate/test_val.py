"""``vision val``: evaluating a trained run reproduces its last validated epoch; ``.onnx`` goes through
``vision.deploy.load_onnx``; mistakes give one ``error:`` line."""

from __future__ import annotations

import csv
import json
import shutil
import sys
import types
from pathlib import Path
from typing import Any

import numpy as np
import pytest
import torch

from vision import load_model
from vision.cli.main import main as vision_main
from vision.cli.val import evaluate


def _last_row(run: Path) -> dict[str, str]:
    return list(csv.DictReader((run / "metrics.csv").read_text(encoding="utf-8").splitlines()))[-1]


def _assert_same_metrics(run: Path, out: Path, keys: list[str]) -> None:
    trained, again = _last_row(run), _last_row(out)
    for key in keys:
        assert again[key] == trained[key], key  # metrics.csv of both, written the same way: the same digits


@pytest.mark.slow
def test_val_reproduces_classification_run(cls_run, tmp_path, capsys):
    rc = vision_main(["val", f"weights={cls_run}", f"project={tmp_path}"])
    assert rc == 0
    out = Path(capsys.readouterr().out.strip().splitlines()[-1].removeprefix("results saved to "))
    assert out.parent == tmp_path / "classification"
    _assert_same_metrics(cls_run, out, ["top1", "top5", "precision", "recall", "f1", "auc", "val_loss"])
    assert (out / "confusion_matrix.png").is_file()
    summary = json.loads((out / "metrics.json").read_text())
    top1 = float(_last_row(cls_run)["top1"])
    assert summary["images"] == 359 and summary["metrics"]["top1"] == pytest.approx(top1, abs=1e-6)


@pytest.mark.slow
def test_val_reproduces_detection_run(det_run, tmp_path, capsys):
    weights = det_run / "weights" / "last.safetensors"  # a file of a run: the run's data, imgsz and kwargs
    rc = vision_main(["val", f"weights={weights}", f"project={tmp_path}", "name=check"])
    assert rc == 0
    printed = capsys.readouterr().out.strip().splitlines()
    assert printed[-2].startswith(f"val {weights} on synthetic (4 images): map ")  # one summary line
    assert not any("Average Precision" in line for line in printed)  # COCOeval's printout went to a file
    out = tmp_path / "detection" / "check"
    _assert_same_metrics(det_run, out, ["map", "map50", "map75", "mar_100"])
    for name in ("coco_eval.txt", "predictions_bbox.json", "pr_curve.png", "val_predictions.png"):
        assert (out / name).is_file(), name
    assert json.loads((out / "predictions_bbox.json").read_text()) == json.loads(
        (det_run / "predictions_bbox.json").read_text()
    )
    assert "Average Precision" in (det_run / "coco_eval.txt").read_text()  # training writes it too


class _FakeOnnx:
    """The ``vision.deploy.load_onnx`` contract, served by a PyTorch model (the exported file's stand-in)."""

    background_class = False

    def __init__(self, model: Any, task: str, preprocess: dict[str, Any]) -> None:
        self.model, self.task, self.preprocess = model, task, preprocess
        self.categories = list(model.categories)
        self.num_classes = len(self.categories)
        self.calls = 0

    def __call__(self, x: Any) -> np.ndarray:
        self.calls += 1
        with torch.no_grad():
            return self.model(torch.as_tensor(np.asarray(x))).numpy()

    def predict(self, images: list[Any], **_: Any) -> list[dict[str, np.ndarray]]:
        self.calls += 1
        dets = self.model.predict([torch.as_tensor(np.asarray(i)) for i in images])
        return [{k: v.numpy() for k, v in d.items()} for d in dets]


@pytest.fixture
def fake_deploy(monkeypatch):
    module = types.ModuleType("vision.deploy")
    made: list[_FakeOnnx] = []

    def load_onnx(path: str) -> _FakeOnnx:
        made.append(factory[Path(path).name]())
        return made[-1]

    factory: dict[str, Any] = {}
    module.load_onnx = load_onnx  # type: ignore[attr-defined]
    monkeypatch.setitem(sys.modules, "vision.deploy", module)
    return factory, made


@pytest.mark.slow
def test_val_of_onnx_goes_through_load_onnx(cls_run, det_run, tmp_path, fake_deploy, capsys):
    factory, made = fake_deploy
    cls_model = load_model(str(cls_run / "weights" / "last.safetensors"))
    pre = {"input_size": [32, 32], "mean": [0.485, 0.456, 0.406], "std": [0.229, 0.224, 0.225], "letterbox": False}
    factory["cls.onnx"] = lambda: _FakeOnnx(cls_model, "classification", pre)
    det_model = load_model(str(det_run / "weights" / "last.safetensors"))
    factory["det.onnx"] = lambda: _FakeOnnx(det_model, "detection", {"input_size": [64, 64], "letterbox": True})
    for name in ("cls.onnx", "det.onnx"):
        (tmp_path / name).write_bytes(b"onnx")
    _, metrics = evaluate([f"weights={tmp_path / 'cls.onnx'}", "data=digits", f"project={tmp_path}"])
    assert made[-1].calls > 0 and metrics["top1"] == pytest.approx(float(_last_row(cls_run)["top1"]), abs=1e-6)
    synthetic = ["data=synthetic", "synthetic.train=8", "synthetic.val=4", "synthetic.size=64", "batch=4"]
    _, metrics = evaluate([f"weights={tmp_path / 'det.onnx'}", *synthetic, f"project={tmp_path}"])
    assert made[-1].calls > 0 and metrics["map"] == pytest.approx(float(_last_row(det_run)["map"]), abs=1e-6)


@pytest.mark.slow
def test_val_of_an_exported_file_in_its_run_uses_the_runs_data_keys(det_run, tmp_path, fake_deploy, capsys):
    """``vision export`` writes ``<run>/weights/best.onnx``; ``vision val`` of it with only ``data=synthetic`` (as
    the README shows) rebuilds the run's own split (8/4 images at 64 px), not the default synthetic set."""
    factory, made = fake_deploy
    det_model = load_model(str(det_run / "weights" / "last.safetensors"))
    factory["best.onnx"] = lambda: _FakeOnnx(det_model, "detection", {"input_size": [64, 64], "letterbox": True})
    run = tmp_path / "run"
    (run / "weights").mkdir(parents=True)
    shutil.copy(det_run / "args.yaml", run / "args.yaml")
    (run / "weights" / "best.onnx").write_bytes(b"onnx")
    _, metrics = evaluate([f"weights={run / 'weights' / 'best.onnx'}", "data=synthetic", f"project={tmp_path}"])
    out = capsys.readouterr().out
    assert "validation data from its run's" in out and "on synthetic (4 images)" in out
    assert made[-1].calls > 0 and metrics["map"] == pytest.approx(float(_last_row(det_run)["map"]), abs=1e-6)


@pytest.mark.slow
def test_val_of_a_real_onnx_export(cls_run, tmp_path):
    assert vision_main(["export", f"weights={cls_run / 'weights' / 'last.safetensors'}", "format=onnx"]) == 0
    exported = cls_run / "weights" / "last.onnx"  # vision export writes the .onnx beside the weights file
    assert exported.is_file()
    _, metrics = evaluate([f"weights={exported}", "data=digits", f"project={tmp_path}"])
    assert metrics["top1"] == pytest.approx(float(_last_row(cls_run)["top1"]), abs=0.01)


@pytest.mark.parametrize(
    ("argv", "culprit"),
    [
        ([], "weights= is required"),
        (["weights=nothing_here.onnx"], "nothing_here.onnx"),
        (["weights=x", "split=train"], "split=train"),
        (["weights=resnet_tag"], "model= is required"),
    ],
)
def test_val_mistakes_give_one_error_line(argv, culprit, capsys):
    with pytest.raises(SystemExit) as info:
        vision_main(["val", *argv])
    assert info.value.code == 2
    err = capsys.readouterr().err.strip().splitlines()
    assert len(err) == 1 and err[0].startswith("error: ") and culprit in err[0]


def test_val_unknown_key_names_it(cls_run, capsys):
    with pytest.raises(SystemExit) as info:
        vision_main(["val", f"weights={cls_run}", "bogus=1"])
    err = capsys.readouterr().err.strip().splitlines()
    assert info.value.code == 2 and len(err) == 1 and err[0].startswith("error: unknown key 'bogus'")
