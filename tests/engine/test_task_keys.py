"""Task keys that were accepted and then ignored or failed late: each takes effect or is refused before a run folder.

``label_smoothing`` reaches the classification loss; a data folder without ``val/`` is split by ``val_fraction`` or
refused (``valid/``, ``test/``) and the closing hint names the weights file the run wrote; a transform recipe of
another task and detection ``augment.normalize/mean/std`` are refused at start; ``tools/augment_grid.py`` errors are
``error:`` lines with exit status 2.
"""

from __future__ import annotations

import importlib.util
import json
from pathlib import Path

import cv2
import numpy as np
import pytest
import torch
import torch.nn.functional as F

import vision
from vision.cli.train import main as train_main
from vision.engine import Trainer
from vision.engine.config import resolve_args
from vision.tasks.classification.task import ClassificationTask
from vision.tasks.detection.task import DetectionTask

ROOT = Path(__file__).resolve().parents[2]
QUICK = ["device=cpu", "workers=0", "plots=false", "tensorboard=false"]
#: a detection run of seconds (should a refused key ever be accepted again, the test fails fast)
TINY_DETECTION = ["task=detection", "model=yolo_n", "imgsz=32", "batch=2", "epochs=1", "synthetic.train=2",
                  "synthetic.val=1", "synthetic.size=32"]  # fmt: skip


def _write_images(folder: Path, n: int, *, seed: int = 0, size: int = 12) -> list[Path]:
    rng = np.random.default_rng(seed)
    folder.mkdir(parents=True, exist_ok=True)
    paths = []
    for i in range(n):
        path = folder / f"{i}.png"
        cv2.imwrite(str(path), rng.integers(0, 256, (size, size, 3), dtype=np.uint8))
        paths.append(path)
    return paths


def _class_folders(root: Path, n: int = 4) -> Path:
    for k, name in enumerate(("a", "b")):
        _write_images(root / name, n, seed=k)
    return root


def _refused(capsys, tmp_path: Path, argv: list[str], *names: str) -> str:
    """``tools/train.py argv`` in this process: exit 2, one ``error:`` line naming ``names``, no run folder."""
    project = tmp_path / "runs"
    with pytest.raises(SystemExit) as exit_info:
        train_main([*argv, *QUICK, "epochs=1", f"project={project}"])
    assert exit_info.value.code == 2
    err = capsys.readouterr().err.strip().splitlines()
    assert len(err) == 1 and err[0].startswith("error: "), err
    for name in names:
        assert name in err[0], (name, err[0])
    assert not project.exists()
    return err[0]


# ------------------------------------------------------------------------------------------------ label_smoothing
def test_label_smoothing_reaches_the_classification_loss(tiny_model):
    torch.manual_seed(0)
    model = vision.create_model("tiny_convnet", num_classes=4).train()
    images, labels = torch.randn(4, 3, 16, 16), torch.tensor([0, 1, 2, 3])
    losses = {}
    for smoothing in (0.0, 0.5):
        task = ClassificationTask(resolve_args(["model=tiny_convnet", f"label_smoothing={smoothing}"]))
        losses[smoothing] = float(task.compute_loss(model, (images, labels))["cls"].detach())
    with torch.no_grad():
        logits = model(images).float()
    assert losses[0.5] != pytest.approx(losses[0.0])
    assert losses[0.5] == pytest.approx(float(F.cross_entropy(logits, labels, label_smoothing=0.5)), rel=1e-5)
    assert losses[0.0] == pytest.approx(float(F.cross_entropy(logits, labels)), rel=1e-5)


# ------------------------------------------------------------------------------------------------ splits and hints
@pytest.mark.parametrize("other", ["valid", "test"])
def test_train_folder_beside_another_split_without_val_is_refused(capsys, tmp_path, other):
    data = tmp_path / "data"
    _class_folders(data / "train")
    _class_folders(data / other)
    message = _refused(capsys, tmp_path, ["model=resnet18", f"data={data}", "imgsz=16", "val_fraction=0.25"],
                       f"data={data}", "train/", f"{other}/", "no val/")  # fmt: skip
    assert f"rename {other}/ to val/" in message


def test_train_folder_alone_is_split_by_val_fraction(capsys, tmp_path):
    data = tmp_path / "data"
    _class_folders(data / "train", n=4)
    task = ClassificationTask(resolve_args(["model=resnet18", f"data={data}", "imgsz=16", "val_fraction=0.25"]))
    train, val = task.build_datasets()
    assert (len(train), len(val)) == (6, 2) and task.classes == ["a", "b"]
    out = capsys.readouterr().out
    assert "no val/ folder: val_fraction=0.25" in out and "(2 images) held out" in out


