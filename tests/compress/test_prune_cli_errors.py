"""``vision prune``: unknown keys get a "did you mean", ``epochs=`` without data is refused, and each integer key is
checked; every mistake is one ``error:`` line (exit 2) written before any run folder exists."""

from __future__ import annotations

import pytest

from vision.cli.prune import _example, main


def _refused(capsys, argv: list[str], tmp_path) -> str:
    with pytest.raises(SystemExit) as info:
        main(["model=resnet18", *argv, f"project={tmp_path / 'runs'}"])
    assert info.value.code == 2
    err = capsys.readouterr().err.strip().splitlines()
    assert len(err) == 1 and err[0].startswith("error: "), err
    assert not (tmp_path / "runs").exists()
    return err[0].removeprefix("error: ")


@pytest.mark.parametrize(
    ("arg", "start"),
    [
        ("foo=1", "unknown key 'foo'. Known keys: "),
        ("epoch=1", "unknown key 'epoch'. Did you mean 'epochs'"),
        ("latency_run=3", "unknown key 'latency_run'. Did you mean 'latency_runs'?"),
    ],
)
def test_unknown_key_is_refused_with_a_suggestion(arg, start, capsys, tmp_path):
    message = _refused(capsys, [arg], tmp_path)
    assert message.startswith(start) and "latency_runs" in message and "epochs" in message


@pytest.mark.parametrize(
    ("argv", "message"),
    [
        (["epochs=1"], "epochs=1 needs data= (or a recipe= naming it) to fine-tune the pruned model on"),
        (["epochs=0"], "epochs=0 is not allowed: epochs must be an integer >= 1"),
        (["imgsz=-5"], "imgsz=-5 is not allowed: imgsz must be an integer >= 1"),
        (["imgsz=0"], "imgsz=0 is not allowed: imgsz must be an integer >= 1"),
        (
            ["method=taylor", "calibration_batches=0"],
            "calibration_batches=0 is not allowed: calibration_batches must be an integer >= 1",
        ),
        (["latency_runs=0"], "latency_runs=0 is not allowed: latency_runs must be an integer >= 1"),
        (["batch=0"], "batch=0 is not allowed: batch must be an integer >= 1"),
    ],
)
def test_bad_value_names_the_key(argv, message, capsys, tmp_path):
    assert _refused(capsys, argv, tmp_path) == message


def test_example_size_off_the_stride_is_noted(capsys):
    import vision

    yolo = vision.load_model(None, model="yolo_n")
    assert _example(yolo, 50).shape[-1] == 64
    assert "note: imgsz=50 was rounded up to 64 (a multiple of the model's stride 32)" in capsys.readouterr().err
