"""The detection task end to end through the Trainer, and the detection inference tool on its weights."""

from __future__ import annotations

import csv
import json
import shutil
from pathlib import Path

import cv2
import numpy as np
import pytest
import torch

from vision import load_model
from vision.cli.infer import main as infer_main
from vision.data import SyntheticShapes
from vision.engine import Trainer
from vision.engine.config import resolve_args
from vision.hub.metadata import read_safetensors_metadata
from vision.tasks.detection.coco_eval import STAT_NAMES, coco_from_dataset, run_cocoeval
from vision.tasks.detection.data import load_data_spec
from vision.tasks.detection.infer import _Runner, resolve_classes
from vision.tasks.detection.task import AugmentedBatch, DetectionTask

from .conftest import TINY_RCNN

COMMON = [
    "task=detection",
    "data=synthetic",
    "synthetic.train=8",
    "synthetic.val=4",
    "synthetic.size=128",
    "imgsz=128",
    "epochs=2",
    "batch=4",
    "workers=0",
    "lr=0.01",
    "tensorboard=false",
    "val_samples=4",
]


def _model_args(model: str, backbone: str = "resnet18") -> list[str]:
    return [f"model={model}", f"model_kwargs.backbone={backbone}"] + [
        f"model_kwargs.{k}={v}" for k, v in TINY_RCNN.items()
    ]


@pytest.fixture(scope="module")
def mask_run(tmp_path_factory) -> Path:
    """Mask R-CNN (ResNet-18) trained 2 epochs on 8 synthetic images with the batched GPU augmentation (on the CPU)."""
    project = tmp_path_factory.mktemp("runs")
    aug = ["augment.name=gpu", "augment.mosaic=1.0", "augment.scale=[0.8,1.2]", "close_mosaic=1"]
    args = resolve_args([*COMMON, *_model_args("mask_rcnn"), *aug, f"project={project}", "name=mask"])
    return Trainer(args).fit()


def test_run_folder(mask_run):
    weights = mask_run / "weights"
    assert (weights / "best.safetensors").is_file() and (weights / "last.state.pt").is_file()
    with open(mask_run / "metrics.csv", newline="") as f:
        rows = list(csv.DictReader(f))
    assert len(rows) == 2
    for key in ("map", "map50", "map75", "mar_100", "mask_map", "mask_map50", "train_loss_mask"):
        assert key in rows[0], key
        assert all(0.0 <= float(r[key]) <= 1.0 or float(r[key]) == -1.0 for r in rows if "loss" not in key)
    for name, min_side in (("pr_curve.png", 200), ("val_predictions.png", 128)):  # a plot; tiles of 128 px images
        image = cv2.imread(str(mask_run / name), cv2.IMREAD_COLOR)
        assert image is not None, name
        assert image.ndim == 3 and min(image.shape[:2]) >= min_side and max(image.shape[:2]) <= 4096, image.shape
        assert image.std() > 5, f"{name} is blank"
    # the last epoch's metrics are COCOeval's on the predictions it wrote, against the validation set's ground truth
    val_gt = coco_from_dataset(SyntheticShapes(4, size=128, seed=1_000_003, masks=True))  # synthetic.val=4
    for iou_type, prefix in (("bbox", ""), ("segm", "mask_")):
        results = json.loads((mask_run / f"predictions_{iou_type}.json").read_text())
        assert results, iou_type
        assert set(results[0]) >= {"image_id", "category_id", "bbox", "score"}
        assert {r["category_id"] for r in results} <= {1, 2, 3}  # SyntheticShapes' COCO category ids
        assert {r["image_id"] for r in results} <= {0, 1, 2, 3}
        if iou_type == "segm":
            assert set(results[0]["segmentation"]) == {"size", "counts"}
        stats, _, _ = run_cocoeval(val_gt, results, iou_type)
        for name in STAT_NAMES:  # metrics.csv rounds to 6 decimals
            assert float(rows[-1][prefix + name]) == pytest.approx(stats[name], abs=1e-5), prefix + name
    meta = read_safetensors_metadata(weights / "best.safetensors")
    assert meta["classes"] == ["circle", "rectangle", "triangle"] and meta["label_offset"] == 1
    assert meta["model"] == "mask_rcnn" and meta["model_kwargs"]["backbone"] == "resnet18"


