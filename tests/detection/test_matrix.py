"""Every registered backbone family in every detector, in the style of timm's ``tests/test_models.py``.

The parameter list is built from the registry: one variant per family (the smallest, counted on the ``meta``
device, so nothing is allocated), where a family is a registered name without its size suffix (``resnet18`` ->
``resnet``, ``efficientnet_lite0`` -> ``efficientnet_lite``, ``csp_darknet_n`` -> ``csp_darknet``). A newly
registered family is tested without editing this file. timm has thousands of architectures, so a fixed list of
small timm models stands for its kinds: a plain ViT (single-scale), ConvNeXt, MobileNetV3, RegNet and MobileViT (a
convolution/attention hybrid of the EfficientFormer kind that, unlike EfficientFormer, takes any input size).

Each cell builds the detector, takes one training step at one input size (finite loss, gradients reaching the
backbone) and predicts at two sizes, one of them not a multiple of 32, checking the backbone's declared levels
(channels, nominal stride: ``ceil(H / stride)``) against the maps it really returns.
"""

from __future__ import annotations

import math
import re
from collections.abc import Callable

import pytest
import torch
from torch import nn

import vision
from vision.registry import BACKBONES

#: timm models standing for timm's kinds (architectures only: no weights are needed)
TIMM = [
    "timm/vit_tiny_patch16_224",  # plain ViT: one stride, simple pyramid
    "timm/convnext_atto",  # ConvNeXt: floor-rounded maps at odd sizes
    "timm/mobilenetv3_small_050",
    "timm/regnetx_002",
    "timm/mobilevit_xxs",  # convolution/attention hybrid at any input size
]

#: family -> why it is not run through the detectors; must stay empty for every family named in issue 16
SKIP: dict[str, str] = {}

#: families that must be in the matrix (issue 16)
REQUIRED = {
    "alexnet", "vgg", "resnet", "resnext", "wide_resnet", "inception_v", "efficientnet_b", "efficientnet_v",
    "efficientnet_lite", "csp_darknet", *TIMM,
}  # fmt: skip

#: input sizes (H, W): the first a multiple of 32, the second of nothing
SIZES = [(128, 160), (122, 170)]
#: heavy torchvision bodies: their cells are marked slow (they still run in CI)
SLOW = {"vgg11", "wide_resnet50_2", "inception_v3", "resnext50_32x4d", "efficientnet_v2_s"}

TINY: dict[str, dict] = {
    "yolo": {"neck_channels": (16, 32, 64), "depth": 1, "imgsz": 160},
    "ssd": {"size": 128, "extra_widths": (32, 32)},
    "faster_rcnn": {
        "min_size": 128, "max_size": 170, "fpn_channels": 16, "representation_size": 32,
        "rpn_pre_nms_top_n_train": 100, "rpn_post_nms_top_n_train": 32, "rpn_pre_nms_top_n_test": 50,
        "rpn_post_nms_top_n_test": 16, "rpn_batch_size_per_image": 32, "box_batch_size_per_image": 16,
        "box_detections_per_img": 10,
    },
}  # fmt: skip
TINY["mask_rcnn"] = {**TINY["faster_rcnn"], "mask_channels": 8}
DETECTORS = list(TINY)


def family_of(name: str) -> str:
    """A registered name without its size suffix: ``resnet50`` -> ``resnet``, ``csp_darknet_n`` -> ``csp_darknet``."""
    return re.sub(r"_?(\d+[a-z0-9_]*|_[nsml])$", "", name) or name


def _num_params(name: str) -> int:
    with torch.device("meta"):
        return sum(p.numel() for p in BACKBONES.get(name).builder(features=True).parameters())


def registry_variants() -> list[str]:
    """The smallest registered variant of every backbone family, then the timm stand-ins."""
    families: dict[str, list[str]] = {}
    for name in BACKBONES.names():
        families.setdefault(family_of(name), []).append(name)
    return [min(names, key=_num_params) for _, names in sorted(families.items())] + TIMM


VARIANTS = registry_variants()


def _param(name: str, *extra: str) -> object:
    marks = [pytest.mark.slow] if name in SLOW else []
    if family_of(name) in SKIP or name in SKIP:
        marks.append(pytest.mark.skip(reason=SKIP.get(family_of(name), SKIP.get(name))))
    return pytest.param(*extra, name, marks=marks, id="-".join((*extra, name)))


def test_the_matrix_covers_the_registry_and_the_required_families():
    covered = {family_of(v) if not v.startswith("timm/") else v for v in VARIANTS}
    assert covered >= REQUIRED, f"missing families: {REQUIRED - covered}"
    assert not REQUIRED & set(SKIP), "the families issue 16 names may not be skipped"
    assert {family_of(n) for n in BACKBONES.names()} <= covered  # every registered family, none listed by hand
    assert family_of("resnet18") == "resnet" and family_of("csp_darknet_n") == "csp_darknet"


