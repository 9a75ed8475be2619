"""Detection augmentation throughput: our batched GpuAugment against albumentations and torchvision.transforms.v2.

All pipelines run the same ops on the same decoded images: letterbox to ``size``, random affine (zoom, shift,
rotation), horizontal flip, colour jitter (HSV / brightness-saturation-hue), with boxes, and with instance masks.

- albumentations (CPU, one process, per image): a plain ``A.Compose``, and our ``detection_train`` recipe with the
  same ops (``crop_p=0``) -- the recipe must keep >= 0.9x the plain Compose's speed (it adds box/label bookkeeping and
  carries masks as one instance-id map instead of N binary masks);
- torchvision.transforms.v2 per image on the CPU, and per image on the GPU when there is one;
- ours: :class:`vision.data.GpuAugment`, one call per batch (``--batch`` images) on ``--device``; the batch is
  already on the device (uint8), as it is after ``images.to(device, non_blocking=True)`` in a training loop.

Data: BCCD (640x480 blood-cell photos, boxes) when ``../shared/data/bccd`` is present, else synthetic shapes of the
same size; the masks variant always uses synthetic shapes (BCCD has no masks).

Usage::

    python benchmarks/augment.py                      # GPU when available: batch 256 at 640x640
    python benchmarks/augment.py --device cpu --quick # CPU: batch 16 at 320x320, fewer iterations
    python benchmarks/augment.py --compile            # also time torch.compile'd GpuAugment.apply

Prints images/s per pipeline and the ratio of ours to each peer, measured in the same run.
"""

from __future__ import annotations

import argparse
import os
import sys
import time
from collections.abc import Callable
from pathlib import Path

import numpy as np
import torch

sys.path.insert(0, str(Path(__file__).resolve().parents[1]))
os.environ.setdefault("NO_ALBUMENTATIONS_UPDATE", "1")


def load_samples(kind: str, n: int, masks: bool) -> tuple[str, list[np.ndarray], list[dict]]:
    """``n`` decoded images ``uint8 [H, W, 3]`` and numpy targets (boxes, labels[, masks])."""
    from vision.data import SyntheticShapes, bccd

    if kind == "bccd" and not masks:
        try:
            ds = bccd(split="train")
            name = "BCCD 640x480"
        except FileNotFoundError:
            kind = "synthetic"
    if kind != "bccd" or masks:
        ds = SyntheticShapes(n, size=(480, 640), seed=0, masks=masks, max_objects=12)
        name = "synthetic shapes 640x480"
    images, targets = [], []
    for i in range(n):
        img, t = ds[i % len(ds)]
        images.append(np.ascontiguousarray(img.permute(1, 2, 0).numpy()))
        tt = {"boxes": t["boxes"].numpy(), "labels": t["labels"].numpy()}
        if masks:
            tt["masks"] = t["masks"].numpy()
        targets.append(tt)
    return name, images, targets


def rate(fn: Callable[[], int], *, seconds: float, sync: Callable[[], None] = lambda: None) -> float:
    """Images per second of ``fn`` (which returns how many images it processed), after one warm-up call."""
    fn()
    sync()
    done, start = 0, time.perf_counter()
    while True:
        done += fn()
        sync()
        elapsed = time.perf_counter() - start
        if elapsed >= seconds:
            return done / elapsed


def albumentations_plain(size: int, degrees: float, masks: bool):
    import albumentations as A
    import cv2

    ops = [
        A.LongestMaxSize(max_size=size),
        A.PadIfNeeded(min_height=size, min_width=size, position="center", border_mode=cv2.BORDER_CONSTANT, fill=114),
        A.Affine(
            scale=(0.5, 1.5),
            translate_percent=(-0.1, 0.1),
            rotate=(-degrees, degrees),
            keep_ratio=True,
            border_mode=cv2.BORDER_CONSTANT,
            fill=114,
            p=1.0,
        ),
        A.HorizontalFlip(p=0.5),
        A.HueSaturationValue(hue_shift_limit=5, sat_shift_limit=40, val_shift_limit=30, p=0.8),
        A.ToTensorV2(),
    ]
    bbox = A.BboxParams(format="pascal_voc", label_fields=["labels"], min_visibility=0.1, clip=True)
    compose = A.Compose(ops, bbox_params=bbox, seed=0)

    def run(image: np.ndarray, target: dict) -> None:
        kw = {"masks": list(target["masks"])} if masks else {}
        compose(image=image, bboxes=target["boxes"], labels=target["labels"], **kw)

    return run


