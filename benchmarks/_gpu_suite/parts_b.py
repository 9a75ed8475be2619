"""Parts 4-7 of the GPU suite: Faster / Mask R-CNN against torchvision, YOLO against ultralytics, the engine's
training step against a bare loop, and the quality runs (YOLO-n on BCCD, DDPM-s on digits) through ``tools/train.py``.
"""

from __future__ import annotations

import csv
import os
import subprocess
import sys
import time
from pathlib import Path
from types import SimpleNamespace
from typing import Any

from .common import ROOT, PartContext, load_bench, missing


# ----------------------------------------------------------------------------------------------------------- 4. R-CNN
def rcnn_pair(arch: str, size: int, device: Any) -> tuple[Any, Any]:
    """torchvision's ``arch`` with seeded random weights (class biases shifted so that every image has detections)
    and ours with the same state dict, both in eval mode on ``device``."""
    import torch
    import torchvision.models.detection as tvd

    import vision

    settings = {"min_size": size, "max_size": round(size * 1333 / 800)}
    torch.manual_seed(0)
    tv = getattr(tvd, arch)(weights=None, weights_backbone=None, num_classes=4, **settings)
    with torch.no_grad():
        tv.roi_heads.box_predictor.cls_score.bias.copy_(torch.tensor([-3.0, 1.0, 0.5, 0.0]))
    ours = vision.create_model(arch, num_classes=4, **settings)
    ours.load_state_dict(tv.state_dict())
    return tv.to(device).eval(), ours.to(device).eval()


def part_rcnn(ctx: PartContext) -> None:
    """Images/s of torchvision's ``model(images)`` (fp32) and our ``predict`` (fast path), and detection agreement."""
    import torch

    bench = load_bench("rcnn")
    batch, size, iters, warmup = (1, 96, 1, 0) if ctx.dry_run else (8, 800, 5, 2)
    device = torch.device(ctx.device)
    torch.backends.cudnn.benchmark = True
    weights = "seeded torchvision state dict, loaded into ours"
    ctx.record("settings", {"batch": batch, "min_size": size, "iters": iters, "warmup": warmup, "weights": weights,
                            "data": "5 photos"})  # fmt: skip
    images, _ = bench.load_images("photos", batch * (iters + warmup), {})
    on_device = [img.to(device) for img in images]
    n = len(on_device)
    batches = [[on_device[(i * batch + k) % n] for k in range(batch)] for i in range(iters + warmup)]
    for arch in bench.ARCHS:

        def measure(arch: str = arch) -> None:
            tv, ours = rcnn_pair(arch, size, device)
            ref = bench.images_per_second(tv, batches, device, warmup)
            got = bench.images_per_second(ours.predict, batches, device, warmup)
            ctx.record(f"{arch}.torchvision_images_per_s", ref)
            ctx.record(f"{arch}.ours_images_per_s", got)
            ctx.record(f"{arch}.speedup", got / ref)
            eval_images = images[: batch * (1 if ctx.dry_run else 2)]
            a = bench.agreement(bench.predictions(tv, eval_images, batch, device),
                                bench.predictions(ours.predict, eval_images, batch, device), 0.3)  # fmt: skip
            ctx.record(f"{arch}.agreement", {k.replace(" ", "_").replace("/", "per"): v for k, v in a.items()})
            ctx.record(f"{arch}.matched", min(a["matched / ref"], a["matched / ours"]))
            del tv, ours
            if device.type == "cuda":
                torch.cuda.empty_cache()

        ctx.attempt(arch, measure)


