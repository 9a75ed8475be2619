"""Faster / Mask R-CNN inference: torchvision's model against ours with the same weights on the same images.

Both models get the same state dict (our run's weights load into torchvision's model unchanged: same keys). The
torchvision side is what a torchvision user runs: ``model(images)`` in float32. Ours is ``model.predict(images)``:
the fast path (bf16 autocast + channels_last on CUDA, batched NMS in the RPN and the box head, batched mask paste).
The script prints images/s of both and the ratio, the agreement of the detections (boxes matched by IoU, their IoU,
score differences, label agreement), and, with ``--data`` (ground truth) and ``--weights``, the COCO mAP of
torchvision's fp32 result and of ours, and their difference in points.

Usage::

    # the GPU check: weights trained by our engine, the run's validation images at 800 px, batch 8
    python benchmarks/rcnn.py --arch fasterrcnn_resnet50_fpn --data bccd \
        --weights runs/detection/fasterrcnn_resnet50_fpn_bccd/weights/best.safetensors
    python benchmarks/rcnn.py --arch maskrcnn_resnet50_fpn --data synthetic \
        --weights runs/detection/maskrcnn_resnet50_fpn_synthetic/weights/best.safetensors
    python benchmarks/rcnn.py                        # both architectures, seeded random weights, scikit-image photos
    python benchmarks/rcnn.py --device cpu --quick   # small sizes on the CPU (fast path without AMP)

Without ``--weights`` the models get seeded random weights whose class biases are shifted so that every image has
detections (the post-processing is then timed at full load: 100 detections and masks per image).
"""

from __future__ import annotations

import argparse
import statistics
import time
from pathlib import Path
from typing import Any

import torch
import torchvision.models.detection as tvd
from torchvision.ops import box_iou

import vision
from vision import load_model
from vision.models.detection.common import to_dataset_detections
from vision.tasks.detection.coco_eval import COCOEvaluator, coco_from_dataset

ARCHS = ("fasterrcnn_resnet50_fpn", "maskrcnn_resnet50_fpn")


# ----------------------------------------------------------------------------------------------------------- inputs
def _run_args(weights: str) -> dict[str, Any]:
    """The training arguments of the run that wrote ``weights`` (``{}`` for other files)."""
    import yaml

    p = Path(weights)
    run = p.parent.parent if p.parent.name == "weights" else p
    return (yaml.safe_load((run / "args.yaml").read_text()) or {}) if (run / "args.yaml").is_file() else {}


def load_images(data: str, count: int, run_args: dict[str, Any]) -> tuple[list[torch.Tensor], Any]:
    """``count`` float [0, 1] images (all of the validation set for ``bccd`` / ``synthetic``, with ground truth).

    ``synthetic`` rebuilds the validation set of the run (``synthetic.*`` keys of its ``args.yaml``)."""
    if data == "photos":
        from skimage import data as sk

        photos = [sk.astronaut(), sk.coffee(), sk.chelsea(), sk.rocket(), sk.immunohistochemistry()]
        images = [torch.from_numpy(p).permute(2, 0, 1).float().div(255) for p in photos]
        return [images[i % len(images)] for i in range(count)], None
    if data == "bccd":
        from vision.data import bccd

        ds = bccd(split="val")
    elif data == "synthetic":
        from vision.data import SyntheticShapes

        cfg = {"val": 64, "size": 512, "seed": 0, "max_objects": 6, **(run_args.get("synthetic") or {})}
        ds = SyntheticShapes(int(cfg["val"]), size=int(cfg["size"]), seed=int(cfg["seed"]) + 1_000_003, masks=True,
                             max_objects=int(cfg["max_objects"]))  # fmt: skip
    else:
        raise ValueError(f"--data must be photos, bccd or synthetic, got {data!r}")
    return [ds[i][0].float().div(255) for i in range(len(ds))], ds


