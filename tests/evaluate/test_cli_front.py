"""The ``vision`` command's front: ``--key=value`` is ``key=value`` in every front end, ``help`` works after every
subcommand, a user's mistake is one ``error:`` line (exit 2) naming what is at fault (argparse's own mistakes too),
``vision list`` says which option empties it, ``--markdown`` tables what is listed, and Ctrl-C is one line (exit 130),
naming the run to resume when training is stopped."""

from __future__ import annotations

import subprocess
import sys
from pathlib import Path
from typing import Any

import pytest
import torch

import vision
from vision.cli.main import main, markdown_table
from vision.io import write_image

ROOT = Path(__file__).resolve().parents[2]


def _refused(capsys, argv: list[str]) -> str:
    """The one ``error:`` line of a refused command line (exit 2), without its prefix."""
    with pytest.raises(SystemExit) as info:
        main(argv)
    assert info.value.code == 2
    captured = capsys.readouterr()
    err = captured.err.strip().splitlines()
    assert len(err) == 1 and err[0].startswith("error: "), captured
    assert "Traceback" not in captured.err and "usage:" not in captured.err
    return err[0].removeprefix("error: ")


def _stopped(capsys, argv: list[str], run: Any = main) -> str:
    """The one line a Ctrl-C prints (exit 130)."""

    def guarded() -> None:
        try:
            run(argv)
        except KeyboardInterrupt:
            pytest.fail("the Ctrl-C reached the interpreter: a traceback")

    with pytest.raises(SystemExit) as info:
        guarded()
    assert info.value.code == 130
    err = capsys.readouterr().err.strip().splitlines()
    assert len(err) == 1, err
    return err[0]


# ------------------------------------------------------------------------------------------------ 1: --key=value
def test_infer_takes_dashed_keys(capsys, monkeypatch, tmp_path):
    torch.manual_seed(0)
    model = vision.create_model("csp_darknet_n", num_classes=3).eval()
    model.categories = ["cat", "dog", "fox"]
    monkeypatch.setattr("vision.tasks.classification.infer.load_model", lambda *a, **k: model)
    image = write_image(tmp_path / "x.png", torch.randint(0, 256, (3, 32, 40), dtype=torch.uint8))
    argv = ["infer", "--model=csp_darknet_n", f"--source={image}", "--topk=2", "device=cpu", f"project={tmp_path}"]
    assert main(argv) == 0
    captured = capsys.readouterr()
    assert captured.out.strip().splitlines()[-1] == f"results saved to {tmp_path / 'classification' / 'infer'}"


def test_infer_takes_a_dashed_run(capsys, cls_run, tmp_path):
    image = write_image(tmp_path / "x.png", torch.randint(0, 256, (3, 32, 40), dtype=torch.uint8))
    assert main(["infer", f"--weights={cls_run}", f"source={image}", "device=cpu", f"project={tmp_path}"]) == 0
    captured = capsys.readouterr()
    assert captured.out.strip().splitlines()[-1] == f"results saved to {tmp_path / 'classification' / 'infer'}"
    assert not captured.err, "a run carries its weights: no warning"


# ------------------------------------------------------------------------------------------------ 2, 6: help
@pytest.mark.parametrize(
    ("argv", "fault"),
    [
        (["train", "--help", "foo=1"], "unknown key 'foo'"),
        (["train", "help", "recipe=nope"], "unknown recipe 'nope'"),
        (["info", "resnet18", "extra"], "vision info: unrecognized arguments: extra"),
        (["list", "--bogus"], "vision list: unrecognized arguments: --bogus"),
        (["nosuchcmd"], "unknown command 'nosuchcmd'; commands: list, info, plugins, train, infer, val, prune"),
        (["lst"], "unknown command 'lst' (did you mean list?)"),
        ([], "no command given"),
    ],
)
def test_mistakes_are_one_error_line(capsys, argv, fault):
    assert fault in _refused(capsys, argv)


@pytest.mark.parametrize(
    ("argv", "usage"),
    [
        (["help"], "usage: vision [-h] command"),
        (["list", "help"], "usage: vision list [-h]"),
        (["info", "help"], "usage: vision info [-h] name"),
        (["plugins", "help"], "usage: vision plugins [-h]"),
        (["help", "list"], "usage: vision list [-h]"),
        (["help", "val"], "``vision val`` / ``tools/val.py``"),
    ],
)
def test_help_after_every_subcommand(capsys, argv, usage):
    assert main(argv) == 0
    captured = capsys.readouterr()
    assert captured.out.startswith(usage) and not captured.err, captured