def test_run_without_validation_says_so_and_its_hint_names_last(tiny_model, tmp_path, capsys):
    data = tmp_path / "data"
    _class_folders(data / "train", n=4)
    args = resolve_args(["model=tiny_convnet", "task=classification", f"data={data}", "imgsz=16", "batch=4",
                         "epochs=1", "val_fraction=0", f"project={tmp_path / 'runs'}", *QUICK])  # fmt: skip
    run = Trainer(args).fit()
    out = capsys.readouterr().out.splitlines()
    assert any("training runs without validation" in line for line in out), out
    assert not (run / "weights" / "best.safetensors").exists()
    hint = next(line for line in out if line.startswith("inference: "))
    assert f"weights={run / 'weights' / 'last.safetensors'} " in hint
    assert (run / "weights" / "last.safetensors").is_file()


def _coco(root: Path, n: int = 2) -> Path:
    paths = _write_images(root / "images", n, size=32)
    images = [{"id": i + 1, "file_name": p.name, "width": 32, "height": 32} for i, p in enumerate(paths)]
    anns = [{"id": i + 1, "image_id": i + 1, "category_id": 1, "bbox": [4, 4, 10, 10], "area": 100, "iscrowd": 0}
            for i in range(n)]  # fmt: skip
    ann = root / "train.json"
    ann.write_text(json.dumps({"images": images, "annotations": anns, "categories": [{"id": 1, "name": "cell"}]}))
    spec = root / "data.yaml"
    spec.write_text("train: {images: images, annotations: train.json}\n")
    return spec


def test_detection_data_without_val_says_so_and_hints_last(tmp_path, capsys):
    spec = _coco(tmp_path / "coco")
    task = DetectionTask(resolve_args(["task=detection", "model=yolo_n", f"data={spec}", "augment.name=none"]))
    train, val = task.build_datasets()
    assert val is None and len(train) == 2
    assert "has no val split: training runs without validation" in capsys.readouterr().out
    run = tmp_path / "run"
    (run / "weights").mkdir(parents=True)
    (run / "weights" / "last.safetensors").write_bytes(b"")
    assert f"weights={run / 'weights' / 'last.safetensors'} " in task.inference_hint(run)
    (run / "weights" / "best.safetensors").write_bytes(b"")
    assert f"weights={run / 'weights' / 'best.safetensors'} " in task.inference_hint(run)
    classifier = ClassificationTask(resolve_args(["model=resnet18"]))
    assert f"weights={run / 'weights' / 'best.safetensors'} " in classifier.inference_hint(run)


# ------------------------------------------------------------------------------------------------ augment keys
def test_classifier_refuses_a_detection_recipe(capsys, tmp_path):
    message = _refused(capsys, tmp_path, ["model=resnet18", "imgsz=16", "augment.name=detection_train"],
                       "augment.name=detection_train", "classification_train", "classification_eval")  # fmt: skip
    assert "detection_shrink" not in message


def test_detector_refuses_a_classification_recipe(capsys, tmp_path):
    _refused(capsys, tmp_path, [*TINY_DETECTION, "augment.name=classification_train"],
             "augment.name=classification_train", "detection_train")  # fmt: skip


@pytest.mark.parametrize(
    "extra",
    [["augment.normalize=true"], ["augment.mean=[0.5,0.5,0.5]"], ["augment.std=[0.2,0.2,0.2]"],
     ["augment.name=gpu", "augment.mean=[0.5,0.5,0.5]"]],
    ids=["normalize", "mean", "std", "gpu_mean"],
)  # fmt: skip
def test_detector_refuses_normalisation_keys(capsys, tmp_path, extra):
    key = extra[-1].split("=")[0]
    _refused(capsys, tmp_path, [*TINY_DETECTION, *extra], key, "normalise them inside the model")


# ------------------------------------------------------------------------------------------------ augment_grid
def _augment_grid():
    spec = importlib.util.spec_from_file_location("augment_grid", ROOT / "tools" / "augment_grid.py")
    tool = importlib.util.module_from_spec(spec)
    spec.loader.exec_module(tool)
    return tool


@pytest.mark.parametrize(
    ("arg", "line"),
    [
        ("data=imgfolder", "error: data=imgfolder is not allowed: data must be synthetic or bccd"),
        ("pipeline=gpuu", "error: pipeline=gpuu is not allowed: pipeline must be gpu, cpu or none"),
        ("n=abc", "error: n=abc is not allowed: n must be an integer"),
    ],
)
def test_augment_grid_errors_are_error_lines_with_status_2(capsys, tmp_path, arg, line):
    with pytest.raises(SystemExit) as exit_info:
        _augment_grid().main([arg, f"out={tmp_path / 'grid.png'}"])
    assert exit_info.value.code == 2
    assert capsys.readouterr().err.strip().splitlines() == [line]
    assert not (tmp_path / "grid.png").exists()
