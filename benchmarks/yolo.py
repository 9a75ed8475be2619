"""YOLO speed and accuracy, side by side: our YOLO-n (or -s ...) against ultralytics YOLOv8n at equal size, one run.

1. **Inference latency / throughput** (forward + NMS), for each ``--cases`` entry ``BxS`` (default batch 1 at 640 px
   and batch 8 at 320 px): ours is the public ``model.predict`` (letterbox, the batch-norm-folded channels_last
   network, decoding, NMS, boxes back in the input's pixels); ultralytics its fused ``DetectionModel`` followed by its
   ``non_max_suppression``. Both get the same random images, the same thread count (``--threads``), the same score
   threshold (``--conf``, 0.001 as in validation) and random weights (nothing is downloaded). The two are called
   alternately, one call each per iteration, so that a load change on a shared machine hits both alike; the medians
   of ``--iters`` (>= 30) calls after ``--warmup`` are reported (latency ms, images/s) with their ratio.
2. **Training seconds per epoch** on BCCD at ``--train-imgsz`` (320), batch 16: ours through the trainer with the
   ``yolo_<size>_bccd`` recipe; ultralytics ``YOLO("yolov8<size>.yaml").train(...)`` on the same images converted to
   its label format, with its thread count set to ``--threads`` too (it would otherwise use ``cores - 1``). The
   median epoch after the first, validation excluded.
3. **Accuracy** when ``--train-epochs N`` is given: both trained N epochs, then both scored by the same pycocotools
   COCOeval on BCCD val from their predictions at conf 0.001 (mAP50-95, mAP50).
4. ``--contend``: every timing is repeated while a CPU-bound process (started and stopped by this script) runs on the
   same cores, and the slowdown of each side is printed.

The 1/5/15-minute load averages are printed before and after each timing (``load a/b/c -> d/e/f``): compare ratios
measured in the same round, not absolute numbers from a busy machine. ultralytics is not a dependency: without it
only our side runs (ratios are skipped).

    python benchmarks/yolo.py --threads 2                       # inference + training s/epoch, YOLO-n
    python benchmarks/yolo.py --threads 2 --contend --skip-train
    python benchmarks/yolo.py --threads 2 --train-epochs 30     # + COCOeval mAP of both after 30 epochs
    python benchmarks/yolo.py --quick                           # smoke run: few iterations, a fraction of BCCD
"""

from __future__ import annotations

# isort: off
import vision._openmp  # before torch: both sides run with the OpenMP wait policy vision sets

# isort: on
import argparse
import contextlib
import csv
import importlib.util
import json
import os
import statistics
import tempfile
import time
from collections.abc import Callable
from pathlib import Path
from typing import Any

import torch
from _timing import alternate, contention, load

import vision

HAS_ULTRALYTICS = importlib.util.find_spec("ultralytics") is not None


def _sync(device: torch.device) -> Callable[[], None]:
    return (lambda: torch.cuda.synchronize(device)) if device.type == "cuda" else (lambda: None)


# ------------------------------------------------------------------------------------------------------------ inference
def ours_predictor(size: str, batch: int, imgsz: int, conf: float, device: torch.device) -> Callable[[], Any]:
    torch.manual_seed(0)
    model = vision.create_model(f"yolo_{size}", num_classes=80, imgsz=imgsz).to(device).eval()
    cuda = device.type == "cuda"
    x = torch.rand(batch, 3, imgsz, imgsz, device=device)
    return lambda: model.predict(x, score_threshold=conf, iou_threshold=0.7, max_det=300, cuda_graph=cuda, amp=cuda)


