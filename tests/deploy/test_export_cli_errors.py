"""``vision export``: every bad key stops with one ``error:`` line naming it, before a model is loaded or a file is
written (exit 2); a size the model cannot take is named with the size used."""

from __future__ import annotations

from pathlib import Path

import pytest

from vision.cli.main import main


def _refused(capsys, argv: list[str], tmp_path: Path) -> str:
    """Run ``vision export argv``: exit 2, one ``error:`` line, no file written; returns the message."""
    out = tmp_path / "m.onnx"
    with pytest.raises(SystemExit) as info:
        main(["export", *argv, f"file={out}"])
    assert info.value.code == 2
    err = capsys.readouterr().err.strip().splitlines()
    assert len(err) == 1 and err[0].startswith("error: "), err
    assert not out.exists()
    return err[0].removeprefix("error: ")


@pytest.mark.parametrize(
    ("arg", "message"),
    [
        ("batch=0", "batch=0 is not allowed: batch must be an integer >= 1"),
        ("imgsz=-32", "imgsz=-32 is not allowed: imgsz must be an integer >= 1"),
        ("imgsz=abc", "imgsz=abc is not allowed: imgsz must be an integer >= 1"),
        ("imgsz=0", "imgsz=0 is not allowed: imgsz must be an integer >= 1"),
        ("iou=-1", "iou=-1 is not allowed: iou must be a finite number in [0.0, 1.0]"),
        ("conf=2", "conf=2 is not allowed: conf must be a finite number in [0.0, 1.0]"),
        ("max_det=0", "max_det=0 is not allowed: max_det must be an integer >= 1"),
        ("check_images=0", "check_images=0 is not allowed: check_images must be an integer >= 1"),
        ("calib=0", "calib=0 is not allowed: calib must be an integer >= 1"),
        ("opset=12", "opset=12 is not allowed: opset must be an integer >= 17"),
        ("dynamic=maybe", "dynamic=maybe is not allowed: dynamic must be true or false"),
    ],
)
def test_bad_value_names_the_key_before_anything_is_written(arg, message, capsys, tmp_path):
    assert _refused(capsys, ["model=resnet18", arg], tmp_path) == message


def test_missing_calibration_data_is_named_data_not_source(capsys, tmp_path):
    missing = tmp_path / "nonexist"
    message = _refused(capsys, ["model=resnet18", "int8=true", f"data={missing}"], tmp_path)
    assert message == f"data={missing} is not a registered dataset, a data spec, a file, a folder or a glob that " \
        "matches anything"  # fmt: skip


def test_missing_source_is_named_before_the_export(capsys, tmp_path):
    missing = tmp_path / "nonexist"
    message = _refused(capsys, ["model=resnet18", f"source={missing}"], tmp_path)
    assert message.startswith(f"source '{missing}' is not a file")


def test_imgsz_off_the_stride_says_the_size_used(capsys, tmp_path):
    out = tmp_path / "y.onnx"
    assert main(["export", "model=yolo_n", "imgsz=50", "check_images=1", f"file={out}"]) == 0
    err = capsys.readouterr().err
    assert "note: imgsz=50 was rounded up to 64 (a multiple of the model's stride 32): the file takes 64x64 inputs" \
        in err  # fmt: skip