def test_trained_weights_reload_with_label_offset(mask_run):
    model = load_model(str(mask_run / "weights" / "best.safetensors"))
    assert model.num_classes == 4 and model.categories == ["circle", "rectangle", "triangle"]
    image = SyntheticShapes(1, size=128, seed=99)[0][0].float() / 255
    det = model.predict([image], score_threshold=0.0)[0]
    assert det["masks"].shape[1:] == (1, 128, 128)
    assert resolve_classes("circle,2", model.categories) == [0, 2]
    with pytest.raises(ValueError, match="unknown class"):
        resolve_classes(["hexagon"], model.categories)


def test_copied_weights_file_infers_like_the_run(mask_run, tmp_path):
    """A best.safetensors copied out of its run still knows its architecture, classes and label offset."""
    copy = tmp_path / "elsewhere" / "cells.safetensors"
    copy.parent.mkdir()
    shutil.copy(mask_run / "weights" / "best.safetensors", copy)
    original = load_model(str(mask_run / "weights" / "best.safetensors"))
    copied = load_model(str(copy))
    assert copied.num_classes == 4 and copied.categories == ["circle", "rectangle", "triangle"]
    image = SyntheticShapes(1, size=128, seed=7)[0][0].float() / 255
    a = original.predict([image], score_threshold=0.0)[0]
    b = copied.predict([image], score_threshold=0.0)[0]
    assert len(a["boxes"]) > 0 and set(a) == set(b) == {"boxes", "scores", "labels", "masks"}
    for key in a:
        assert torch.equal(a[key], b[key]), key


def test_classes_are_validated(mask_run):
    names = ["circle", "rectangle", "triangle"]
    assert resolve_classes([0, "2"], names) == [0, 2]
    for bad in ("7", -1, "3"):
        with pytest.raises(ValueError, match=r"out of range; valid: \[0, 2\] \(0=circle"):
            resolve_classes(bad, names)
    with pytest.raises(ValueError, match=r"index 3 .*\[0, 2\]"):
        resolve_classes("1,3", None, num_classes=3)
    assert resolve_classes("5", None) == [5]  # no names and no class count: nothing to check against
    model = load_model(str(mask_run))  # the run folder works too
    with pytest.raises(ValueError, match="index 7"):
        _Runner(model, {"classes": 7, "conf": 0.1}, torch.device("cpu"))


class _PlainDetector(torch.nn.Module):
    """A detector whose predict takes no post-processing overrides (filtered afterwards by the tool)."""

    num_classes = 2

    def __init__(self, fail: bool = False) -> None:
        super().__init__()
        self.fail = fail

    def predict(self, images):
        if self.fail:
            raise TypeError("a real bug inside predict")
        n = len(images)
        det = {"boxes": torch.tensor([[0.0, 0, 4, 4], [1, 1, 5, 5], [2, 2, 6, 6]]),
               "scores": torch.tensor([0.9, 0.5, 0.2]), "labels": torch.tensor([0, 1, 1])}  # fmt: skip
        return [dict(det) for _ in range(n)]


def test_runner_passes_only_accepted_overrides_and_keeps_errors():
    args = {"conf": 0.3, "iou": 0.5, "max_det": 5, "classes": None}
    runner = _Runner(_PlainDetector(), args, torch.device("cpu"))
    assert runner.options == {}
    out = runner([torch.zeros(3, 8, 8, dtype=torch.uint8)])
    assert out[0]["scores"].tolist() == pytest.approx([0.9, 0.5])  # the threshold applied afterwards
    with pytest.raises(TypeError, match="real bug"):  # not swallowed, not rerun without the overrides
        _Runner(_PlainDetector(fail=True), args, torch.device("cpu"))([torch.zeros(3, 8, 8, dtype=torch.uint8)])
    model = load_model(model="faster_rcnn")  # a zoo detector takes all three overrides
    assert set(_Runner(model, args, torch.device("cpu")).options) == {"score_threshold", "iou_threshold", "max_det"}


