"""Parts 1-3 of the GPU suite: ``pytest -m gpu``, NMS against torchvision, augmentation against kornia and
albumentations."""

from __future__ import annotations

import re
import subprocess
import sys
import xml.etree.ElementTree as ET
from typing import Any

from .common import ROOT, PartContext, load_bench, missing, sync


# ----------------------------------------------------------------------------------------------------- 1. pytest -m gpu
def gpu_test_files() -> list[str]:
    """Test files (relative to the repository) that mark tests ``gpu``."""
    pattern = re.compile(r"mark\.gpu\b")
    files = []
    for path in sorted((ROOT / "tests").rglob("test_*.py")):
        if pattern.search(path.read_text(encoding="utf-8")):
            files.append(str(path.relative_to(ROOT)))
    return files


def part_pytest(ctx: PartContext) -> None:
    """``pytest -m gpu`` over the files holding gpu tests; counts of passed / failed / skipped from its JUnit XML."""
    files = gpu_test_files()
    ctx.record("files", files)
    xml = ctx.workdir / "pytest_gpu.xml"
    cmd = [sys.executable, "-m", "pytest", "-q", "-m", "gpu", "-p", "no:cacheprovider", f"--junitxml={xml}", *files]
    timeout = max(5.0, ctx.remaining() - 3.0)
    proc = subprocess.run(cmd, cwd=ROOT, capture_output=True, text=True, timeout=timeout)
    print(proc.stdout[-6000:], proc.stderr[-3000:], sep="\n", flush=True)
    ctx.record("returncode", proc.returncode)
    if not xml.is_file():
        raise RuntimeError(f"pytest wrote no report (exit {proc.returncode}): {proc.stderr[-500:]}")
    counts = {"tests": 0, "failures": 0, "errors": 0, "skipped": 0}
    failed: list[str] = []
    for suite in ET.parse(xml).getroot().iter("testsuite"):
        for key in counts:
            counts[key] += int(suite.get(key, 0))
        for case in suite.iter("testcase"):
            if case.find("failure") is not None or case.find("error") is not None:
                failed.append(f"{case.get('classname')}::{case.get('name')}")
    passed = counts["tests"] - counts["failures"] - counts["errors"] - counts["skipped"]
    ctx.record("passed", passed)
    ctx.record("failed", counts["failures"])
    ctx.record("errors", counts["errors"])
    ctx.record("skipped", counts["skipped"])
    ctx.record("failed_tests", failed[:20])
    ctx.record("all_passed", passed > 0 and not counts["failures"] and not counts["errors"])
    if not ctx.cuda:
        ctx.skip("gpu tests", "no CUDA device: every gpu test skips (the dry run checks that they are collected)")


# ----------------------------------------------------------------------------------------------------------- 2. NMS
def nms_cases(dry_run: bool) -> dict[str, Any]:
    """The issue's NMS cases by key (toy shapes of the same kinds in a dry run)."""
    Case = load_bench("nms").Case
    if dry_run:
        return {
            "multi_16x8400x80": Case("toy 2x300x80", 2, 300, 80, iou_threshold=0.6),
            "multi_8x30000x80": Case("toy 1x600x80", 1, 600, 80, iou_threshold=0.6),
            "one_class_20k": Case("toy one class 1k", 1, 1_000, 1),
            "one_class_100k": Case("toy one class 2k", 1, 2_000, 1),
        }
    return {
        "multi_16x8400x80": Case("YOLO 16x8400x80", 16, 8_400, 80, iou_threshold=0.6),
        "multi_8x30000x80": Case("YOLO 8x30000x80", 8, 30_000, 80, iou_threshold=0.6),
        "one_class_20k": Case("one class 20k", 1, 20_000, 1),
        "one_class_100k": Case("one class 100k", 1, 100_000, 1),
    }


def part_nms(ctx: PartContext) -> None:
    """Kept-set identity and median times of ours against torchvision on the issue's four cases."""
    import torch

    bench = load_bench("nms")
    device = torch.device(ctx.device)
    repeats = 1 if ctx.dry_run else 20
    if not ctx.cuda:
        ctx.skip("CUDA graph", "no CUDA device: the CUDA-graph capture of our NMS needs one")
    identical, captured = [], []
    for key, case in nms_cases(ctx.dry_run).items():
        row = ctx.attempt(key, lambda case=case: bench.run_case(case, device, repeats))
        if row is None:
            identical.append(False)
            continue
        tv, ours, graph = float(row["torchvision"]), float(row["ours"]), row.get("ours (graph)")
        out = {"case": row["case"], "shape": row["shape"], "kept": row["kept"], "identical_exact": row["identical"],
               "identical_torchvision": row["same set as torchvision"], "torchvision_ms": tv, "ours_ms": ours,
               "speedup": tv / ours}  # fmt: skip
        identical.append(bool(row["identical"]) and bool(row["same set as torchvision"]))
        if case.classes > 1 and ctx.cuda:
            out["graph_captured"] = graph is not None
            captured.append(graph is not None)
            if graph is not None:
                out["graph_ms"], out["speedup_graph"] = float(graph), tv / float(graph)
        ctx.record(f"cases.{key}", out)
    ctx.record("all_identical", all(identical))
    if ctx.cuda:
        ctx.record("all_graph_captured", bool(captured) and all(captured))


