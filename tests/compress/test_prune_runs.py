"""``vision prune`` on trained runs: a model of other classes is refused before anything is pruned, the variants are
evaluated (and fine-tuned) with the run's own data settings, ``vision val`` takes the folder prune writes, and the
fine-tuning of a pruned model resumes exactly (or, with no checkpoint to resume, is refused in one line)."""

from __future__ import annotations

import json
import shutil
from pathlib import Path

import pytest
import torch
import yaml
from PIL import Image

import vision
from vision.cli.prune import main as prune_main
from vision.cli.train import main as train_main
from vision.cli.val import main as val_main
from vision.engine.checkpoint import save_weights
from vision.engine.config import resolve_args
from vision.hub.metadata import read_safetensors_metadata
from vision.tasks.classification.task import ClassificationTask
from vision.tasks.detection.task import DetectionTask

QUIET = ["device=cpu", "workers=0", "plots=false", "tensorboard=false", "latency_runs=1"]
#: a tiny synthetic detection run (4 training and 3 validation images of 32 px)
SYNTHETIC = ["data=synthetic", "imgsz=32", "synthetic.train=4", "synthetic.val=3", "synthetic.size=32", "batch=2"]


def _fake_run(root: Path, argv: list[str], model: torch.nn.Module, meta: dict) -> Path:
    """A run folder as training writes it (``args.yaml``, ``weights/best.safetensors``), without the training."""
    args = resolve_args(argv)
    run = root / args["task"] / "trained"
    (run / "weights").mkdir(parents=True)
    (run / "args.yaml").write_text(yaml.safe_dump(args), encoding="utf-8")
    meta = {"model": args["model"], "model_kwargs": args["model_kwargs"], "task": args["task"], **meta}
    save_weights(run / "weights" / "best.safetensors", model.state_dict(), meta)
    return run


def _yolo_run(root: Path, classes: list[str] | None = None) -> Path:
    torch.manual_seed(0)
    classes = classes or ["circle", "rectangle", "triangle"]
    model = vision.create_model("yolo_n", num_classes=len(classes))
    meta = {"classes": classes, "label_offset": 0, "imgsz": 32}
    return _fake_run(root, ["recipe=yolo_n_synthetic", "model=yolo_n", *SYNTHETIC], model, meta)


def _digits_run(root: Path) -> Path:
    """A resnet18 "trained" on digits at 16 px with its own normalisation and a 5 % validation split."""
    torch.manual_seed(0)
    mean, std = [0.5, 0.4, 0.3], [0.2, 0.3, 0.4]
    argv = ["task=classification", "model=resnet18", "data=digits", "imgsz=16", "val_fraction=0.05", "batch=64",
            f"mean={mean}", f"std={std}"]  # fmt: skip
    pre = {"input_size": [16, 16], "resize_size": 16, "interpolation": "bilinear", "mean": mean, "std": std,
           "crop": True}  # fmt: skip
    meta = {"classes": [str(i) for i in range(10)], "preprocess": pre}
    return _fake_run(root, argv, vision.create_model("resnet18", num_classes=10), meta)


def _one_error_line(capsys, call, argv: list[str]) -> str:
    with pytest.raises(SystemExit) as info:
        call(argv)
    assert info.value.code == 2
    err = capsys.readouterr().err.strip().splitlines()
    assert len(err) == 1 and err[0].startswith("error: "), err
    return err[0].removeprefix("error: ")


# ------------------------------------------------------------------------------------------------ other classes
def test_classifier_pruned_for_data_of_other_classes_is_refused_before_pruning(tmp_path, capsys):
    run = _digits_run(tmp_path / "src")
    for split in ("train", "val"):
        for name in ("cat", "cow", "dog"):
            (tmp_path / "imgf" / split / name).mkdir(parents=True)
            Image.new("RGB", (8, 8), (40, 80, 120)).save(tmp_path / "imgf" / split / name / "a.png")
    out = tmp_path / "runs"
    argv = [f"weights={run}", f"data={tmp_path / 'imgf'}", "epochs=1", "batch=2", *QUIET, f"project={out}"]
    message = _one_error_line(capsys, prune_main, argv)
    assert message.startswith("the model has 10 classes ['0', '1', '2', '3', '4', '5', '6', '7', '8', '9'], data=")
    assert "has 3: ['cat', 'cow', 'dog']" in message
    assert not out.exists()  # nothing pruned, saved or fine-tuned


def test_detector_pruned_for_data_of_other_classes_is_refused_before_pruning(tmp_path, capsys):
    run = _yolo_run(tmp_path / "src", ["RBC", "WBC", "Platelets"])
    out = tmp_path / "runs"
    argv = [f"weights={run}", "data=synthetic", "method=taylor", *QUIET, f"project={out}"]
    message = _one_error_line(capsys, prune_main, argv)
    assert message.startswith("the model's classes ['RBC', 'WBC', 'Platelets'] are not data=synthetic's ['circle'")
    assert not out.exists()