def ultralytics_predictor(size: str, batch: int, imgsz: int, conf: float, device: torch.device) -> Callable[[], Any]:
    import ultralytics

    try:  # ultralytics >= 8.3.1xx keeps NMS in utils.nms; older versions in utils.ops
        from ultralytics.utils.nms import non_max_suppression
    except ImportError:
        from ultralytics.utils.ops import non_max_suppression

    torch.manual_seed(0)
    net = ultralytics.YOLO(f"yolov8{size}.yaml").model.fuse(verbose=False).to(device).eval()
    half = device.type == "cuda"
    if half:
        net = net.half()
    x = torch.rand(batch, 3, imgsz, imgsz, device=device, dtype=torch.float16 if half else torch.float32)

    @torch.no_grad()
    def run() -> None:
        out = non_max_suppression(net(x), conf_thres=conf, iou_thres=0.7, max_det=300)
        for det in out:  # results as host-visible per-image tensors, like ours
            det[:, :4].float()

    return run


def inference(size: str, args: Any, device: torch.device, peer: bool) -> None:
    for case in args.cases.split(","):
        batch, imgsz = (int(v) for v in case.lower().split("x"))
        fns = {"ours": ours_predictor(size, batch, imgsz, args.conf, device)}
        if peer:
            fns["ultralytics"] = ultralytics_predictor(size, batch, imgsz, args.conf, device)
        alone: dict[str, float] = {}
        for contended in (False, True) if args.contend else (False,):
            before = load()
            with contention(args.contend_procs) if contended else contextlib.nullcontext():
                med = alternate(fns, warmup=args.warmup, iters=args.iters, sync=_sync(device))
            tag = f"yolo_{size} b{batch} {imgsz}px{' contended' if contended else ''}"
            ours, theirs = med["ours"], med.get("ultralytics")
            line = f"{tag:<34} ms/batch ours {ours * 1e3:8.1f}  img/s {batch / ours:7.1f}"
            if theirs is not None:
                line += f" | ultralytics {theirs * 1e3:8.1f} ms  {batch / theirs:7.1f} img/s | speed ours/theirs "
                line += f"{theirs / ours:5.2f}x"
            if contended:
                line += f" | slowdown ours {ours / alone['ours']:.2f}x"
                if theirs is not None:
                    line += f" theirs {theirs / alone['ultralytics']:.2f}x"
            print(f"{line}  [load {before} -> {load()}]", flush=True)
            alone = med if not contended else alone


# ------------------------------------------------------------------------------------------------------------ training
def _median_epoch(times: list[float]) -> float:
    rest = times[1:] if len(times) > 1 else times
    return statistics.median(rest)


def ours_training(size: str, args: Any, device: torch.device, workdir: Path, name: str) -> tuple[float, Path]:
    from vision.engine import Trainer
    from vision.engine.config import resolve_args

    argv = [
        f"recipe=yolo_{size}_bccd", f"epochs={args.epochs}", f"imgsz={args.train_imgsz}",
        f"model_kwargs.imgsz={args.train_imgsz}", f"batch={args.train_batch}", f"device={device}",
        f"val_period={10**6}", "plots=false", "tensorboard=false", f"project={workdir}", f"name={name}",
        f"fraction={args.fraction}", f"workers={args.workers}",
    ]  # fmt: skip
    with contextlib.redirect_stdout(None) if not args.quick else contextlib.nullcontext():
        run_dir = Trainer(resolve_args(argv)).fit()
    with open(run_dir / "metrics.csv", encoding="utf-8") as f:
        rows = list(csv.DictReader(f))
    times = [float(r["time"]) for r in rows[:-1]] or [float(rows[-1]["time"])]  # the last epoch validates
    return _median_epoch(times), run_dir


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