class _CuttingDetector(torch.nn.Module):
    """Ten detections, class 0 scoring above class 1; ``max_det`` cuts as a real detector's NMS does (default 4)."""

    num_classes = 2
    max_det = 4

    def __init__(self) -> None:
        super().__init__()
        self.asked: list[int | None] = []

    def predict(self, images, *, max_det=None):
        self.asked.append(max_det)
        keep = self.max_det if max_det is None else max_det
        scores = torch.linspace(0.9, 0.1, 10)
        labels = torch.tensor([0] * 5 + [1] * 5)
        boxes = torch.arange(10, dtype=torch.float32)[:, None] + torch.tensor([0.0, 0, 4, 4])
        return [{"boxes": boxes[:keep], "scores": scores[:keep], "labels": labels[:keep]} for _ in images]


@pytest.mark.parametrize(("max_det", "kept"), [(3, 3), (None, 4)])
def test_classes_filter_comes_before_the_max_det_cut(max_det, kept):
    """``classes=`` keeps up to ``max_det`` detections of those classes (as ultralytics does): here the model's best
    detections are all of class 0, and a cut before the filter left none of class 1."""
    model = _CuttingDetector()
    runner = _Runner(model, {"conf": None, "iou": None, "max_det": max_det, "classes": [1]}, torch.device("cpu"))
    out = runner([torch.zeros(3, 8, 8, dtype=torch.uint8)])[0]
    assert out["labels"].tolist() == [1] * kept
    assert out["scores"].tolist() == pytest.approx(torch.linspace(0.9, 0.1, 10)[5 : 5 + kept].tolist())
    assert model.asked[-1] > 10  # the model was asked for everything, the cut came after the filter
    plain = _Runner(model, {"conf": None, "iou": None, "max_det": max_det, "classes": None}, torch.device("cpu"))
    assert len(plain([torch.zeros(3, 8, 8, dtype=torch.uint8)])[0]["scores"]) == (max_det or 4)


def test_inference_tool_on_images_and_video(mask_run, tmp_path, capsys):
    src = tmp_path / "src"
    src.mkdir()
    ds = SyntheticShapes(3, size=128, seed=42)
    for i in range(2):
        cv2.imwrite(str(src / f"img{i}.png"), cv2.cvtColor(ds[i][0].permute(1, 2, 0).numpy(), cv2.COLOR_RGB2BGR))
    writer = cv2.VideoWriter(str(src / "clip.mp4"), cv2.VideoWriter_fourcc(*"mp4v"), 5.0, (128, 96))
    for k in range(5):
        frame = np.ascontiguousarray(ds[k % 3][0].permute(1, 2, 0).numpy()[16:112])
        writer.write(cv2.cvtColor(frame, cv2.COLOR_RGB2BGR))
    writer.release()
    assert infer_main([f"weights={mask_run / 'weights' / 'best.safetensors'}", f"source={src}", "conf=0.0",
                       "classes=circle,rectangle,triangle", "max_det=5", "line_width=1", "batch=2",
                       f"project={tmp_path / 'out'}", "device=cpu"]) == 0  # fmt: skip
    out = Path(capsys.readouterr().out.strip().splitlines()[-1].removeprefix("results saved to "))
    assert (out / "img0.png").is_file() and (out / "img1.png").is_file()
    per_file = json.loads((out / "labels" / "img0.json").read_text())
    assert per_file["detections"] and len(per_file["detections"]) <= 5
    first = per_file["detections"][0]
    assert set(first) >= {"box", "score", "label", "name", "segmentation"} and first["name"] in ds.classes
    coco = json.loads((out / "predictions_coco.json").read_text())
    assert len(coco["images"]) == 2 and [c["name"] for c in coco["categories"]] == ds.classes
    assert all(a["category_id"] in (1, 2, 3) for a in coco["annotations"])
    cap = cv2.VideoCapture(str(out / "clip.mp4"))
    frames = []
    while True:
        ok, frame = cap.read()
        if not ok:
            break
        frames.append(frame)
    cap.release()
    assert len(frames) == 5 and all(f.shape == (96, 128, 3) for f in frames)
    video_json = json.loads((out / "labels" / "clip.json").read_text())
    assert [f["frame"] for f in video_json] == list(range(5))

    # save_json=false: the same pictures, no JSON at all
    assert infer_main([f"weights={mask_run / 'weights' / 'best.safetensors'}", f"source={src / 'img0.png'}",
                       "conf=0.0", "save_json=false", f"project={tmp_path / 'out'}", "name=nojson",
                       "device=cpu"]) == 0  # fmt: skip
    quiet = Path(capsys.readouterr().out.strip().splitlines()[-1].removeprefix("results saved to "))
    assert (quiet / "img0.png").is_file() and not list(quiet.rglob("*.json"))


