"""``vision val``: a bad ``batch``/``imgsz``/task key is one ``error:`` line naming it (exit 2); ``imgsz=`` that an
exported file cannot take is refused rather than ignored."""

from __future__ import annotations

import sys
import types
from pathlib import Path
from typing import Any

import pytest

from vision.cli.main import main


def _refused(capsys, argv: list[str]) -> str:
    with pytest.raises(SystemExit) as info:
        main(["val", *argv])
    assert info.value.code == 2
    err = capsys.readouterr().err.strip().splitlines()
    assert len(err) == 1 and err[0].startswith("error: "), err
    return err[0].removeprefix("error: ")


@pytest.mark.parametrize(
    ("arg", "message"),
    [
        ("batch=0", "batch=0 is not allowed: batch must be an integer >= 1"),
        ("imgsz=0", "imgsz=0 is not allowed: imgsz must be an integer >= 1"),
        ("imgsz=abc", "imgsz=abc is not allowed: imgsz must be an integer >= 1"),
        ("workers=-1", "workers=-1 is not allowed: workers must be an integer >= 0"),
    ],
)
def test_bad_value_names_the_key(arg, message, capsys, tmp_path):
    assert _refused(capsys, ["weights=x", arg, f"project={tmp_path}"]) == message
    assert not any(tmp_path.iterdir())


def test_bad_task_key_names_the_key(capsys, tmp_path):
    message = _refused(capsys, ["model=resnet18", "weights=x", "val_fraction=5", f"project={tmp_path}"])
    assert message == "val_fraction=5.0 is not allowed: val_fraction must be a finite number in [0.0, 0.99]"


@pytest.fixture
def onnx_file(monkeypatch, tmp_path) -> dict[str, Any]:
    """An ``.onnx`` path whose ``load_onnx`` returns a stand-in with the given ``preprocess``."""
    pre: dict[str, Any] = {"input_size": [64, 64]}
    module = types.ModuleType("vision.deploy")
    module.load_onnx = lambda path: types.SimpleNamespace(preprocess=pre, task="detection")  # type: ignore[attr-defined]
    monkeypatch.setitem(sys.modules, "vision.deploy", module)
    (tmp_path / "m.onnx").write_bytes(b"onnx")
    return pre


def test_imgsz_other_than_the_exported_size_is_refused(onnx_file, capsys, tmp_path):
    weights = Path(tmp_path / "m.onnx")
    message = _refused(capsys, [f"weights={weights}", "imgsz=128"])
    assert message == f"imgsz=128 does not apply to weights={weights}: the file was exported for 64x64 inputs; " \
        "leave imgsz out, or export again with imgsz=128"  # fmt: skip
    onnx_file.pop("input_size")  # R-CNN: resizes inside the graph
    assert "resizes each image inside its graph" in _refused(capsys, [f"weights={weights}", "imgsz=128"])


def test_imgsz_equal_to_the_exported_size_is_accepted():
    from vision.cli.val import _check_onnx_imgsz

    _check_onnx_imgsz(64, "m.onnx", types.SimpleNamespace(preprocess={"input_size": [64, 64]}))