def ultralytics_training(size: str, args: Any, device: torch.device, workdir: Path, name: str) -> tuple[float, Path]:
    import ultralytics
    from ultralytics.utils import torch_utils

    torch_utils.NUM_THREADS = args.threads  # its CPU training resets torch's threads to this (default cores - 1)
    data = _bccd_as_yolo(workdir / "bccd_yolo")
    model = ultralytics.YOLO(f"yolov8{size}.yaml")
    times: list[float] = []
    start: list[float] = []
    model.add_callback("on_train_epoch_start", lambda trainer: start.append(time.perf_counter()))
    model.add_callback("on_train_epoch_end", lambda trainer: times.append(time.perf_counter() - start[-1]))
    model.train(
        data=str(data), epochs=args.epochs, imgsz=args.train_imgsz, batch=args.train_batch,
        device=0 if device.type == "cuda" else "cpu", workers=args.workers, val=False, plots=False,
        project=str(workdir), name=name, pretrained=False, fraction=args.fraction, verbose=False,
    )  # fmt: skip
    torch.set_num_threads(args.threads)
    return _median_epoch(times), Path(model.trainer.save_dir) / "weights" / "last.pt"


# ------------------------------------------------------------------------------------------------------------ accuracy
def _cocoeval(predict: Callable[[Path], list[tuple[str, list[float], float]]]) -> tuple[float, float]:
    """COCOeval bbox (mAP50-95, mAP50) on BCCD val of ``predict(image path) -> [(class name, xyxy, score)]``."""
    from pycocotools.coco import COCO

    from vision.data import find_bccd
    from vision.tasks.detection.coco_eval import run_cocoeval

    root = Path(find_bccd())
    with contextlib.redirect_stdout(None):
        gt = COCO(str(root / "annotations" / "val.json"))
    cat_id = {c["name"]: c["id"] for c in gt.loadCats(gt.getCatIds())}
    results = []
    for image_id in gt.getImgIds():
        for name, (x1, y1, x2, y2), score in predict(root / "images" / gt.imgs[image_id]["file_name"]):
            results.append(
                {"image_id": image_id, "category_id": cat_id[name], "bbox": [x1, y1, x2 - x1, y2 - y1], "score": score}
            )
    stats, _, _ = run_cocoeval(gt, results)
    return stats["AP"], stats["AP50"]


def ours_map(run_dir: Path, imgsz: int) -> tuple[float, float]:
    from vision.io import read_image

    model = vision.load_model(run_dir).eval()
    names = model.categories

    def predict(path: Path) -> list[tuple[str, list[float], float]]:
        det = model.predict(read_image(path), score_threshold=0.001, iou_threshold=0.7, max_det=300, imgsz=imgsz)[0]
        return [(names[c], b, s) for b, s, c in zip(det["boxes"].tolist(), det["scores"].tolist(), det["labels"])]

    return _cocoeval(predict)


def ultralytics_map(weights: Path, imgsz: int) -> tuple[float, float]:
    import ultralytics

    model = ultralytics.YOLO(str(weights))

    def predict(path: Path) -> list[tuple[str, list[float], float]]:
        r = model.predict(str(path), conf=0.001, iou=0.7, max_det=300, imgsz=imgsz, verbose=False)[0]
        b = r.boxes
        return [(r.names[int(c)], xyxy, s) for xyxy, s, c in zip(b.xyxy.tolist(), b.conf.tolist(), b.cls.tolist())]

    return _cocoeval(predict)


