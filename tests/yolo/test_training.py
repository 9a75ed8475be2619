"""YOLO through the training engine: the recipes resolve, a short run trains, saves and infers; a tiny set is learnt."""

from __future__ import annotations

import csv

import pytest
import torch

import vision
from vision.engine.config import resolve_args

RECIPES = ["yolo_n_synthetic", "yolo_s_synthetic", "yolo_n_bccd", "yolo_s_bccd"]


@pytest.mark.parametrize("recipe", RECIPES)
def test_recipes_resolve(recipe):
    args = resolve_args([f"recipe={recipe}"])
    assert args["task"] == "detection" and args["model"].startswith("yolo_")
    assert args["model_kwargs"]["imgsz"] == args["imgsz"]  # the model predicts at the size it trains at
    assert args["ema"] and args["schedule"] == "cosine" and args["warmup_epochs"] > 0
    if recipe.endswith("bccd"):
        assert args["augment"]["name"] == "gpu" and args["augment"]["mosaic"] > 0 and args["close_mosaic"] > 0
        assert args["imgsz"] == 640 and args["batch"] == 16 and args["epochs"] == 30


@pytest.mark.slow
def test_short_run_trains_saves_and_infers(tmp_path):
    from vision import load_model
    from vision.engine import Trainer

    argv = [
        "task=detection", "model=yolo_n", "data=synthetic", "synthetic.train=16", "synthetic.val=8",
        "synthetic.size=64", "imgsz=64", "model_kwargs.imgsz=64", "epochs=2", "batch=8", "augment.name=gpu",
        "augment.mosaic=1.0", "close_mosaic=1", "workers=0", "optimizer=adamw", "lr=0.002", "ema=true",
        f"project={tmp_path}", "tensorboard=false",
    ]  # fmt: skip
    run = Trainer(resolve_args(argv)).fit()
    rows = list(csv.DictReader((run / "metrics.csv").read_text(encoding="utf-8").splitlines()))
    assert len(rows) == 2 and all(0 <= float(r["map50"]) <= 1 for r in rows)
    assert (run / "weights" / "best.safetensors").is_file() and (run / "pr_curve.png").is_file()
    model = load_model(str(run / "weights" / "best.safetensors"))
    assert model.imgsz == 64 and model.categories == ["circle", "rectangle", "triangle"]
    dets = model.predict([torch.rand(3, 64, 80)], score_threshold=0.0)
    assert dets[0]["boxes"].shape[1] == 4


@pytest.mark.slow
def test_overfits_a_few_images():
    """A few dozen steps on 4 synthetic images: the boxes are found (recall at IoU 0.5 with the right class)."""
    from torchvision.ops import box_iou

    from vision.data import SyntheticShapes

    torch.manual_seed(0)
    data = SyntheticShapes(4, size=96, seed=3, masks=False, max_objects=3)
    images = torch.stack([data[i][0] for i in range(4)]).float() / 255
    targets = [data[i][1] for i in range(4)]
    model = vision.create_model("yolo_n", num_classes=3, imgsz=96)
    opt = torch.optim.AdamW(model.parameters(), lr=0.004)
    first = None
    for _ in range(60):
        losses = model.loss(images, targets)
        loss = sum(losses.values())
        first = first if first is not None else float(loss)
        opt.zero_grad()
        loss.backward()
        opt.step()
    assert float(loss) < 0.5 * first
    for m in model.modules():  # running statistics = the statistics of these images (as in the training steps)
        if isinstance(m, torch.nn.BatchNorm2d):
            m.reset_running_stats()
            m.momentum = None
    with torch.no_grad():
        model.forward_raw(images)
    found = total = 0
    for det, target in zip(model.predict(images, score_threshold=0.05), targets):
        iou = box_iou(target["boxes"], det["boxes"]) if len(det["boxes"]) else torch.zeros(len(target["boxes"]), 0)
        same = target["labels"][:, None] == det["labels"][None]
        found += int(((iou > 0.5) & same).any(1).sum())
        total += len(target["boxes"])
    assert found >= 0.75 * total, f"found {found} of {total} objects"