def our_recipe(size: int, degrees: float, mask_mode: str = "auto"):
    from vision.data import build_transform

    t = build_transform("detection_train", size=size, crop_p=0.0, degrees=degrees, seed=0, mask_mode=mask_mode)
    return lambda image, target: t(image, target)


def torchvision_v2(size: int, degrees: float, device: str, images: list[np.ndarray], targets: list[dict]):
    from torchvision import tv_tensors
    from torchvision.transforms import v2

    t = v2.Compose([
        v2.Resize(size=None, max_size=size),
        v2.CenterCrop(size),  # pads the short side: a letterbox
        v2.RandomAffine(degrees=degrees, translate=(0.1, 0.1), scale=(0.5, 1.5), fill=114),
        v2.RandomHorizontalFlip(),
        v2.ColorJitter(brightness=0.3, saturation=0.4, hue=0.015),
        v2.SanitizeBoundingBoxes(),
    ])  # fmt: skip
    inputs = []
    for img, tg in zip(images, targets):
        h, w = img.shape[:2]
        sample = {"image": tv_tensors.Image(torch.from_numpy(img).permute(2, 0, 1).contiguous().to(device)),
                  "boxes": tv_tensors.BoundingBoxes(torch.from_numpy(tg["boxes"]).to(device), format="XYXY",
                                                    canvas_size=(h, w)),
                  "labels": torch.from_numpy(tg["labels"]).to(device)}  # fmt: skip
        if "masks" in tg:
            sample["masks"] = tv_tensors.Mask(torch.from_numpy(tg["masks"]).to(device))
        inputs.append(sample)
    return lambda i: t(inputs[i])