def test_cpu_augmentation_and_faster_rcnn(tmp_path):
    """The albumentations recipe in the workers; Faster R-CNN has no masks to load or evaluate."""
    cpu_aug = ["epochs=1", "augment.name=detection_train", "augment.scale=[0.9,1.1]", "plots=false"]
    trainer = Trainer(resolve_args([*COMMON, *_model_args("faster_rcnn"), *cpu_aug, f"project={tmp_path}"]))
    run = trainer.fit()
    with open(run / "metrics.csv", newline="") as f:
        rows = list(csv.DictReader(f))
    assert "map" in rows[0] and "mask_map" not in rows[0]
    assert trainer.best is not None
    assert not (run / "pr_curve.png").exists() and (run / "predictions_bbox.json").is_file()


def test_data_spec_yaml(tmp_path):
    (tmp_path / "spec.yaml").write_text(
        "path: data\ntrain: {images: img/train, annotations: ann/train.json}\nval: [img/val, ann/val.json]\n"
    )
    spec = load_data_spec(tmp_path / "spec.yaml")
    assert spec["train"] == (tmp_path / "data" / "img" / "train", tmp_path / "data" / "ann" / "train.json")
    assert spec["val"][1] == tmp_path / "data" / "ann" / "val.json"
    assert load_data_spec({"train": ["/a", "/b.json"]}) == {"train": (Path("/a"), Path("/b.json"))}
    with pytest.raises(ValueError, match="train"):
        load_data_spec({"val": ["/a", "/b.json"]})


def _same_batches(a: tuple, b: tuple) -> bool:
    (images_a, targets_a), (images_b, targets_b) = a, b
    if not torch.equal(images_a, images_b) or len(targets_a) != len(targets_b):
        return False
    for ta, tb in zip(targets_a, targets_b):
        if set(ta) != set(tb):
            return False
        for k in ta:
            va, vb = ta[k], tb[k]
            same = torch.equal(va, vb) if isinstance(va, torch.Tensor) else va == vb
            if not same:
                return False
    return True


def test_gpu_augment_mosaic_closes_for_the_last_epochs():
    args = [*COMMON, *_model_args("faster_rcnn"), "augment.name=gpu", "close_mosaic=1", "epochs=3"]
    task = DetectionTask(resolve_args([*args, "augment.mosaic=1.0"]))
    plain = DetectionTask(resolve_args([*args, "augment.mosaic=0.0"]))  # the same recipe without mosaic
    task.build_datasets()
    plain.build_datasets()
    batch = task.collate_fn()([SyntheticShapes(2, size=128)[i] for i in range(2)])
    cpu = torch.device("cpu")
    task.on_epoch_start(0, None)
    plain.on_epoch_start(0, None)
    images, targets = task.prepare_batch(batch, cpu, train=True)
    assert images.dtype == torch.float32 and images.shape == (2, 3, 128, 128) and 0 <= images.min() <= images.max() <= 1
    again = task.prepare_batch(batch, cpu, train=True)
    assert _same_batches((images, targets), again)  # seeded by (seed, epoch, image ids): reproducible
    assert not task._mosaic_off
    assert not _same_batches((images, targets), plain.prepare_batch(batch, cpu, train=True))  # mosaic is on
    # the last epoch: mosaic closed, so the batch is exactly the no-mosaic recipe's (same seed, epoch and images)
    task.on_epoch_start(2, None)
    plain.on_epoch_start(2, None)
    assert task._mosaic_off
    closed = task.prepare_batch(batch, cpu, train=True)
    assert _same_batches(closed, plain.prepare_batch(batch, cpu, train=True))
    val_images, val_targets = task.prepare_batch(batch, torch.device("cpu"), train=False)
    assert val_images.dtype == torch.float32 and torch.equal(val_targets[0]["labels"], batch[1][0]["labels"])