def training(size: str, args: Any, device: torch.device, peer: bool) -> None:
    from vision.data import find_bccd

    try:
        find_bccd()
    except FileNotFoundError as err:
        print(f"training benchmark skipped: {err}")
        return
    with tempfile.TemporaryDirectory() as tmp:
        alone: dict[str, float] = {}
        for contended in (False, True) if args.contend else (False,):
            label = "contended" if contended else "alone"
            tag = f"yolo_{size} train BCCD b{args.train_batch} {args.train_imgsz}px {args.epochs} ep"
            sides = [("ours", ours_training)] + ([("ultralytics", ultralytics_training)] if peer else [])
            secs: dict[str, float] = {}
            where: dict[str, Path] = {}
            for side, fn in sides:  # one after the other: a whole training cannot be interleaved
                before = load()
                with contention(args.contend_procs) if contended else contextlib.nullcontext():
                    secs[side], where[side] = fn(size, args, device, Path(tmp), f"{side}_{size}_{label}")
                extra = f" | slowdown {secs[side] / alone[side]:.2f}x" if contended else ""
                print(f"{tag} {label:<9} {side:<11} {secs[side]:7.2f} s/epoch{extra}  [load {before} -> {load()}]")
            if "ultralytics" in secs:
                print(f"{tag} {label:<9} s/epoch ours/theirs {secs['ours'] / secs['ultralytics']:.2f}x", flush=True)
            if args.train_epochs is not None and not contended:
                ap = {"ours": ours_map(where["ours"], args.train_imgsz)}
                if "ultralytics" in where:
                    ap["ultralytics"] = ultralytics_map(where["ultralytics"], args.train_imgsz)
                for side, (m, m50) in ap.items():
                    print(f"{tag} {side:<11} COCOeval mAP50-95 {m:.3f}  mAP50 {m50:.3f}", flush=True)
            alone = secs if not contended else alone


# ------------------------------------------------------------------------------------------------------------ main
def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--models", default="n", help="sizes to compare (n, s, m, l)")
    parser.add_argument("--device", default="cuda" if torch.cuda.is_available() else "cpu")
    parser.add_argument("--threads", type=int, default=2, help="torch threads of this process (both sides)")
    parser.add_argument("--cases", default="1x640,8x320", help="inference cases BATCHxSIZE")
    parser.add_argument("--conf", type=float, default=0.001, help="score threshold of inference")
    parser.add_argument("--warmup", type=int, default=5)
    parser.add_argument("--iters", type=int, default=30, help="timed calls per side (median reported)")
    parser.add_argument("--contend", action="store_true", help="repeat every timing beside a CPU-bound process")
    parser.add_argument("--contend-procs", type=int, default=1, help="CPU-bound processes started by --contend")
    parser.add_argument("--skip-infer", action="store_true")
    parser.add_argument("--skip-train", action="store_true")
    parser.add_argument("--skip-ultralytics", action="store_true")
    parser.add_argument("--train-epochs", type=int, default=None, help="train N epochs and report COCOeval mAP")
    parser.add_argument("--timing-epochs", type=int, default=3, help="epochs of the s/epoch timing without mAP")
    parser.add_argument("--train-imgsz", type=int, default=320)
    parser.add_argument("--train-batch", type=int, default=16)
    parser.add_argument("--fraction", type=float, default=1.0)
    parser.add_argument("--workers", type=int, default=1, help="data-loader workers (both sides)")
    parser.add_argument("--quick", action="store_true", help="smoke run: few iterations, a quarter of BCCD")
    args = parser.parse_args()
    if args.quick:
        args.cases, args.warmup, args.iters = "1x320,2x256", 1, 3
        args.timing_epochs, args.train_imgsz, args.train_batch, args.fraction = 2, 256, 8, 0.25
    if args.threads < 1 or args.iters < 1:
        parser.error(f"--threads and --iters must be >= 1, got {args.threads} and {args.iters}")
    args.epochs = args.train_epochs if args.train_epochs is not None else args.timing_epochs
    torch.set_num_threads(args.threads)
    device = torch.device(args.device)
    peer = HAS_ULTRALYTICS and not args.skip_ultralytics
    if not peer:
        print("ultralytics is not installed (or skipped): measuring our side only")
    print(f"device {device}{f' ({torch.cuda.get_device_name(device)})' if device.type == 'cuda' else ''}, "
          f"torch {torch.__version__}, {args.threads} threads, {os.cpu_count()} CPUs, load {load()}")  # fmt: skip
    for size in (s.strip() for s in args.models.split(",") if s.strip()):
        if not args.skip_infer:
            inference(size, args, device, peer)
        if not args.skip_train:
            training(size, args, device, peer)


if __name__ == "__main__":
    main()
