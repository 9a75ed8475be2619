"""What ``vision.load_model`` (and ``tools/infer.py weights=``) refuses, with one line saying what to load instead:
a training-state file (``weights/last.state.pt``, ``weights/ckpt/<unit>/state.pt``, written for ``resume=``), an
exported ``.onnx`` file, and ``model=`` naming another architecture than a trained file's (its docstring says so)."""

from __future__ import annotations

from pathlib import Path

import pytest
import torch
import yaml

import vision
from vision.cli.infer import main as infer_main
from vision.engine.checkpoint import write_checkpoint
from vision.io import write_image

CLASSES = ["ant", "bee", "cat"]


@pytest.fixture(scope="module")
def run(tmp_path_factory: pytest.TempPathFactory) -> Path:
    """A run folder as training writes it: args.yaml, one checkpoint unit and the ``last``/``best`` views."""
    torch.manual_seed(0)
    model = vision.create_model("csp_darknet_n", num_classes=len(CLASSES))  # another head size than the default
    run = tmp_path_factory.mktemp("loader") / "run"
    (run / "weights").mkdir(parents=True)
    args = {"task": "classification", "model": "csp_darknet_n", "model_kwargs": {}}
    (run / "args.yaml").write_text(yaml.safe_dump(args), encoding="utf-8")
    meta = {"model": "csp_darknet_n", "task": "classification", "classes": CLASSES, "model_kwargs": {}}
    state = {"format": "vision-zoo/train-state/1", "args": args, "epoch": 1, "model": model.state_dict(), "ema": None}
    write_checkpoint(
        run / "weights", weights=model.state_dict(), metadata=meta, state=state, epoch=1, step=4, best=True
    )
    return run


def _infer_error(tmp_path: Path, capsys: pytest.CaptureFixture[str], *args: str) -> str:
    image = write_image(tmp_path / "img.png", torch.full((3, 32, 32), 128, dtype=torch.uint8))
    with pytest.raises(SystemExit) as info:
        infer_main([*args, f"source={image}", f"project={tmp_path / 'out'}"])
    err = capsys.readouterr().err.strip()
    assert info.value.code == 2 and err.startswith("error: ") and "\n" not in err and "Traceback" not in err, err
    return err


def test_the_run_and_its_weights_load(run: Path) -> None:
    assert vision.load_model(run).categories == CLASSES
    unit = next((run / "weights" / "ckpt").iterdir())
    assert vision.load_model(unit / "weights.safetensors").categories == CLASSES


def test_last_state_file_names_the_weights_to_use(run: Path, tmp_path: Path, capsys) -> None:
    state = run / "weights" / "last.state.pt"
    assert state.is_file()
    expected = (
        f"{state} is a training-state file (for resume=); use {run / 'weights' / 'best.safetensors'} or "
        f"{run / 'weights' / 'last.safetensors'}, or the run folder {run}"
    )
    with pytest.raises(ValueError, match="training-state file") as info:
        vision.load_model(state)
    assert str(info.value) == expected
    with pytest.raises(ValueError, match="training-state file"):
        vision.load_model(state, model="csp_darknet_n")
    assert _infer_error(tmp_path, capsys, f"weights={state}") == f"error: {expected}"


def test_unit_state_file_names_the_units_weights(run: Path, tmp_path: Path, capsys) -> None:
    unit = next((run / "weights" / "ckpt").iterdir())
    expected = f"{unit / 'state.pt'} is a training-state file (for resume=); use {unit / 'weights.safetensors'}"
    with pytest.raises(ValueError, match="training-state file") as info:
        vision.load_model(unit / "state.pt")
    assert str(info.value).startswith(expected) and str(info.value).endswith(f"or the run folder {run}")
    assert "training-state file" in _infer_error(tmp_path, capsys, f"weights={unit / 'state.pt'}")


def test_a_copied_state_file_outside_a_run_is_refused_too(run: Path, tmp_path: Path) -> None:
    copy = tmp_path / "last.state.pt"
    copy.write_bytes((run / "weights" / "last.state.pt").read_bytes())
    with pytest.raises(ValueError, match=r"last\.state\.pt is a training-state file .*weights/best\.safetensors"):
        vision.load_model(copy, model="csp_darknet_n")


def test_onnx_file_points_to_load_onnx(tmp_path: Path, run: Path) -> None:
    onnx = tmp_path / "model.onnx"
    onnx.write_bytes(b"not read: the suffix says what it is")
    exported = run / "weights" / "best.onnx"  # where vision export writes it: inside the run's weights/
    exported.write_bytes(onnx.read_bytes())
    for path, model in ((onnx, None), (onnx, "yolo_n"), (exported, None)):
        with pytest.raises(ValueError, match="exported ONNX model") as info:
            vision.load_model(path, model=model)
        assert str(info.value) == (
            f"{path} is an exported ONNX model, not PyTorch weights: load it with vision.deploy.load_onnx('{path}')"
        )
    exported.unlink()
    with pytest.raises(FileNotFoundError, match="no such file"):
        vision.load_model(tmp_path / "missing.onnx")


def test_model_must_match_a_trained_file(run: Path) -> None:
    doc = " ".join(vision.load_model.__doc__.split())
    assert "overrides" not in doc and "leave it out or give that same architecture" in doc
    with pytest.raises(ValueError, match=r"holds a csp_darknet_n \(classification\) model, not resnet18"):
        vision.load_model(run, model="resnet18")
    assert vision.load_model(run, model="csp_darknet_n").categories == CLASSES
