"""YOLO speed, side by side: our YOLO-n/s against ultralytics YOLOv8n/s, measured in the same run.

1. **Inference** (forward + NMS, images/s) at batch 1 and 32, 640x640 input already on the device. Ours: the public
   ``model.predict`` (letterbox, network, decoding, sync-free NMS, boxes back to the input's pixels, one list of
   dicts) with batch norms folded (``fuse()``), channels_last, bf16 and a CUDA graph (``cuda_graph=True``). Ultralytics:
   its fused ``DetectionModel`` in fp16 (its ``half=True`` fast path) followed by its ``non_max_suppression``.
   Both networks have random weights (nothing is downloaded) and the same score threshold; NMS work depends on how
   many boxes pass it, so the run is repeated at ``--conf`` values (0.25: prediction, 0.001: validation).
2. **Training** (images/s) on BCCD at 640 px, batch 16: ours through ``tools/train.py``'s trainer with the
   ``yolo_n_bccd`` / ``yolo_s_bccd`` recipes (GPU augmentation with mosaic, bf16, EMA); ultralytics'
   ``YOLO("yolov8n.yaml").train(...)`` with its defaults (CPU augmentation with mosaic, AMP, EMA) on the same images
   converted to its label format. Both sides run with ``close_mosaic=0`` (mosaic in every epoch): the recipes close
   it for their last 5 epochs and ultralytics for its last 10, which in a short benchmark run would switch mosaic off
   on one side only. Throughput is the median over the epochs after the first, validation excluded; each side's
   images per epoch are counted as its loader yields them (ours drops the last partial batch, ultralytics keeps it).

ultralytics is not a dependency of vision-zoo: when it is not installed only our side runs (ratios are skipped).

    python benchmarks/yolo.py                      # CUDA: everything, YOLO-n and -s
    python benchmarks/yolo.py --models n --skip-train
    python benchmarks/yolo.py --quick              # CPU smoke run: small sizes, few iterations, ours only if needed
"""

from __future__ import annotations

import argparse
import contextlib
import csv
import importlib.util
import json
import statistics
import tempfile
import time
from pathlib import Path
from typing import Any

import torch

import vision

HAS_ULTRALYTICS = importlib.util.find_spec("ultralytics") is not None


def _sync(device: torch.device) -> None:
    if device.type == "cuda":
        torch.cuda.synchronize(device)


def _rate(fn: Any, batch: int, device: torch.device, *, warmup: int, iters: int) -> float:
    for _ in range(warmup):
        fn()
    _sync(device)
    t0 = time.perf_counter()
    for _ in range(iters):
        fn()
    _sync(device)
    return batch * iters / (time.perf_counter() - t0)


# ------------------------------------------------------------------------------------------------------------ inference
def ours_inference(size: str, batch: int, imgsz: int, conf: float, device: torch.device, args: Any) -> float:
    torch.manual_seed(0)
    model = vision.create_model(f"yolo_{size}", num_classes=80, imgsz=imgsz).to(device).eval().fuse()
    cuda = device.type == "cuda"
    if cuda:
        model = model.to(memory_format=torch.channels_last)
    x = torch.rand(batch, 3, imgsz, imgsz, device=device)

    def run() -> None:
        model.predict(x, score_threshold=conf, iou_threshold=0.7, max_det=300, cuda_graph=cuda, amp=cuda)

    return _rate(run, batch, device, warmup=args.warmup, iters=args.iters)


def ultralytics_inference(size: str, batch: int, imgsz: int, conf: float, device: torch.device, args: Any) -> float:
    import ultralytics

    try:  # ultralytics >= 8.3.1xx keeps NMS in utils.nms; older versions in utils.ops
        from ultralytics.utils.nms import non_max_suppression
    except ImportError:
        from ultralytics.utils.ops import non_max_suppression

    torch.manual_seed(0)
    net = ultralytics.YOLO(f"yolov8{size}.yaml").model.fuse().to(device).eval()
    half = device.type == "cuda"
    if half:
        net = net.half()
    x = torch.rand(batch, 3, imgsz, imgsz, device=device, dtype=torch.float16 if half else torch.float32)

    @torch.no_grad()
    def run() -> None:
        preds = net(x)
        out = non_max_suppression(preds, conf_thres=conf, iou_thres=0.7, max_det=300)
        for det in out:  # results as host-visible per-image tensors, like ours
            det[:, :4].float()

    return _rate(run, batch, device, warmup=args.warmup, iters=args.iters)


# ------------------------------------------------------------------------------------------------------------ training
def _epoch_rate(times: list[float], images: int) -> float:
    rest = times[1:] if len(times) > 1 else times
    return images / statistics.median(rest)


def ours_training(size: str, args: Any, device: torch.device, workdir: Path) -> float:
    from vision.engine import Trainer
    from vision.engine.config import resolve_args

    argv = [
        f"recipe=yolo_{size}_bccd", f"epochs={args.train_epochs}", f"imgsz={args.train_imgsz}",
        f"model_kwargs.imgsz={args.train_imgsz}", f"batch={args.train_batch}", f"device={device}",
        f"val_period={10**6}", "plots=false", "tensorboard=false", f"project={workdir}", f"name=ours_{size}",
        f"fraction={args.fraction}", f"workers={args.workers}", "close_mosaic=0",
    ]  # fmt: skip
    cfg = resolve_args(argv)
    run_dir = Trainer(cfg).fit()
    with open(run_dir / "metrics.csv", encoding="utf-8") as f:
        rows = list(csv.DictReader(f))
    times = [float(r["time"]) for r in rows[:-1]] or [float(rows[-1]["time"])]  # the last epoch validates
    from vision.data import bccd

    n = len(bccd(split="train"))
    images = max(1, int(n * args.fraction)) // args.train_batch * args.train_batch  # subset, last partial batch dropped
    return _epoch_rate(times, images)


