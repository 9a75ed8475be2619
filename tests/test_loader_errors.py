"""Bad weight files and mismatched names through the loader and ``tools/infer.py``: one ``error:`` line naming the
file or the argument at fault (a truncated safetensors file, a garbage ONNX file, weights of another architecture
than ``model=``, an unknown ``model_kwargs`` key, ``explain=`` with an exported model)."""

from __future__ import annotations

from pathlib import Path

import pytest
import torch

import vision
from vision.cli.infer import main as infer_main
from vision.engine.checkpoint import save_weights
from vision.hub.download import WeightsFileError
from vision.io import write_image


def _image(tmp_path: Path) -> Path:
    return write_image(tmp_path / "img.png", torch.full((3, 32, 32), 128, dtype=torch.uint8))


def _infer_error(tmp_path: Path, capsys: pytest.CaptureFixture[str], *args: str) -> str:
    with pytest.raises(SystemExit) as info:
        infer_main([*args, f"source={_image(tmp_path)}", f"project={tmp_path / 'out'}"])
    err = capsys.readouterr().err.strip()
    assert info.value.code == 2 and err.startswith("error: ") and "\n" not in err and "Traceback" not in err, err
    return err


@pytest.fixture
def yolo_file(tmp_path: Path) -> Path:
    """A ``.safetensors`` file as training writes it (metadata names the model, its kwargs and classes)."""
    torch.manual_seed(0)
    model = vision.create_model("yolo_n", num_classes=2, imgsz=64)
    meta = {"model": "yolo_n", "task": "detection", "classes": ["a", "b"], "model_kwargs": {"imgsz": 64}}
    return save_weights(tmp_path / "yolo.safetensors", model.state_dict(), meta)


def test_truncated_safetensors_file_is_named(tmp_path, capsys, yolo_file):
    cut = tmp_path / "cut.safetensors"
    cut.write_bytes(yolo_file.read_bytes()[:200])
    with pytest.raises(WeightsFileError, match=r"cut\.safetensors is not a valid safetensors file"):
        vision.load_model(cut)
    assert "cut.safetensors is not a valid safetensors file" in _infer_error(tmp_path, capsys, f"weights={cut}")


def test_weights_of_another_architecture_than_model_are_refused(tmp_path, capsys, yolo_file):
    err = _infer_error(tmp_path, capsys, "model=resnet18", f"weights={yolo_file}")
    assert "holds a yolo_n (detection) model, not resnet18" in err
    with pytest.raises(ValueError, match=r"holds a yolo_n .* not yolo_s"):
        vision.load_model(yolo_file, model="yolo_s")
    assert vision.load_model(yolo_file, model="yolo_n").categories == ["a", "b"]  # naming the same model is fine


def test_unknown_model_keyword_names_the_key():
    with pytest.raises(ValueError, match=r"yolo_n takes no argument 'foo' \(model_kwargs\.foo=\)"):
        vision.create_model("yolo_n", foo=1)
    with pytest.raises(ValueError, match=r"resnet18 takes no argument 'imgsz'"):
        vision.create_model("resnet18", imgsz=64)


def test_garbage_onnx_file_and_explain_with_onnx(tmp_path, capsys):
    pytest.importorskip("onnxruntime")
    garbage = tmp_path / "model.onnx"
    garbage.write_bytes(b"this is not a protobuf\x00\xff" * 10)
    assert "model.onnx is not a valid ONNX model" in _infer_error(tmp_path, capsys, f"weights={garbage}")
    from vision.deploy import export_onnx

    torch.manual_seed(0)
    path = export_onnx(vision.create_model("yolo_n", num_classes=2, imgsz=64).eval(), tmp_path / "ok.onnx")
    err = _infer_error(tmp_path, capsys, f"weights={path}", "explain=eigencam")
    assert "explain=eigencam needs the PyTorch model" in err and "ok.onnx" in err
