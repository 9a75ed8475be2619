"""The two sides of ``benchmarks/yolo.py``'s timings (inference and training), importable without :mod:`vision`: each
side runs in its own process (:class:`_timing.Remote`, :func:`_timing.call_in_process`), and the peer's process must
not load vision's settings."""

from __future__ import annotations

import contextlib
import csv
import json
import statistics
import time
from collections.abc import Callable
from pathlib import Path
from typing import Any

import torch


def same_images(batch: int, imgsz: int) -> torch.Tensor:
    """The benchmark's input, the same on both sides: ``[batch, 3, imgsz, imgsz]`` float in [0, 1] from seed 0."""
    return torch.rand(batch, 3, imgsz, imgsz, generator=torch.Generator().manual_seed(0))


def ours_predictor(size: str, batch: int, imgsz: int, conf: float, device: str) -> Callable[[], Any]:
    """Our YOLO's public ``predict`` (letterbox, folded network, decoding, NMS) on ``batch`` random images."""
    import vision

    torch.manual_seed(0)
    dev = torch.device(device)
    model = vision.create_model(f"yolo_{size}", num_classes=80, imgsz=imgsz).to(dev).eval()
    cuda = dev.type == "cuda"
    x = same_images(batch, imgsz).to(dev)
    return lambda: model.predict(x, score_threshold=conf, iou_threshold=0.7, max_det=300, cuda_graph=cuda, amp=cuda)


def ultralytics_predictor(size: str, batch: int, imgsz: int, conf: float, device: str) -> Callable[[], Any]:
    """ultralytics' fused ``DetectionModel`` and its ``non_max_suppression`` on ``batch`` random images."""
    import ultralytics

    try:  # ultralytics >= 8.3.1xx keeps NMS in utils.nms; older versions in utils.ops
        from ultralytics.utils.nms import non_max_suppression
    except ImportError:
        from ultralytics.utils.ops import non_max_suppression

    torch.manual_seed(0)
    dev = torch.device(device)
    net = ultralytics.YOLO(f"yolov8{size}.yaml").model.fuse(verbose=False).to(dev).eval()
    half = dev.type == "cuda"
    if half:
        net = net.half()
    x = same_images(batch, imgsz).to(dev, torch.float16 if half else torch.float32)

    @torch.no_grad()
    def run() -> None:
        out = non_max_suppression(net(x), conf_thres=conf, iou_thres=0.7, max_det=300)
        for det in out:  # results as host-visible per-image tensors, like ours
            det[:, :4].float()

    return run


# ------------------------------------------------------------------------------------------------------------ training
def _median_epoch(times: list[float]) -> float:
    rest = times[1:] if len(times) > 1 else times
    return statistics.median(rest)


def ours_training(
    size: str, opts: dict[str, Any], device: str, workdir: str, name: str, bccd: str
) -> tuple[float, str]:
    """Median seconds per epoch (after the first; the last epoch, which validates, left out) of our trainer with the
    ``yolo_<size>_bccd`` recipe at ``opts["train_imgsz"]``, and its run folder. ``bccd`` is unused: our recipe finds
    the data itself."""
    from vision.engine import Trainer
    from vision.engine.config import resolve_args

    argv = [
        f"recipe=yolo_{size}_bccd", f"epochs={opts['epochs']}", f"imgsz={opts['train_imgsz']}",
        f"model_kwargs.imgsz={opts['train_imgsz']}", f"batch={opts['train_batch']}", f"device={device}",
        f"val_period={10**6}", "plots=false", "tensorboard=false", f"project={workdir}", f"name={name}",
        f"fraction={opts['fraction']}", f"workers={opts['workers']}",
    ]  # fmt: skip
    with contextlib.redirect_stdout(None) if opts["quiet"] else contextlib.nullcontext():
        run_dir = Trainer(resolve_args(argv)).fit()
    with open(run_dir / "metrics.csv", encoding="utf-8") as f:
        rows = list(csv.DictReader(f))
    times = [float(r["time"]) for r in rows[:-1]] or [float(rows[-1]["time"])]  # the last epoch validates
    return _median_epoch(times), str(run_dir)


def bccd_as_yolo(src: Path, root: Path) -> Path:
    """BCCD (COCO json, at ``src``) -> ultralytics' layout under ``root``: images/{split} symlinks,
    labels/{split}/*.txt, data.yaml; returns the YAML."""
    names: list[str] = []
    for split in ("train", "val"):
        ann = json.loads((src / "annotations" / f"{split}.json").read_text(encoding="utf-8"))
        cats = sorted(ann["categories"], key=lambda c: c["id"])
        names = [c["name"] for c in cats]
        index = {c["id"]: i for i, c in enumerate(cats)}
        (root / "images" / split).mkdir(parents=True, exist_ok=True)
        (root / "labels" / split).mkdir(parents=True, exist_ok=True)
        by_image: dict[int, list[str]] = {im["id"]: [] for im in ann["images"]}
        sizes = {im["id"]: (im["width"], im["height"]) for im in ann["images"]}
        for a in ann["annotations"]:
            W, H = sizes[a["image_id"]]
            x, y, w, h = a["bbox"]
            by_image[a["image_id"]].append(
                f"{index[a['category_id']]} {(x + w / 2) / W} {(y + h / 2) / H} {w / W} {h / H}"
            )
        for im in ann["images"]:
            name = Path(im["file_name"]).name
            link = root / "images" / split / name
            if not link.exists():
                link.symlink_to(src / "images" / im["file_name"])
            (root / "labels" / split / f"{Path(name).stem}.txt").write_text("\n".join(by_image[im["id"]]) + "\n")
    yaml_path = root / "data.yaml"
    yaml_path.write_text(json.dumps({"path": str(root), "train": "images/train", "val": "images/val", "names": names}))
    return yaml_path


def ultralytics_training(
    size: str, opts: dict[str, Any], device: str, workdir: str, name: str, bccd: str
) -> tuple[float, str]:
    """Median seconds per epoch (after the first; validation off) of ``YOLO("yolov8<size>.yaml").train`` on the same
    BCCD images (``bccd``, converted to its layout), and its ``last.pt``."""
    import ultralytics
    from ultralytics.utils import torch_utils

    torch_utils.NUM_THREADS = opts["threads"]  # its CPU training resets torch's threads to this (default cores - 1)
    data = bccd_as_yolo(Path(bccd), Path(workdir) / "bccd_yolo")
    model = ultralytics.YOLO(f"yolov8{size}.yaml")
    times: list[float] = []
    start: list[float] = []
    model.add_callback("on_train_epoch_start", lambda trainer: start.append(time.perf_counter()))
    model.add_callback("on_train_epoch_end", lambda trainer: times.append(time.perf_counter() - start[-1]))
    model.train(
        data=str(data), epochs=opts["epochs"], imgsz=opts["train_imgsz"], batch=opts["train_batch"],
        device=0 if device.startswith("cuda") else "cpu", workers=opts["workers"], val=False, plots=False,
        project=workdir, name=name, pretrained=False, fraction=opts["fraction"], verbose=False,
    )  # fmt: skip
    torch.set_num_threads(opts["threads"])
    return _median_epoch(times), str(Path(model.trainer.save_dir) / "weights" / "last.pt")