def _bccd_as_yolo(root: Path) -> Path:
    """BCCD (COCO json) -> ultralytics' layout: images/{split} symlinks, labels/{split}/*.txt, data.yaml."""
    from vision.data import find_bccd

    src = Path(find_bccd())
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


def ultralytics_training(size: str, args: Any, device: torch.device, workdir: Path) -> float:
    import ultralytics

    data = _bccd_as_yolo(workdir / "bccd_yolo")
    model = ultralytics.YOLO(f"yolov8{size}.yaml")
    times: list[float] = []
    start: list[float] = []
    model.add_callback("on_train_epoch_start", lambda trainer: start.append(time.perf_counter()))
    model.add_callback("on_train_epoch_end", lambda trainer: times.append(time.perf_counter() - start[-1]))
    model.train(
        data=str(data), epochs=args.train_epochs, imgsz=args.train_imgsz, batch=args.train_batch,
        device=0 if device.type == "cuda" else "cpu", workers=args.workers, val=False, plots=False,
        project=str(workdir), name=f"ultralytics_{size}", pretrained=False, fraction=args.fraction, verbose=False,
        close_mosaic=0,
    )  # fmt: skip
    n = len(list((workdir / "bccd_yolo" / "images" / "train").iterdir()))
    return _epoch_rate(times, max(1, round(n * args.fraction)))  # its subset (rounded), last partial batch kept


# ------------------------------------------------------------------------------------------------------------ main
def _row(name: str, ours: float, theirs: float | None) -> str:
    if theirs is None:
        return f"{name:<44} {ours:>10.1f} {'-':>12} {'-':>7}"
    return f"{name:<44} {ours:>10.1f} {theirs:>12.1f} {ours / theirs:>6.2f}x"


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--models", default="n,s", help="sizes to compare (n, s, m, l)")
    parser.add_argument("--device", default="cuda" if torch.cuda.is_available() else "cpu")
    parser.add_argument("--imgsz", type=int, default=640)
    parser.add_argument("--batches", default="1,32")
    parser.add_argument("--conf", default="0.25,0.001", help="score thresholds to measure inference at")
    parser.add_argument("--warmup", type=int, default=10)
    parser.add_argument("--iters", type=int, default=50)
    parser.add_argument("--skip-train", action="store_true")
    parser.add_argument("--skip-ultralytics", action="store_true")
    parser.add_argument("--train-epochs", type=int, default=4)
    parser.add_argument("--train-imgsz", type=int, default=640)
    parser.add_argument("--train-batch", type=int, default=16)
    parser.add_argument("--fraction", type=float, default=1.0)
    parser.add_argument("--workers", type=int, default=8)
    parser.add_argument("--quick", action="store_true", help="CPU smoke run: small sizes and few iterations")
    args = parser.parse_args()
    if args.quick:
        args.models, args.imgsz, args.batches, args.conf = "n", 320, "1,4", "0.25"
        args.warmup, args.iters = 1, 3
        args.train_epochs, args.train_imgsz, args.train_batch, args.fraction, args.workers = 2, 256, 8, 0.25, 1
    device = torch.device(args.device)
    peer = HAS_ULTRALYTICS and not args.skip_ultralytics
    if not peer:
        print("ultralytics is not installed (or skipped): measuring our side only")
    print(f"device {device}{f' ({torch.cuda.get_device_name(device)})' if device.type == 'cuda' else ''}, "
          f"torch {torch.__version__}")  # fmt: skip
    print(f"{'images/s':<44} {'vision-zoo':>10} {'ultralytics':>12} {'ratio':>7}")
    sizes = [s.strip() for s in args.models.split(",") if s.strip()]
    for size in sizes:
        for conf in (float(c) for c in args.conf.split(",")):
            for batch in (int(b) for b in args.batches.split(",")):
                ours = ours_inference(size, batch, args.imgsz, conf, device, args)
                theirs = ultralytics_inference(size, batch, args.imgsz, conf, device, args) if peer else None
                name = f"yolo_{size} infer b{batch} {args.imgsz}px conf {conf}"
                print(_row(name, ours, theirs), flush=True)
    if args.skip_train:
        return
    from vision.data import find_bccd

    try:
        find_bccd()
    except FileNotFoundError as err:
        print(f"training benchmark skipped: {err}")
        return
    with tempfile.TemporaryDirectory() as tmp:
        for size in sizes:
            with contextlib.redirect_stdout(None) if not args.quick else contextlib.nullcontext():
                ours = ours_training(size, args, device, Path(tmp))
            theirs = ultralytics_training(size, args, device, Path(tmp)) if peer else None
            name = f"yolo_{size} train BCCD b{args.train_batch} {args.train_imgsz}px"
            print(_row(name, ours, theirs), flush=True)


if __name__ == "__main__":
    main()
