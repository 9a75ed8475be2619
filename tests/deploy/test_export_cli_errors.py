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


def test_opset_above_the_exporters_names_the_range(capsys, tmp_path):
    from vision.deploy.export import max_opset

    top = max_opset()
    message = _refused(capsys, ["model=resnet18", f"opset={top + 4}"], tmp_path)
    assert message.startswith(f"opset={top + 4} is not supported: the TorchScript ONNX exporter of torch ")
    assert message.endswith(f"writes opsets 17 to {top}")


def test_data_of_another_task_is_refused_before_the_file_is_written(capsys, tmp_path):
    message = _refused(capsys, ["model=resnet18", "data=bccd"], tmp_path)
    assert message == "data='bccd' is a detection dataset, not one for task 'classification'"
    message = _refused(capsys, ["model=yolo_n", "imgsz=64", "data=digits"], tmp_path)
    assert message == "data='digits' is a classification dataset, not one for task 'detection'"


def test_classifier_checks_on_a_classification_dataset(capsys, tmp_path):
    """``data=digits`` with a classifier: the check runs on the digits' validation images."""
    out = tmp_path / "c.onnx"
    assert main(["export", "model=resnet18", "imgsz=32", "data=digits", "check_images=2", f"file={out}"]) == 0
    lines = capsys.readouterr().out.splitlines()
    assert out.is_file() and "onnxruntime check: PASS on 2 images" in lines[-1]


def test_a_file_that_cannot_be_written_is_named_before_the_export(capsys, tmp_path):
    (tmp_path / "folder").mkdir()
    (tmp_path / "plain").write_text("x")
    for target, why in [(tmp_path / "folder", "is a folder: name the .onnx file to write"),
                        (tmp_path / "plain" / "m.onnx", f"cannot be written: {tmp_path / 'plain'} is a file, not a "
                                                        "folder")]:  # fmt: skip
        with pytest.raises(SystemExit) as info:
            main(["export", "model=resnet18", f"file={target}"])
        assert info.value.code == 2
        err = capsys.readouterr().err.strip().splitlines()
        assert err == [f"error: file={target} {why}"]
    assert sorted(p.name for p in tmp_path.iterdir()) == ["folder", "plain"]
    assert not any((tmp_path / "folder").iterdir())