def test_cpu_training_augments_in_the_loader_workers_with_the_same_batches():
    # on the CPU with workers, the batch augmenter runs inside the loader workers (the train collate function);
    # the batch must be exactly the one the training process would have made, and validation is never augmented
    args = [*COMMON, *_model_args("faster_rcnn"), "augment.name=gpu", "augment.mosaic=1.0", "epochs=3"]
    task = DetectionTask(resolve_args(args))
    train, _ = task.build_datasets()
    cpu = torch.device("cpu")
    assert task.train_collate_fn(cpu, 0) is task.collate_fn()  # no workers: augmented in the training process
    collate = task.train_collate_fn(cpu, 1)
    samples = [train[i] for i in range(3)]
    task.on_epoch_start(1, None)
    in_main = task.prepare_batch(task.collate_fn()(samples), cpu, train=True)
    made = collate(samples)
    assert isinstance(made, AugmentedBatch) and made.images.dtype == torch.float32  # augmented in the worker
    from_worker = task.prepare_batch(made, cpu, train=True)
    assert _same_batches(in_main, from_worker)
    assert from_worker[0].dtype == torch.float32 and from_worker[0].shape == (3, 3, 128, 128)
    task.on_epoch_start(2, None)  # another epoch, other augmentations
    assert not _same_batches(from_worker, task.prepare_batch(collate(samples), cpu, train=True))


def test_cache_ram_decodes_the_images_once(bccd_dir, capsys):
    from vision.utils.keys import ArgumentError

    args = ["task=detection", "model=yolo_n", "imgsz=128", "workers=0", "tensorboard=false"]
    task = DetectionTask(resolve_args([*args, "data=bccd", "cache=ram"]))
    train, val = task.build_datasets()
    out = capsys.readouterr().out
    assert f"cache=ram: {len(train) + len(val)} images decoded" in out
    assert len(train._cache) == len(train) and all(im is not None for im in train._cache)
    image, _ = val[0]
    torch.testing.assert_close(image, torch.from_numpy(val._cache[0]).permute(2, 0, 1))
    DetectionTask(resolve_args([*args, "data=synthetic", "cache=ram"])).build_datasets()
    assert "SyntheticShapes is not read from image files; nothing to cache" in capsys.readouterr().out
    with pytest.raises(ArgumentError, match="cache"):
        resolve_args([*args, "cache=disk"])


def test_cache_ram_names_the_split_that_does_not_fit(bccd_dir, capsys, monkeypatch):
    import vision.data._detection as detection_data

    args = ["task=detection", "model=yolo_n", "imgsz=128", "workers=0", "tensorboard=false", "data=bccd"]
    task = DetectionTask(resolve_args([*args, "cache=ram"]))
    # memory for the (smaller) val split but not for train: train is read from its files, val is still cached
    monkeypatch.setattr(detection_data, "available_memory", lambda: 2 * 100 * 640 * 480 * 3)
    train, val = task.build_datasets()
    assert len(train) > 100 > len(val)  # BCCD's 640x480 images: room for 100 of them
    out, err = capsys.readouterr()  # the warning on stderr, the summary on stdout
    assert (
        f"warning: cache=ram: the {len(train)} images need" in err
        and "the train images are read from their files instead" in err
    )
    assert train._cache is None and len(val._cache) == len(val)
    assert f"cache=ram: {len(val)} images decoded" in out