def test_fine_tuning_never_renames_the_pruned_models_classes(tmp_path):
    from vision.cli.prune import _fine_tune
    from vision.utils import ArgumentError

    model = vision.create_model("yolo_n", num_classes=3)
    model.categories = ["rbc", "wbc", "platelets"]
    args = resolve_args(["recipe=yolo_n_synthetic", *SYNTHETIC, "epochs=1", *QUIET[:-1], f"project={tmp_path}"])
    meta = {"model_kwargs": {}, "pruned": {"ratio": 0.5, "method": "l1", "base": "x"}}
    with pytest.raises(ArgumentError, match=r"the model's classes \['rbc', 'wbc', 'platelets'\] are not data="):
        _fine_tune(model, args, meta, "ft")
    assert model.categories == ["rbc", "wbc", "platelets"] and not (tmp_path / "detection").exists()


# ------------------------------------------------------------------------------------------------ the run's settings
def _spy_on_evaluation(monkeypatch, task_cls) -> list[tuple[int, tuple[int, ...]]]:
    """``(images evaluated, size of the first batch)`` of every evaluation of ``task_cls``."""
    seen: list[tuple[int, tuple[int, ...]]] = []
    evaluate = task_cls.evaluate

    def spy(self, model, loader, device, *, autocast):
        images = next(iter(loader))[0]
        first = tuple(images.shape[-2:]) if torch.is_tensor(images) else tuple(images[0].shape[-2:])
        seen.append((len(loader.dataset), first))
        return evaluate(self, model, loader, device, autocast=autocast)

    monkeypatch.setattr(task_cls, "evaluate", spy)
    return seen


def _val_metric(capsys, weights: Path, metric: str, project: Path) -> float:
    assert val_main([f"weights={weights}", "workers=0", "plots=false", f"project={project}"]) == 0
    out = Path(capsys.readouterr().out.strip().splitlines()[-1].removeprefix("results saved to "))
    return json.loads((out / "metrics.json").read_text())["metrics"][metric]


def test_classifier_is_evaluated_with_its_runs_settings_and_val_takes_the_prune_folder(tmp_path, capsys, monkeypatch):
    run = _digits_run(tmp_path / "src")
    seen = _spy_on_evaluation(monkeypatch, ClassificationTask)
    out = tmp_path / "runs"
    assert prune_main([f"weights={run}", "ratio=0.3", "data=digits", *QUIET, f"project={out}"]) == 0
    folder = out / "classification" / "prune"
    assert seen == [(90, (16, 16))] * 2  # the run's 5 % split at 16 px (not 20 % at 224 px), base and pruned
    saved = yaml.safe_load((folder / "args.yaml").read_text())
    assert (saved["imgsz"], saved["mean"], saved["std"]) == (16, [0.5, 0.4, 0.3], [0.2, 0.3, 0.4])
    assert saved["prune"]["ratio"] == 0.3 and saved["pruned"]["method"] == "l1"
    report = json.loads((folder / "report.json").read_text())
    assert _val_metric(capsys, run, "top1", tmp_path / "val") == pytest.approx(report[0]["top1"])
    assert _val_metric(capsys, folder, "top1", tmp_path / "val") == pytest.approx(report[1]["top1"])


@pytest.fixture(scope="module")
def fine_tuned(tmp_path_factory) -> tuple[Path, list[tuple[int, tuple[int, ...]]]]:
    """A yolo_n run pruned and fine-tuned for 2 epochs (units at the end of epochs 1 and 2): the fine-tuned run, and
    what each evaluation saw."""
    root = tmp_path_factory.mktemp("ft")
    run = _yolo_run(root / "src")
    argv = [f"weights={run}", "data=synthetic", "epochs=2", "lr=0.001", *QUIET, f"project={root / 'runs'}"]
    with pytest.MonkeyPatch.context() as monkeypatch:
        seen = _spy_on_evaluation(monkeypatch, DetectionTask)
        assert prune_main(argv) == 0
    return root / "runs" / "detection" / "prune_ft", seen


def test_detector_is_evaluated_and_fine_tuned_with_its_runs_synthetic_data(fine_tuned, tmp_path, capsys):
    run, seen = fine_tuned
    # base, pruned, 2 validated epochs, fine-tuned: synthetic.val=3 at 32 px, as the run was trained
    assert seen == [(3, (32, 32))] * 5
    for folder in (run, run.parent / "prune"):  # the fine-tuned run trained on the same data
        saved = yaml.safe_load((folder / "args.yaml").read_text())
        assert (saved["imgsz"], saved["synthetic"]["train"], saved["synthetic"]["val"]) == (32, 4, 3)
    folder = run.parent / "prune"
    report = json.loads((folder / "report.json").read_text())
    assert _val_metric(capsys, folder, "map", tmp_path / "val") == pytest.approx(report[1]["map"])