def measure(args: argparse.Namespace, masks: bool, *, batch: int, size: int, n_images: int, seconds: float) -> None:
    """Time every pipeline on one data variant and print the table."""
    from vision.data import GpuAugment, instance_map, pad_targets

    device = torch.device(args.device)
    sync = (lambda: torch.cuda.synchronize(device)) if device.type == "cuda" else (lambda: None)
    name, images, targets = load_samples(args.data, n_images, masks)
    print(f"\n== {'boxes + masks' if masks else 'boxes only'} ({name}, {n_images} distinct images) ==")
    results: dict[str, float] = {}
    cursor = [0]

    def next_index() -> int:
        cursor[0] = (cursor[0] + 1) % n_images
        return cursor[0]

    def per_image(fn: Callable[[np.ndarray, dict], object]) -> Callable[[], int]:
        def step() -> int:
            i = next_index()
            fn(images[i], targets[i])
            return 1

        return step

    def per_sample(fn: Callable[[int], object]) -> Callable[[], int]:
        return lambda: (fn(next_index()), 1)[1]

    results["albumentations Compose (CPU, 1 process)"] = rate(
        per_image(albumentations_plain(size, args.degrees, masks)), seconds=seconds
    )
    results["ours: detection_train recipe (CPU, 1 process)"] = rate(
        per_image(our_recipe(size, args.degrees)), seconds=seconds
    )
    if masks:
        results["ours: recipe, masks as N binary masks"] = rate(
            per_image(our_recipe(size, args.degrees, "list")), seconds=seconds
        )
    tv_cpu = torchvision_v2(size, args.degrees, "cpu", images, targets)
    results["torchvision v2 (CPU, per image)"] = rate(per_sample(tv_cpu), seconds=seconds)
    if device.type == "cuda":
        tv_gpu = torchvision_v2(size, args.degrees, str(device), images, targets)
        results["torchvision v2 (GPU, per image)"] = rate(per_sample(tv_gpu), seconds=seconds, sync=sync)
    # ours, batched on the device: `batch` images (the distinct ones repeated), already there as uint8
    idx = [i % n_images for i in range(batch)]
    if len({im.shape for im in images}) != 1:
        raise SystemExit("benchmark images must share one size")
    stacked = torch.from_numpy(np.stack([images[i] for i in idx])).permute(0, 3, 1, 2).contiguous().to(device)
    ttargets = [{k: torch.from_numpy(v).to(device) for k, v in targets[i].items()} for i in idx]
    padded = pad_targets(ttargets, device=device)
    if masks:
        padded["instance_map"] = instance_map(ttargets)
    main_label = f"ours: GpuAugment ({device.type}, batch {batch})"
    for mosaic in (0.0, 0.5):
        aug = GpuAugment(size=size, degrees=args.degrees, mosaic=mosaic).to(device)
        gen = torch.Generator(device=device).manual_seed(0)
        apply = torch.compile(aug.apply, dynamic=False) if args.compile else aug.apply

        def batched(aug: GpuAugment = aug, gen: torch.Generator = gen, apply: Callable = apply) -> int:
            apply(stacked, padded, aug.sample_params(batch, device=device, generator=gen))
            return batch

        def listed(aug: GpuAugment = aug, gen: torch.Generator = gen) -> int:
            aug(stacked, ttargets, generator=gen)
            return batch

        label = main_label[:-1] + (", mosaic 0.5)" if mosaic else ")")
        if args.compile:
            label = label.replace("GpuAugment", "GpuAugment compiled")
        results[label] = rate(batched, seconds=seconds, sync=sync)
        if mosaic == 0.0:
            results[main_label.replace("GpuAugment", "GpuAugment, list targets in/out")] = rate(
                listed, seconds=seconds, sync=sync
            )
    ours = results[main_label.replace("GpuAugment", "GpuAugment compiled") if args.compile else main_label]
    width = max(len(k) for k in results)
    for k, v in results.items():
        print(f"  {k:<{width}}  {v:10.1f} img/s   ours / this = {ours / v:7.2f}x")
    ratio = (
        results["ours: detection_train recipe (CPU, 1 process)"] / results["albumentations Compose (CPU, 1 process)"]
    )
    verdict = "OK" if ratio >= 0.9 else "BELOW 0.9"
    print(f"  our CPU recipe / plain albumentations Compose (same ops, same process) = {ratio:.2f}  [{verdict}]")


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--device", default="cuda" if torch.cuda.is_available() else "cpu")
    parser.add_argument("--quick", action="store_true", help="small settings for a CPU run")
    parser.add_argument("--batch", type=int, default=None, help="GpuAugment batch (default 256, --quick 16)")
    parser.add_argument("--size", type=int, default=None, help="output side (default 640, --quick 320)")
    parser.add_argument("--images", type=int, default=None, help="distinct images loaded (default 64, --quick 16)")
    parser.add_argument("--seconds", type=float, default=None, help="time per measurement (default 3, --quick 1)")
    parser.add_argument("--threads", type=int, default=1, help="CPU threads (torch and OpenCV), like a loader worker")
    parser.add_argument("--degrees", type=float, default=10.0)
    parser.add_argument("--data", choices=("bccd", "synthetic"), default="bccd")
    parser.add_argument("--compile", action="store_true", help="time torch.compile(GpuAugment.apply) as ours")
    parser.add_argument("--only", choices=("boxes", "masks"), default=None, help="run one variant")
    args = parser.parse_args()
    import cv2

    torch.set_num_threads(args.threads)
    cv2.setNumThreads(args.threads)
    batch = args.batch or (16 if args.quick else 256)
    size = args.size or (320 if args.quick else 640)
    n_images = args.images or (16 if args.quick else 64)
    seconds = args.seconds or (1.0 if args.quick else 3.0)
    device = torch.device(args.device)
    gpu = f" ({torch.cuda.get_device_name(device)})" if device.type == "cuda" else ""
    print(f"torch {torch.__version__}, device {device}{gpu}, {args.threads} CPU thread(s); "
          f"output {size}x{size}, GpuAugment batch {batch}")  # fmt: skip
    for masks in (False, True):
        if args.only is None or args.only == ("masks" if masks else "boxes"):
            measure(args, masks, batch=batch, size=size, n_images=n_images, seconds=seconds)


if __name__ == "__main__":
    main()
