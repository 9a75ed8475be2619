"""YOLO speed and accuracy, side by side: our YOLO-n (or -s ...) against ultralytics YOLOv8n at equal size, one run.

1. **Inference latency / throughput** (forward + NMS), for each ``--cases`` entry ``BxS`` (default batch 1 at 640 px
   and batch 8 at 320 px): ours is the public ``model.predict`` (letterbox, the batch-norm-folded channels_last
   network, decoding, NMS, boxes back in the input's pixels); ultralytics its fused ``DetectionModel`` followed by its
   ``non_max_suppression``. Both get the same random images, the same thread count (``--threads``), the same score
   threshold (``--conf``, 0.001 as in validation) and random weights (nothing is downloaded). Each side runs in a
   Python process of its own, as a user's would: ours imports vision (whose OpenMP wait policy and heap settings
   then apply), ultralytics' process does not, so neither gets the other's process-wide settings
   (``--same-process`` times both in this process instead, ultralytics then with vision's settings). The two are
   called alternately, one call each per iteration, so that a load change on a shared machine hits both alike; the
   medians of ``--iters`` (>= 30) calls after ``--warmup`` are reported (latency ms, images/s) with their ratio.
2. **Training seconds per epoch** on BCCD at ``--train-imgsz`` (320), batch 16: ours through the trainer with the
   ``yolo_<size>_bccd`` recipe; ultralytics ``YOLO("yolov8<size>.yaml").train(...)`` on the same images converted to
   its label format, with its thread count set to ``--threads`` too (it would otherwise use ``cores - 1``). The
   median epoch after the first, validation excluded; each side's training in a process of its own (as above).
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
import vision._openmp  # before torch: with --same-process both sides run with the OpenMP wait policy vision sets

# isort: on
import argparse
import contextlib
import importlib.util
import os
import tempfile
from collections.abc import Callable
from pathlib import Path
from typing import Any

import _yolo_sides
import torch
from _timing import Remote, alternate, call_in_process, contention, load

import vision

HAS_ULTRALYTICS = importlib.util.find_spec("ultralytics") is not None


def _sync(device: torch.device) -> Callable[[], None]:
    return (lambda: torch.cuda.synchronize(device)) if device.type == "cuda" else (lambda: None)


# ------------------------------------------------------------------------------------------------------------ inference
def _sides(size: str, batch: int, imgsz: int, args: Any, peer: bool) -> dict[str, Callable[[], Any] | Remote]:
    """The timed calls: each side in its own process (``Remote``, the default), or both in this one."""
    kwargs = {"size": size, "batch": batch, "imgsz": imgsz, "conf": args.conf, "device": args.device}
    names = [("ours", "ours_predictor")] + ([("ultralytics", "ultralytics_predictor")] if peer else [])
    if args.same_process:
        return {side: getattr(_yolo_sides, fn)(**kwargs) for side, fn in names}
    return {side: Remote("_yolo_sides", fn, kwargs, threads=args.threads, **_process_of(side)) for side, fn in names}


#: seconds between two sides' calls in their own processes: our fitted thread count reads the CPU time other
#: processes used over the last quarter second (vision.utils.parallel), which would otherwise count the other side's
#: call as a busy neighbour on an idle machine
_PAUSE = 0.4


def _process_of(side: str) -> dict[str, Any]:
    """How a side's own process starts: ours imports vision first (its OpenMP and heap settings, as for a user);
    ultralytics' environment is this one without what importing vision added to it."""
    if side == "ours":
        return {"first": ("vision",), "env": None}
    env = dict(os.environ)
    if vision._openmp.SET_HERE:
        for key in vision._openmp.SETTINGS:
            env.pop(key, None)
    return {"first": (), "env": env}


def inference(size: str, args: Any, device: torch.device, peer: bool) -> None:
    for case in args.cases.split(","):
        batch, imgsz = (int(v) for v in case.lower().split("x"))
        fns = _sides(size, batch, imgsz, args, peer)
        alone: dict[str, float] = {}
        for contended in (False, True) if args.contend else (False,):
            before = load()
            with contention(args.contend_procs) if contended else contextlib.nullcontext():
                med = alternate(fns, warmup=args.warmup, iters=args.iters, sync=_sync(device), pause=_PAUSE)
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
        for fn in fns.values():
            if isinstance(fn, Remote):
                fn.close()


# ------------------------------------------------------------------------------------------------------------ training
def _train(side: str, size: str, args: Any, workdir: Path, name: str) -> tuple[float, Path]:
    """Median training seconds per epoch of one side and where its weights are: in a process of its own unless
    ``--same-process`` (as :func:`_sides`)."""
    from vision.data import find_bccd

    opts = {k: getattr(args, k) for k in ("epochs", "train_imgsz", "train_batch", "threads", "fraction", "workers")}
    kwargs = {"size": size, "opts": {**opts, "quiet": not args.quick}, "device": args.device,
              "workdir": str(workdir), "name": name, "bccd": str(find_bccd())}  # fmt: skip
    function = f"{side}_training"
    if args.same_process:
        secs, where = getattr(_yolo_sides, function)(**kwargs)
    else:
        secs, where = call_in_process("_yolo_sides", function, kwargs, threads=args.threads, **_process_of(side))
    return float(secs), Path(where)


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
            secs: dict[str, float] = {}
            where: dict[str, Path] = {}
            for side in ["ours"] + (["ultralytics"] if peer else []):  # one after the other: a whole training
                before = load()  # cannot be interleaved
                with contention(args.contend_procs) if contended else contextlib.nullcontext():
                    secs[side], where[side] = _train(side, size, args, Path(tmp), f"{side}_{size}_{label}")
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
    parser.add_argument("--same-process", action="store_true",
                        help="time both inference sides in this process (default: each in its own)")  # fmt: skip
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
