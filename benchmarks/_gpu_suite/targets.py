"""The targets of issue 18 ("Targets", ratios measured in the same run) and their judgement from the parts' numbers.

A target reads one number (or flag) from one part's ``numbers`` by a dotted path and compares it with a threshold.
It is *held* when the comparison is true, *not held* when it is false, and *not measured* (``held`` is ``None``)
when the number is missing (the part was skipped, timed out or failed before measuring it). The suite's exit code is
0 only when every target is held.
"""

from __future__ import annotations

import math
import operator
from collections.abc import Mapping
from dataclasses import dataclass
from typing import Any

_OPS = {">=": operator.ge, "<=": operator.le, "==": operator.eq}


@dataclass(frozen=True)
class Target:
    """One target: ``numbers[part][path] <op> threshold``."""

    id: str
    part: str
    path: str
    op: str
    threshold: float | bool
    text: str


TARGETS: tuple[Target, ...] = (
    Target("gpu_tests", "pytest", "all_passed", "==", True, "pytest -m gpu: every test passed, none failed"),
    Target("nms_identical", "nms", "all_identical", "==", True, "NMS kept sets identical to torchvision's"),
    Target("nms_graph", "nms", "all_graph_captured", "==", True, "our multi-image NMS captured in a CUDA graph"),
    Target("nms_16x8400x80", "nms", "cases.multi_16x8400x80.speedup", ">=", 100.0,
           "NMS 16 x 8,400 x 80: >= 100x torchvision batched_nms"),
    Target("nms_8x30000x80", "nms", "cases.multi_8x30000x80.speedup", ">=", 100.0,
           "NMS 8 x 30,000 x 80: >= 100x torchvision batched_nms"),
    Target("nms_one_class_20k", "nms", "cases.one_class_20k.speedup", ">=", 5.0,
           "NMS one class 20k: >= 5x torchvision nms"),
    Target("aug_rate", "augment", "ours_full_images_per_s", ">=", 30_000.0,
           "augmentation 640 px, batch 256, boxes + masks: >= 30,000 images/s"),
    Target("aug_vs_kornia", "augment", "ratio_vs_kornia", ">=", 10.0, "augmentation >= 10x kornia (same ops)"),
    Target("aug_vs_albumentations", "augment", "ratio_vs_albumentations", ">=", 250.0,
           "augmentation >= 250x one albumentations core"),
    Target("faster_rcnn_speed", "rcnn", "fasterrcnn_resnet50_fpn.speedup", ">=", 2.5,
           "Faster R-CNN R50-FPN batch 8, 800 px: >= 2.5x torchvision"),
    Target("faster_rcnn_matched", "rcnn", "fasterrcnn_resnet50_fpn.matched", ">=", 0.9,
           "Faster R-CNN detections matched to torchvision's (IoU >= 0.5, both ways): >= 0.9"),
    Target("mask_rcnn_speed", "rcnn", "maskrcnn_resnet50_fpn.speedup", ">=", 5.0,
           "Mask R-CNN R50-FPN batch 8, 800 px: >= 5x torchvision"),
    Target("mask_rcnn_matched", "rcnn", "maskrcnn_resnet50_fpn.matched", ">=", 0.9,
           "Mask R-CNN detections matched to torchvision's (IoU >= 0.5, both ways): >= 0.9"),
    Target("yolo_n_e2e_b32", "yolo", "infer.n.b32.ratio", ">=", 1.3,
           "YOLO-n end-to-end (forward + NMS) at batch 32: >= 1.3x ultralytics YOLOv8n"),
    Target("yolo_n_train", "yolo", "train.n.ratio", ">=", 1.5, "YOLO-n training images/s on BCCD: >= 1.5x ultralytics"),
    Target("engine_step", "engine", "ratio", ">=", 0.9, "engine ResNet-50 training step: >= 0.9x the bare loop"),
    Target("yolo_bccd_map", "quality", "yolo_bccd.map", ">=", 0.583, "YOLO-n on BCCD, 30 epochs: mAP50-95 >= 0.583"),
    Target("yolo_bccd_time", "quality", "yolo_bccd.train_s", "<=", 65.0, "YOLO-n on BCCD: <= 65 s of training"),
    Target("ddpm_fd", "quality", "ddpm.fd_ratio", "<=", 1.5, "DDPM-s on digits: Fréchet distance <= 1.5x the floor"),
)  # fmt: skip


def lookup(numbers: Mapping[str, Any], path: str) -> Any:
    """``numbers`` followed along the dotted ``path``; ``None`` where a key is missing."""
    node: Any = numbers
    for key in path.split("."):
        if not isinstance(node, Mapping) or key not in node:
            return None
        node = node[key]
    return node


def judge_one(target: Target, value: Any) -> bool | None:
    """``True`` (held), ``False`` (not held) or ``None`` (not measured: missing, or a NaN)."""
    if value is None:
        return None
    if isinstance(target.threshold, bool):
        return bool(value) is target.threshold if isinstance(value, bool) else None
    if isinstance(value, bool) or not isinstance(value, int | float) or math.isnan(value):
        return None
    return bool(_OPS[target.op](float(value), float(target.threshold)))


def judge(
    parts: Mapping[str, Mapping[str, Any]], *, dry_run: bool = False, targets: tuple[Target, ...] = TARGETS
) -> list[dict[str, Any]]:
    """Every target with the value read from ``parts`` (``name -> numbers``) and its verdict.

    In a dry run nothing is judged (``held`` is ``None``, ``verdict`` says so): toy sizes on a CPU say nothing about
    the targets.
    """
    rows = []
    for t in targets:
        value = lookup(parts.get(t.part) or {}, t.path)
        held = None if dry_run else judge_one(t, value)
        if dry_run:
            verdict = "not judged (dry run)"
        else:
            verdict = {True: "held", False: "NOT held", None: "not measured"}[held]
        rows.append({"id": t.id, "part": t.part, "text": t.text, "path": t.path, "op": t.op,
                     "threshold": t.threshold, "value": value, "held": held, "verdict": verdict})  # fmt: skip
    return rows


def all_held(rows: list[dict[str, Any]]) -> bool:
    """Whether every judged row is held (a target not measured is not held)."""
    return bool(rows) and all(r["held"] is True for r in rows)