def test_val_of_a_folder_without_training_arguments_names_what_is_missing(tmp_path, capsys):
    run = _yolo_run(tmp_path / "src")
    old = tmp_path / "old_prune"  # the layout an older vision prune wrote: its own keys only
    shutil.copytree(run / "weights", old / "weights")
    (old / "args.yaml").write_text(yaml.safe_dump({"weights": str(run), "model": "yolo_n", "ratio": 0.5,
                                                   "method": "l1", "imgsz": None, "task": "detection",
                                                   "train": ["data=synthetic"]}))  # fmt: skip
    message = _one_error_line(capsys, val_main, [f"weights={old}", f"project={tmp_path / 'val'}"])
    assert message == (f"weights={old}: {old / 'args.yaml'} holds no training arguments data, imgsz, batch (written "
                       "by an older vision prune: prune again); give data=... imgsz=... batch=...")  # fmt: skip
    argv = [f"weights={old}", "data=synthetic", "imgsz=32", "batch=2", "synthetic.val=2", "synthetic.size=32",
            "workers=0", "plots=false", f"project={tmp_path / 'val'}"]  # fmt: skip
    assert val_main(argv) == 0


# ------------------------------------------------------------------------------------------------ resume
def test_resuming_a_pruned_models_fine_tuning_continues_it_exactly(fine_tuned, tmp_path):
    fine_tuned = fine_tuned[0]
    copy = tmp_path / "detection" / "prune_ft"
    shutil.copytree(fine_tuned, copy)
    units = sorted((copy / "weights" / "ckpt").iterdir())
    shutil.rmtree(units[-1])  # interrupted after epoch 1
    assert train_main([f"resume={copy}"]) == 0
    ran, resumed = (vision.load_model(p / "weights" / "last.safetensors") for p in (fine_tuned, copy))
    for (name, a), b in zip(ran.state_dict().items(), resumed.state_dict().values(), strict=True):
        torch.testing.assert_close(b, a, rtol=0, atol=0, msg=name)
    meta = read_safetensors_metadata(copy / "weights" / "last.safetensors")
    assert meta["epoch"] == 2 and meta["pruned"]["ratio"] == 0.5
    assert resumed.predict([torch.rand(3, 40, 30)])[0]["boxes"].shape[-1] == 4


def test_a_pruned_models_fine_tuning_without_a_checkpoint_is_not_started_again(fine_tuned, tmp_path, capsys):
    fine_tuned = fine_tuned[0]
    copy = tmp_path / "detection" / "prune_ft"
    shutil.copytree(fine_tuned, copy)
    shutil.rmtree(copy / "weights")
    (copy / "weights").mkdir()  # stopped before its first save finished
    message = _one_error_line(capsys, train_main, [f"resume={copy}"])
    assert message.startswith(f"resume={copy}: {copy} fine-tunes a pruned model and holds no complete checkpoint")
    assert "vision prune weights=" in message and "ratio=0.5 method=l1" in message
    assert sorted(p.name for p in copy.iterdir()) == sorted(p.name for p in fine_tuned.iterdir())


def test_a_pruned_fine_tuning_saved_before_its_arguments_recorded_it_resumes_pruned(tmp_path):
    from vision.engine.checkpoint import resume_args

    for name, meta in (("pruned", {"pruned": {"ratio": 0.5, "method": "l1", "base": "src"}}), ("plain", {})):
        weights = tmp_path / name / "weights"  # a run of the layout before units: last.state.pt + last.safetensors
        weights.mkdir(parents=True)
        torch.save({"args": {"task": "detection", "model": "yolo_n"}}, weights / "last.state.pt")
        save_weights(weights / "last.safetensors", {"w": torch.zeros(1)}, {"model": "yolo_n", **meta})
        assert resume_args(tmp_path / name).get("pruned") == meta.get("pruned")


def test_a_distilled_runs_teacher_and_distill_keys_stay_with_that_run():
    """Fine-tuning a pruned student takes its data and optimisation keys, not its teacher or ``distill.*`` (the
    fine-tune would otherwise carry distillation settings without a teacher, which training refuses)."""
    from vision.cli.prune import _train_args

    source = resolve_args(["task=classification", "model=resnet18", "data=digits", "imgsz=16", "lr=0.03"])
    source |= {"teacher": "runs/classification/teacher", "distill": {**source["distill"], "alpha": 0.0}}
    args = _train_args("classification", "resnet18", [], source)
    assert (args["imgsz"], args["lr"], args["teacher"]) == (16, 0.03, "")
    assert args["distill"] == resolve_args(["task=classification", "model=resnet18"])["distill"]