def build_pair(arch: str, weights: str | None, size: int, device: torch.device) -> tuple[Any, Any, int]:
    """``(torchvision model, our model, label offset)`` in eval mode with identical weights."""
    settings = {"min_size": size, "max_size": round(size * 1333 / 800)}
    if weights:
        ours = load_model(weights, model=arch)
        for key, value in settings.items():
            setattr(ours.transform, key, (value,) if key == "min_size" else value)
        state = ours.state_dict()
        num_classes = ours.num_classes
    else:
        torch.manual_seed(0)
        ours = vision.create_model(arch, num_classes=4, **settings)
        with torch.no_grad():  # random heads score every class ~1/K: shift the biases so that there are detections
            ours.roi_heads.box_predictor.cls_score.bias.copy_(torch.tensor([-3.0, 1.0, 0.5, 0.0]))
        state = ours.state_dict()
        num_classes = 4
    tv = getattr(tvd, arch)(weights=None, weights_backbone=None, num_classes=num_classes, **settings)
    result = tv.load_state_dict(state, strict=False)
    bad = [k for k in result.missing_keys if not k.endswith("num_batches_tracked")] + list(result.unexpected_keys)
    if bad:
        raise RuntimeError(f"the weights do not fit torchvision's {arch}: {bad[:5]}")
    return tv.to(device).eval(), ours.to(device).eval(), 1


# ----------------------------------------------------------------------------------------------------------- timing
def sync(device: torch.device) -> None:
    if device.type == "cuda":
        torch.cuda.synchronize(device)


@torch.no_grad()
def images_per_second(fn: Any, batches: list[list[torch.Tensor]], device: torch.device, warmup: int) -> float:
    for b in batches[:warmup]:
        fn(b)
    sync(device)
    times = []
    for b in batches:
        t0 = time.perf_counter()
        fn(b)
        sync(device)
        times.append(time.perf_counter() - t0)
    return len(batches[0]) / statistics.median(times)


# ----------------------------------------------------------------------------------------------------------- agreement
def agreement(ref: list[dict], ours: list[dict], min_score: float) -> dict[str, float]:
    """Greedy IoU >= 0.5 matching of the detections scoring >= ``min_score``: matched fractions, mean IoU, score
    differences and label agreement of the matched pairs."""
    n_ref = n_ours = matched = same_label = 0
    ious: list[float] = []
    diffs: list[float] = []
    for r, o in zip(ref, ours):
        rk, ok = r["scores"] >= min_score, o["scores"] >= min_score
        rb, rs, rl = r["boxes"][rk].float().cpu(), r["scores"][rk].float().cpu(), r["labels"][rk].cpu()
        ob, os_, ol = o["boxes"][ok].float().cpu(), o["scores"][ok].float().cpu(), o["labels"][ok].cpu()
        n_ref, n_ours = n_ref + len(rb), n_ours + len(ob)
        if not len(rb) or not len(ob):
            continue
        iou = box_iou(rb, ob)
        used = torch.zeros(len(ob), dtype=torch.bool)
        for i in range(len(rb)):
            row = iou[i].masked_fill(used, -1.0)
            j = int(row.argmax())
            if float(row[j]) >= 0.5:
                used[j] = True
                matched += 1
                ious.append(float(row[j]))
                diffs.append(abs(float(rs[i]) - float(os_[j])))
                same_label += int(rl[i] == ol[j])
    return {
        "ref detections": n_ref,
        "our detections": n_ours,
        "matched / ref": matched / max(n_ref, 1),
        "matched / ours": matched / max(n_ours, 1),
        "mean IoU": statistics.fmean(ious) if ious else float("nan"),
        "mean |score diff|": statistics.fmean(diffs) if diffs else float("nan"),
        "max |score diff|": max(diffs) if diffs else float("nan"),
        "label agreement": same_label / max(matched, 1),
    }


@torch.no_grad()
def predictions(fn: Any, images: list[torch.Tensor], batch: int, device: torch.device) -> list[dict]:
    """Every image's detections on the CPU; masks kept as ``mask > 0.5`` (bool ``[N, 1, H, W]``, a quarter of the
    float memory: 100 masks of an 800 x 1200 image are 96 MB), which is all that COCO's ``segm`` evaluation reads."""
    out = []
    for start in range(0, len(images), batch):
        chunk = [img.to(device) for img in images[start : start + batch]]
        out += [{k: (v > 0.5 if k == "masks" else v).cpu() for k, v in d.items()} for d in fn(chunk)]
    return out


def has_masks(results: list[dict]) -> bool:
    """Whether the results carry masks: all of them, or none (a mix is an error, never a silent box-only mAP)."""
    flags = {"masks" in d for d in results}
    if len(flags) > 1:
        missing = [i for i, d in enumerate(results) if "masks" not in d]
        raise RuntimeError(f"{len(missing)} of {len(results)} results have no masks (first: image {missing[0]})")
    return flags == {True}