# ----------------------------------------------------------------------------------------------------- 3. augmentation
def part_augment(ctx: PartContext) -> None:
    """Images/s of GpuAugment (boxes + masks, per-sample mosaic/affine/HSV/flip), kornia's AugmentationSequential
    with the same operations on the same batch, and albumentations on one CPU core; the ratios."""
    import cv2
    import numpy as np
    import torch

    from vision.data import GpuAugment, instance_map, pad_targets

    bench = load_bench("augment")
    batch, size, n_images, seconds = (4, 128, 2, 0.2) if ctx.dry_run else (256, 640, 32, 3.0)
    degrees = 10.0
    device = torch.device(ctx.device)
    ctx.record("settings", {"batch": batch, "size": size, "distinct_images": n_images, "seconds": seconds,
                            "data": "synthetic shapes 640x480 with instance masks"})  # fmt: skip
    _, images, targets = bench.load_samples("synthetic", n_images, masks=True)
    idx = [i % n_images for i in range(batch)]
    stacked = torch.from_numpy(np.stack([images[i] for i in idx])).permute(0, 3, 1, 2).contiguous().to(device)
    listed = [{k: torch.from_numpy(v).to(device) for k, v in targets[i].items()} for i in idx]
    padded = pad_targets(listed, device=device)
    padded["instance_map"] = instance_map(listed)
    wait = lambda: sync(ctx.device)  # noqa: E731

    def ours(mosaic: float) -> float:
        aug = GpuAugment(size=size, degrees=degrees, scale=0.5, translate=0.1, mosaic=mosaic).to(device)
        gen = torch.Generator(device=device).manual_seed(0)

        def step() -> int:
            aug.apply(stacked, padded, aug.sample_params(batch, device=device, generator=gen))
            return batch

        return bench.rate(step, seconds=seconds, sync=wait)

    full = ctx.attempt("ours_full", lambda: ours(0.5))
    if full is not None:
        ctx.record("ours_full_images_per_s", full)
    same = ctx.attempt("ours_same_ops", lambda: ours(0.0))
    if same is not None:
        ctx.record("ours_same_ops_images_per_s", same)

    reason = missing("kornia")
    if reason:
        ctx.skip("kornia", reason)
    else:
        ctx.record("kornia_note", "kornia 0.9's RandomMosaic transforms no masks: both sides run without mosaic")
        k = ctx.attempt("kornia", lambda: _kornia_rate(bench, stacked, padded, size, degrees, seconds, wait))
        if k is not None:
            ctx.record("kornia_images_per_s", k)
            if same is not None:
                ctx.record("ratio_vs_kornia", same / k)

    reason = missing("albumentations")
    if reason:
        ctx.skip("albumentations", reason)
        return
    threads = torch.get_num_threads()
    torch.set_num_threads(1)
    cv2.setNumThreads(1)
    try:
        run = bench.albumentations_plain(size, degrees, masks=True)
        cursor = [0]

        def one() -> int:
            cursor[0] = (cursor[0] + 1) % n_images
            run(images[cursor[0]], targets[cursor[0]])
            return 1

        a = ctx.attempt("albumentations", lambda: bench.rate(one, seconds=seconds))
    finally:
        torch.set_num_threads(threads)
    if a is not None:
        ctx.record("albumentations_one_core_images_per_s", a)
        if same is not None:
            ctx.record("ratio_vs_albumentations", same / a)


def _kornia_rate(bench: Any, stacked: Any, padded: dict, size: int, degrees: float, seconds: float, wait: Any) -> float:
    """kornia: letterbox (pad), affine, flip, HSV-like colour jitter on images, boxes and the instance map."""
    import kornia.augmentation as K
    import torch

    B, _, H, W = stacked.shape
    scale = size / max(H, W)
    h, w = round(H * scale), round(W * scale)
    seq = K.AugmentationSequential(
        K.Resize((h, w)),
        K.PadTo((size, size), pad_value=114 / 255),
        K.RandomAffine(degrees=degrees, translate=(0.1, 0.1), scale=(0.5, 1.5), p=1.0, padding_mode="zeros"),
        K.RandomHorizontalFlip(p=0.5),
        K.ColorJiggle(brightness=0.4, saturation=0.7, hue=0.015, p=1.0),
        data_keys=["input", "bbox_xyxy", "mask"],
    )
    boxes = padded["boxes"]
    masks = padded["instance_map"].unsqueeze(1)

    def step() -> int:
        with torch.no_grad():
            seq(stacked.float().div(255), boxes, masks.float())
        return B

    return bench.rate(step, seconds=seconds, sync=wait)