def _ceil_shape(spec, size: tuple[int, int]) -> tuple[int, int, int]:
    return spec.channels, math.ceil(size[0] / spec.stride), math.ceil(size[1] / spec.stride)


@pytest.mark.parametrize("name", [_param(v) for v in VARIANTS])
def test_declared_levels_hold_at_any_size(name):
    body = vision.create_backbone(name, out_indices=None).eval()
    all_levels = (
        body
        if len(body.out_indices) == len(body.feature_info)
        else vision.create_backbone(name, out_indices=range(len(body.feature_info))).eval()
    )
    for size in SIZES:
        with torch.no_grad():
            feats = all_levels(torch.rand(1, 3, *size))
        assert list(feats) == [s.name for s in all_levels.specs]
        for spec in all_levels.specs:
            assert tuple(feats[spec.name].shape[1:]) == _ceil_shape(spec, size), (name, spec, size)


def _feature_body(model: nn.Module) -> nn.Module:
    """The module of a detector that returns the (declared) backbone levels."""
    if hasattr(model.backbone, "fpn"):  # R-CNN: BackboneFPN(body, fpn)
        return model.backbone.body
    if hasattr(model.backbone, "neck") and hasattr(model.backbone, "out_channels"):  # SSD: body + extra layers
        return model.backbone.backbone
    return model.backbone  # YOLO


def _record(body: nn.Module) -> tuple[list, Callable[[], None]]:
    seen: list = []
    handle = body.register_forward_hook(lambda m, args, out: seen.append((tuple(args[0].shape[-2:]), out)))
    return seen, handle.remove


def _check_levels(body: nn.Module, seen: list) -> None:
    assert seen, "the backbone did not run"
    for size, out in seen:
        assert list(out) == [s.name for s in body.specs]
        for spec in body.specs:
            assert tuple(out[spec.name].shape[1:]) == _ceil_shape(spec, size), (spec, size)


def _targets(size: tuple[int, int], offset: int) -> list[dict[str, torch.Tensor]]:
    H, W = size
    boxes = torch.tensor([[0.1 * W, 0.2 * H, 0.6 * W, 0.7 * H], [0.5 * W, 0.1 * H, 0.9 * W, 0.5 * H]])
    masks = torch.zeros(2, H, W, dtype=torch.uint8)
    for m, b in zip(masks, boxes.round().int().tolist()):
        m[b[1] : b[3], b[0] : b[2]] = 1
    return [{"boxes": boxes, "labels": torch.tensor([0, 1]) + offset, "masks": masks}] * 2


@pytest.mark.parametrize(("detector", "name"), [_param(v, d) for d in DETECTORS for v in VARIANTS])
def test_detector_trains_and_predicts_at_any_size(detector, name):
    torch.manual_seed(0)
    model = vision.create_model(detector, backbone=name, num_classes=3, **TINY[detector])
    body = _feature_body(model)
    assert body.specs and all(s.stride in (2, 4, 8, 16, 32) for s in body.specs)  # R-CNN bodies return C1 too
    offset = 1 if getattr(model, "background_class", False) else 0
    seen, stop = _record(body)
    for m in model.modules():  # BatchNorm keeps the statistics of the batch it saw (an untrained Inception v3 with
        if isinstance(m, torch.nn.modules.batchnorm._BatchNorm):  # init statistics explodes to ~1e10 in eval mode)
            m.momentum = None
    model.train()
    size = SIZES[1]
    targets = _targets(size, offset)
    if detector != "mask_rcnn":
        targets = [{k: v for k, v in t.items() if k != "masks"} for t in targets]
    losses = model.loss([torch.rand(3, *size), torch.rand(3, *size)], targets)  # two: BatchNorm on 1x1 maps
    loss = sum(losses.values())
    assert torch.isfinite(loss), losses
    loss.backward()
    grads = [p.grad for p in body.parameters() if p.requires_grad]
    assert grads and any(g is not None and bool(g.abs().sum() > 0) for g in grads), "no gradient reached the backbone"
    model.eval()
    for size in SIZES:
        (det,) = model.predict([torch.rand(3, *size)], score_threshold=0.0)
        n = len(det["boxes"])
        assert det["boxes"].shape == (n, 4) and det["scores"].shape == (n,) and n > 0
        assert float(det["boxes"][:, 2].max()) <= size[1] + 1e-3 and float(det["boxes"][:, 3].max()) <= size[0] + 1e-3
        if detector == "mask_rcnn":
            assert det["masks"].shape == (n, 1, *size)
    stop()
    _check_levels(body, seen)