# ------------------------------------------------------------------------------------------------ 4, 5: vision list
@pytest.mark.parametrize(
    ("argv", "message"),
    [
        (["--task", "detecton"], "--task detecton: no such task (did you mean detection?); "
                                 "tasks: classification, detection, generation"),
        (["--capability", "featurs"], "--capability featurs: no such capability (did you mean features?); "
                                      "capabilities: "),
        (["yolo*", "--pretrained"], "--pretrained: none of the "),
        (["yolo*", "--task", "classification"], "--task classification: none of the "),
        (["resnet*", "--capability", "gan"], "--capability gan: none of the "),
        (["resnt50"], "no model matches 'resnt50'; did you mean: resnet50"),
    ],
)  # fmt: skip
def test_an_empty_list_names_the_option_at_fault(capsys, argv, message):
    assert _refused(capsys, ["list", *argv]).startswith(message)


def test_markdown_tables_what_is_listed(capsys):
    assert main(["list", "--markdown"]) == 0
    assert capsys.readouterr().out == markdown_table() + "\n"  # the README's table, unchanged
    assert main(["list", "resnet*", "--markdown", "--task", "classification"]) == 0
    rows = capsys.readouterr().out.strip().splitlines()[2:]
    assert [r.split("`")[1] for r in rows] == [r.split("`")[1] for r in markdown_table().splitlines()[2:]
                                               if r.startswith("| `resnet")]  # fmt: skip
    assert rows and all(r.startswith("| `resnet") for r in rows)


# ------------------------------------------------------------------------------------------------ 7: vision val keys
def test_val_suggests_its_own_keys(capsys, tmp_path):
    message = _refused(capsys, ["val", "model=resnet18", "weights=x", "splt=val", f"project={tmp_path}"])
    assert message.startswith("unknown key 'splt'. Did you mean 'split'")
    assert "split" in message.split("Known keys: ")[1].split(", ")


# ------------------------------------------------------------------------------------------------ 3: Ctrl-C
class _StoppedTrainer:
    """A trainer stopped by Ctrl-C once its run folder exists (``made``) or before."""

    made: Path | None = None

    def __init__(self, args: dict[str, Any]) -> None:
        self.run_dir: Path | None = None

    def fit(self) -> Path:
        if self.made is not None:
            self.made.mkdir(parents=True)
            (self.made / "args.yaml").write_text("task: classification\n", encoding="utf-8")
            self.run_dir = self.made
        raise KeyboardInterrupt


def test_ctrl_c_in_training_names_the_run_to_resume(capsys, monkeypatch, tmp_path):
    from vision.cli.train import main as train_main

    monkeypatch.setattr("vision.engine.trainer.Trainer", _StoppedTrainer)
    argv = ["recipe=resnet18_digits", f"project={tmp_path}"]
    assert _stopped(capsys, ["train", *argv]) == "interrupted before the run folder was made: nothing to resume"
    monkeypatch.setattr(_StoppedTrainer, "made", tmp_path / "classification" / "train")
    run = tmp_path / "classification" / "train"
    assert _stopped(capsys, ["train", *argv]) == f"interrupted; continue with: vision train resume={run}"
    monkeypatch.setattr(_StoppedTrainer, "made", tmp_path / "classification" / "train2")
    line = _stopped(capsys, argv, run=train_main)
    assert line == f"interrupted; continue with: python tools/train.py resume={run}2"


@pytest.mark.parametrize("command", ["infer", "val", "export", "prune"])
def test_ctrl_c_in_other_commands_is_one_line(capsys, monkeypatch, command):
    def stop(*args: Any, **kwargs: Any) -> Any:
        raise KeyboardInterrupt

    where = {"infer": "vision.cli.infer._task_name", "val": "vision.cli.val.evaluate"}
    monkeypatch.setattr(where.get(command, f"vision.cli.{command}.main"), stop)
    assert _stopped(capsys, [command, "model=resnet18", "source=x.jpg"]) == "interrupted"


def test_an_uncaught_ctrl_c_of_a_front_end_is_one_line():
    """``tools/export.py`` calls its front end directly: a Ctrl-C that reaches the interpreter is still one line."""
    code = "from vision.cli.common import command_line; command_line([], ''); raise KeyboardInterrupt"
    proc = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, cwd=ROOT, timeout=300)
    assert proc.stderr.strip().splitlines() == ["interrupted"]
    assert proc.returncode in (130, -2)  # stopped by SIGINT: a shell reports 130
