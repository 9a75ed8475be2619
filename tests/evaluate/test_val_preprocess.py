"""A classifier's validation split is preprocessed exactly as ``predict`` preprocesses an image of a trained run, so
that a validation score is the score of what ``predict`` answers (both used to differ: OpenCV's bilinear resize
without antialiasing for validation, torchvision's antialiased one for ``predict``)."""

from __future__ import annotations

from pathlib import Path

import cv2
import numpy as np
import pytest
import torch

import vision
from vision.engine.checkpoint import save_weights
from vision.engine.config import resolve_args
from vision.io import read_image
from vision.tasks.classification.task import ClassificationTask

skimage_data = pytest.importorskip("skimage.data")


def _photos(root: Path) -> list[Path]:
    """Real photos (300-512 px) in two class folders: downscaled to 32 px, where antialiasing matters."""
    paths = []
    for cls, images in {"a": ("astronaut", "coffee"), "b": ("chelsea", "rocket")}.items():
        (root / cls).mkdir(parents=True)
        for name in images:
            path = root / cls / f"{name}.png"
            cv2.imwrite(str(path), cv2.cvtColor(getattr(skimage_data, name)(), cv2.COLOR_RGB2BGR))
            paths.append(path)
    return paths


def test_validation_images_are_what_predict_of_the_trained_weights_sees(tmp_path):
    _photos(tmp_path / "data" / "train")
    paths = _photos(tmp_path / "data" / "val")
    task = ClassificationTask(resolve_args(["model=resnet18", f"data={tmp_path / 'data'}", "imgsz=32"]))
    _, val = task.build_datasets()
    assert len(val) == len(paths)
    torch.manual_seed(0)
    net = vision.create_model("resnet18", num_classes=2)
    weights = save_weights(
        tmp_path / "w.safetensors", net.state_dict(), {"model": "resnet18", "task": "classification", **task.metadata()}
    )
    model = vision.load_model(str(weights)).eval()
    files = [path for path, _ in val.samples]
    for i, path in enumerate(files):
        x, _ = val[i]
        image = read_image(path)  # uint8 [3, H, W], what predict reads
        assert torch.equal(x, model.eval_transforms()(image)), path
        with torch.no_grad():
            probs = model(x[None]).softmax(-1)[0]
        assert torch.allclose(model.predict(path)[0].probs, probs, atol=1e-6), path
    # the downscale is antialiased: the photo's 32-px view is not OpenCV's aliased bilinear one
    x, _ = val[0]
    hwc = np.ascontiguousarray(read_image(files[0]).permute(1, 2, 0).numpy())
    h, w = hwc.shape[:2]
    aliased = cv2.resize(hwc, (round(w * 32 / min(h, w)), round(h * 32 / min(h, w))), interpolation=cv2.INTER_LINEAR)
    mean, std = torch.tensor(task.args["mean"]).view(3, 1, 1), torch.tensor(task.args["std"]).view(3, 1, 1)
    top = (aliased.shape[0] - 32) // 2
    left = (aliased.shape[1] - 32) // 2
    crop = torch.from_numpy(aliased[top : top + 32, left : left + 32]).permute(2, 0, 1).float() / 255
    assert (x - (crop - mean) / std).abs().max() > 0.1