# ----------------------------------------------------------------------------------------------------------- 5. YOLO
def part_yolo(ctx: PartContext) -> None:
    """YOLO-n/s forward + NMS images/s at batch 1 and 32 against ultralytics YOLOv8n/s; YOLO-n training images/s on
    BCCD against ultralytics' trainer."""
    import torch

    bench = load_bench("yolo")
    sides = load_bench("_yolo_sides")  # both sides in this process: on the GPU no process-wide CPU setting matters
    device = torch.device(ctx.device)
    if ctx.dry_run:
        sizes, batches, imgsz = ("n",), (1, 2), 96
        args = SimpleNamespace(warmup=1, iters=1, epochs=2, train_imgsz=64, train_batch=4, fraction=0.03,
                               workers=0, quick=False, threads=torch.get_num_threads())  # fmt: skip
    else:
        sizes, batches, imgsz = ("n", "s"), (1, 32), 640
        args = SimpleNamespace(warmup=10, iters=50, epochs=3, train_imgsz=640, train_batch=16, fraction=1.0,
                               workers=8, quick=False, threads=torch.get_num_threads())  # fmt: skip
    conf = 0.25
    ctx.record("settings", {"imgsz": imgsz, "conf": conf, "batches": list(batches), **vars(args)})
    peer = missing("ultralytics")
    if peer:
        ctx.skip("ultralytics", peer + "; our side measured alone")

    def images_per_s(make: Any, size: str, b: int) -> float:  # benchmarks/yolo.py's predictors and timing
        seconds = bench.alternate({"run": make(size, b, imgsz, conf, ctx.device)}, warmup=args.warmup,
                                  iters=args.iters, sync=bench._sync(device))["run"]  # fmt: skip
        return b / seconds

    for size in sizes:
        for b in batches:
            key = f"infer.{size}.b{b}"
            ours = ctx.attempt(f"{key}.ours", lambda s=size, b=b: images_per_s(sides.ours_predictor, s, b))
            if ours is not None:
                ctx.record(f"{key}.ours_images_per_s", ours)
            if peer:
                continue
            theirs = ctx.attempt(
                f"{key}.ultralytics", lambda s=size, b=b: images_per_s(sides.ultralytics_predictor, s, b)
            )
            if theirs is not None:
                ctx.record(f"{key}.ultralytics_images_per_s", theirs)
                if ours is not None:
                    ctx.record(f"{key}.ratio", ours / theirs)
    if not ctx.bccd:
        ctx.skip("train", "BCCD not found (pass --bccd)")
        return
    work = ctx.workdir / "yolo_train"
    work.mkdir(exist_ok=True)
    # seconds per epoch on the same images; the ratio ultralytics / ours is ours' images/s over theirs
    opts = {**{k: getattr(args, k) for k in ("epochs", "train_imgsz", "train_batch", "threads", "fraction", "workers")},
            "quiet": True}  # fmt: skip
    where = (ctx.device, str(work))
    ours = ctx.attempt("train.n.ours", lambda: sides.ours_training("n", opts, *where, "ours", str(ctx.bccd))[0])
    if ours is not None:
        ctx.record("train.n.ours_s_per_epoch", ours)
    if peer:
        return
    theirs = ctx.attempt(
        "train.n.ultralytics", lambda: sides.ultralytics_training("n", opts, *where, "peer", str(ctx.bccd))[0]
    )
    if theirs is not None:
        ctx.record("train.n.ultralytics_s_per_epoch", theirs)
        if ours is not None:
            ctx.record("train.n.ratio", theirs / ours)


# ----------------------------------------------------------------------------------------------------------- 6. engine
def part_engine(ctx: PartContext) -> None:
    """The engine's training step against a bare PyTorch loop (ResNet-50, bf16 + channels_last on CUDA)."""
    import torch

    bench = load_bench("train_step")
    device = torch.device(ctx.device)
    if ctx.dry_run:
        args = SimpleNamespace(model="resnet18", batch=2, size=32, steps=2, warmup=1, repeats=1)
    else:
        args = SimpleNamespace(model="resnet50", batch=64, size=224, steps=30, warmup=5, repeats=2)
    precision = "bf16 autocast + channels_last" if ctx.cuda else "fp32 (bf16 / channels_last are the CUDA path)"
    ctx.record("settings", {**vars(args), "precision": precision})
    if not ctx.cuda:
        ctx.skip("bf16", "no CUDA device: the step runs in fp32 on the CPU")
    n = args.batch * max(args.steps, args.warmup)
    g = torch.Generator().manual_seed(0)
    images = torch.randn(n, 3, args.size, args.size, generator=g).to(device)
    if ctx.cuda:
        images = images.contiguous(memory_format=torch.channels_last)
    labels = torch.randint(0, 1000, (n,), generator=g).to(device)
    bare, engine = [], []
    for _ in range(args.repeats):  # interleaved, so drifts in clock speed hit both
        bare.append(bench.bare_loop(args, images, labels, device))
        engine.append(bench.engine_loop(args, images, labels, device))
        ctx.record("bare_images_per_s", max(bare))
        ctx.record("engine_images_per_s", max(engine))
        ctx.record("ratio", max(engine) / max(bare))