def coco_map(dataset: Any, dets: list[dict], offset: int, masks: bool) -> dict[str, float]:
    ids = [int(dataset[i][1]["image_id"]) for i in range(len(dets))]
    ev = COCOEvaluator(coco_from_dataset(dataset), iou_types=("bbox", "segm") if masks else ("bbox",),
                       label_to_cat_id=getattr(dataset, "label_to_cat_id", None))  # fmt: skip
    ev.update(to_dataset_detections(dets, offset), ids)
    out = ev.evaluate(synchronize=False)
    return {k: out[k] for k in ("map", "map50", "mask_map") if k in out}


# ----------------------------------------------------------------------------------------------------------- main
def bench(arch: str, args: argparse.Namespace, images: list[torch.Tensor], dataset: Any, device: torch.device) -> None:
    """Time, compare and (with ground truth and weights) evaluate torchvision's and our ``arch``."""
    tv, ours, offset = build_pair(arch, args.weights, args.size, device)
    on_device = [img.to(device) for img in images]
    n = len(on_device)
    batches = [
        [on_device[(i * args.batch + k) % n] for k in range(args.batch)] for i in range(args.iters + args.warmup)
    ]
    ref_ips = images_per_second(tv, batches, device, args.warmup)
    our_ips = images_per_second(ours.predict, batches, device, args.warmup)
    print(f"\n{arch}")
    print(f"  torchvision (fp32, model(images)) : {ref_ips:8.2f} images/s")
    print(f"  ours (fast path, predict)         : {our_ips:8.2f} images/s   x{our_ips / ref_ips:.2f}")
    if args.exact:
        exact_ips = images_per_second(lambda b: ours.predict(b, fast=False), batches, device, args.warmup)
        print(f"  ours (exact path, fast=False)     : {exact_ips:8.2f} images/s   x{exact_ips / ref_ips:.2f}")
    eval_images = images if dataset is not None else images[: args.batch * 2]
    ref = predictions(tv, eval_images, args.batch, device)
    got = predictions(ours.predict, eval_images, args.batch, device)
    stats = agreement(ref, got, args.agree_score)
    shown = ", ".join(f"{k} {v:.4g}" if isinstance(v, float) else f"{k} {v}" for k, v in stats.items())
    print(f"  agreement on {len(eval_images)} images (scores >= {args.agree_score}): {shown}")
    if dataset is not None and args.weights:
        masks = has_masks(ref + got)
        a, b = coco_map(dataset, ref, offset, masks), coco_map(dataset, got, offset, masks)
        for key in a:
            diff = 100 * (b[key] - a[key])
            print(f"  COCO {key}: torchvision fp32 {a[key]:.4f}, ours {b[key]:.4f}, difference {diff:+.2f} points")


def run(args: argparse.Namespace) -> None:
    device = torch.device(args.device)
    torch.backends.cudnn.benchmark = True  # fixed shapes: both models get the fastest convolution algorithms
    if args.threads:
        torch.set_num_threads(args.threads)
    count = max(args.batch * (args.iters + args.warmup), args.batch)
    images, dataset = load_images(args.data, count, _run_args(args.weights) if args.weights else {})
    name = torch.cuda.get_device_name(device) if device.type == "cuda" else "cpu"
    weights = args.weights or "random (seeded)"
    print(f"device {device} ({name}), batch {args.batch}, min_size {args.size}, data {args.data}, weights {weights}")
    for arch in ARCHS if args.arch == "all" else (args.arch,):
        bench(arch, args, images, dataset, device)
        if device.type == "cuda":
            torch.cuda.empty_cache()


def main(argv: list[str] | None = None) -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--arch", default="all", choices=("all", *ARCHS))
    parser.add_argument("--weights", default="", help="our run's best.safetensors (default: seeded random weights)")
    parser.add_argument("--data", default="photos", choices=("photos", "bccd", "synthetic"))
    parser.add_argument("--device", default="cuda" if torch.cuda.is_available() else "cpu")
    parser.add_argument("--batch", type=int, default=8)
    parser.add_argument("--size", type=int, default=800, help="min_size of both models (max_size scales with it)")
    parser.add_argument("--iters", type=int, default=10)
    parser.add_argument("--warmup", type=int, default=3)
    parser.add_argument("--agree-score", type=float, default=0.3, help="compare detections scoring at least this")
    parser.add_argument("--exact", action="store_true", help="also time our exact (torchvision-identical) path")
    parser.add_argument("--threads", type=int, default=0)
    parser.add_argument("--quick", action="store_true", help="small: batch 2, 320 px, 2 iterations")
    args = parser.parse_args(argv)
    if args.quick:
        args.batch, args.size, args.iters, args.warmup = 2, 320, 2, 1
    run(args)


if __name__ == "__main__":
    main()