# ----------------------------------------------------------------------------------------------------------- 7. quality
def _train(ctx: PartContext, argv: list[str], name: str, timeout: float) -> tuple[Path, float]:
    """``tools/train.py`` in a subprocess; the run folder and the wall time."""
    project = ctx.workdir / "runs"
    cmd = [sys.executable, str(ROOT / "tools" / "train.py"), *argv, f"project={project}", f"name={name}",
           "exist_ok=true", "plots=false", "tensorboard=false", f"device={ctx.device}"]  # fmt: skip
    env = dict(os.environ)
    if ctx.bccd:
        env["VISION_BCCD"] = ctx.bccd
    print("$", " ".join(cmd), flush=True)
    t0 = time.perf_counter()
    proc = subprocess.run(cmd, cwd=ROOT, env=env, capture_output=True, text=True, timeout=max(5.0, timeout))
    wall = time.perf_counter() - t0
    print(proc.stdout[-4000:], proc.stderr[-4000:], sep="\n", flush=True)
    if proc.returncode:
        raise RuntimeError(f"tools/train.py exited {proc.returncode}: {proc.stderr.strip()[-800:]}")
    runs = sorted((project).glob(f"*/{name}"), key=lambda p: p.stat().st_mtime)
    if not runs:
        raise RuntimeError(f"no run folder {name} under {project}")
    return runs[-1], wall


def _metrics(run: Path) -> list[dict[str, float]]:
    with open(run / "metrics.csv", encoding="utf-8", newline="") as f:
        rows = list(csv.DictReader(f))
    return [{k: float(v) for k, v in r.items() if v not in ("", None)} for r in rows]


def part_quality(ctx: PartContext) -> None:
    """YOLO-n from scratch on BCCD (COCOeval mAP50-95, training time) and DDPM-s on digits (Fréchet distance in the
    digits features against the held-out-real floor), each trained by ``tools/train.py``."""
    reason = missing("pycocotools")
    if reason:
        ctx.skip("yolo_bccd", reason + " (COCOeval)")
    elif not ctx.bccd:
        ctx.skip("yolo_bccd", "BCCD not found (pass --bccd)")
    else:
        argv = ["recipe=yolo_n_bccd", "data=bccd"]
        if ctx.dry_run:
            argv += ["epochs=1", "imgsz=64", "model_kwargs.imgsz=64", "batch=4", "fraction=0.03", "workers=0"]
        ctx.attempt("yolo_bccd", lambda: _yolo_bccd(ctx, argv))
    argv = ["recipe=ddpm_digits"]
    if ctx.dry_run:
        argv += ["model_kwargs.base_channels=8", "epochs=1", "repeat=1", "batch=64", "workers=0", "eval_samples=100",
                 "eval_steps=5", "sample_every=0", "val_period=1"]  # fmt: skip
    ctx.attempt("ddpm", lambda: _ddpm(ctx, argv))


def _yolo_bccd(ctx: PartContext, argv: list[str]) -> None:
    run, wall = _train(ctx, argv, "yolo_n_bccd", min(ctx.remaining() - 5, 150.0 if not ctx.dry_run else 60.0))
    rows = _metrics(run)
    maps = [r["map"] for r in rows if "map" in r]
    ctx.record("yolo_bccd", {"epochs": len(rows), "map": max(maps) if maps else None,
                             "map_last": maps[-1] if maps else None, "train_s": sum(r.get("time", 0.0) for r in rows),
                             "wall_s": wall})  # fmt: skip


def _ddpm(ctx: PartContext, argv: list[str]) -> None:
    run, wall = _train(ctx, argv, "ddpm_digits", ctx.remaining() - 3)
    rows = [r for r in _metrics(run) if "fd_digits" in r]
    if not rows:
        raise RuntimeError("the DDPM run recorded no fd_digits")
    last = rows[-1]
    ctx.record("ddpm", {"fd": last["fd_digits"], "floor": last.get("fd_digits_floor"),
                        "fd_ratio": last.get("fd_digits_ratio"), "class_acc": last.get("class_acc"),
                        "train_s": sum(r.get("time", 0.0) for r in _metrics(run)), "wall_s": wall})  # fmt: skip
