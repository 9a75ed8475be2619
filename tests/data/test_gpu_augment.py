"""GpuAugment on CPU tensors (same code path as on the GPU): geometry, masks, boxes, colour, batching, compile."""

from __future__ import annotations

from collections import Counter

import numpy as np
import pytest
import torch
import torch.nn.functional as F
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st
from torch.utils._python_dispatch import TorchDispatchMode

from vision.data import GpuAugment, SyntheticShapes, detection_collate, instance_map, masks_to_boxes, pad_targets
from vision.viz import denormalize

SETTINGS = settings(max_examples=15, deadline=None, database=None, suppress_health_check=[HealthCheck.too_slow])
NO_COLOUR = {"hue": 0.0, "saturation": 0.0, "value": 0.0}


def _scene(seed: int, B: int, H: int, W: int, n: int = 4) -> tuple[torch.Tensor, list[dict]]:
    """``B`` black images with ``n`` non-overlapping rectangles/discs; instance ``k`` of image ``b`` is painted with red
    ``20 * (k + 1)`` and green ``10 * b + 5``, so every pixel says which instance of which image it shows."""
    rng = np.random.default_rng(seed)
    images = np.zeros((B, 3, H, W), np.uint8)
    targets = []
    yy, xx = np.mgrid[:H, :W]
    for b in range(B):
        masks = np.zeros((n, H, W), np.uint8)
        taken = np.zeros((H, W), bool)
        for k in range(n):
            for _ in range(50):
                cx, cy = rng.uniform(0.1, 0.9) * W, rng.uniform(0.1, 0.9) * H
                r = rng.uniform(0.07, 0.15) * min(H, W)
                if k % 2:
                    m = (xx + 0.5 - cx) ** 2 + (yy + 0.5 - cy) ** 2 <= r * r
                else:
                    m = (abs(xx + 0.5 - cx) <= r) & (abs(yy + 0.5 - cy) <= 0.6 * r)
                if not (m & taken).any():
                    break
            m &= ~taken
            taken |= m
            masks[k] = m
            images[b, 0][m] = 20 * (k + 1)
            images[b, 1][m] = 10 * b + 5
        targets.append({"boxes": torch.from_numpy(masks_to_boxes(masks)), "labels": torch.arange(n) + 100 * b,
                        "masks": torch.from_numpy(masks), "image_id": b})  # fmt: skip
    return torch.from_numpy(images), targets


@SETTINGS
@given(seed=st.integers(0, 10_000), degrees=st.sampled_from([0.0, 35.0]), mosaic=st.sampled_from([0.0, 0.7]))
def test_masks_boxes_and_pixels_agree(seed: int, degrees: float, mosaic: float) -> None:
    images, targets = _scene(seed, 4, 48, 64)
    # zoom >= 0.8 keeps instances several pixels wide, so bilinear (image) and nearest (mask) sampling agree inside
    aug = GpuAugment(size=(56, 72), scale=(0.8, 1.5), degrees=degrees, shear=5.0, mosaic=mosaic, vflip=0.3,
                     min_size=1.0, **NO_COLOUR)  # fmt: skip
    x, out = aug(images, targets, generator=torch.Generator().manual_seed(seed))
    assert x.shape == (4, 3, 56, 72) and x.dtype == torch.float32
    pixels = denormalize(x)
    checked = 0
    for b, t in enumerate(out):
        assert t["image_id"] == b and t["masks"].dtype == torch.uint8 and t["masks"].shape[1:] == (56, 72)
        boxes_of_masks = masks_to_boxes(t["masks"].numpy())
        assert np.abs(boxes_of_masks - t["boxes"].numpy()).max(initial=0) <= 1.0
        for k, label in enumerate(t["labels"].tolist()):
            src_image, src_instance = divmod(label, 100)
            mask = t["masks"][k].float()[None, None]
            assert mask.sum() > 0
            interior = -F.max_pool2d(-mask, 3, stride=1, padding=1)[0, 0] > 0  # away from the bilinear blur
            if not interior.any():
                continue
            inside = pixels[b][:, interior]  # [3, n_pixels]: output pixels inside the instance's mask
            assert float(inside[0].float().median()) == pytest.approx(20 * (src_instance + 1), abs=1)
            assert float(inside[1].float().median()) == pytest.approx(10 * src_image + 5, abs=1)
            checked += 1
    assert checked > 0


@SETTINGS
@given(
    seed=st.integers(0, 10_000),
    H=st.integers(20, 90),
    W=st.integers(20, 90),
    scale=st.floats(0.5, 1.5),
    shift=st.floats(-0.2, 0.2),
)
def test_boxes_without_masks_match_the_analytic_transform(
    seed: int, H: int, W: int, scale: float, shift: float
) -> None:
    rng = np.random.default_rng(seed)
    B, h, w = 3, 64, 80
    xy = rng.uniform(0, 1, (B, 5, 2)) * [W - 2, H - 2]
    boxes = np.concatenate([xy, np.minimum(xy + rng.uniform(1, 12, (B, 5, 2)), [W, H])], -1).astype(np.float32)
    images = torch.zeros(B, 3, H, W, dtype=torch.uint8)
    targets = [{"boxes": torch.from_numpy(boxes[b]), "labels": torch.arange(5)} for b in range(B)]
    aug = GpuAugment(size=(h, w), scale=(scale, scale), translate=(shift, shift), hflip=0.5, vflip=0.5,
                     min_size=0.0, min_visibility=0.0)  # fmt: skip
    params = aug.sample_params(B, generator=torch.Generator().manual_seed(seed))
    _, out = aug(images, targets, params=params)
    lb = min(w / W, h / H)
    for b in range(B):
        x = boxes[b][:, [0, 2]] * lb + (w - lb * W) / 2  # letterbox (continuous scale, centred)
        y = boxes[b][:, [1, 3]] * lb + (h - lb * H) / 2
        x = scale * (x - w / 2) + w / 2 + shift * w  # zoom about the centre, then shift
        y = scale * (y - h / 2) + h / 2 + shift * h
        if params.flip_h[b]:
            x = w - x[:, ::-1]
        if params.flip_v[b]:
            y = h - y[:, ::-1]
        expected = np.stack([x[:, 0], y[:, 0], x[:, 1], y[:, 1]], 1).clip(0, [w, h, w, h])
        alive = (expected[:, 2] > expected[:, 0]) & (expected[:, 3] > expected[:, 1])
        assert out[b]["labels"].tolist() == np.flatnonzero(alive).tolist()
        np.testing.assert_allclose(out[b]["boxes"].numpy(), expected[alive], atol=1e-3)


def test_rotated_hull_contains_the_tight_mask_box() -> None:
    images, targets = _scene(1, 4, 60, 60)
    aug = GpuAugment(size=64, degrees=40.0, min_visibility=0.0, min_size=0.0)
    params = aug.sample_params(4, generator=torch.Generator().manual_seed(3))
    _, with_masks = aug(images, targets, params=params)
    _, hulls = aug(images, [{k: v for k, v in t.items() if k != "masks"} for t in targets], params=params)
    for tight, hull in zip(with_masks, hulls):
        by_label = dict(zip(hull["labels"].tolist(), hull["boxes"]))
        for label, box in zip(tight["labels"].tolist(), tight["boxes"]):
            h = by_label[label]
            assert bool((box[:2] >= h[:2] - 1).all() and (box[2:] <= h[2:] + 1).all())
        assert sum(float((b[2] - b[0]) * (b[3] - b[1])) for b in tight["boxes"]) < sum(
            float((b[2] - b[0]) * (b[3] - b[1])) for b in hull["boxes"]
        )


def test_padded_interface_matches_the_list_interface() -> None:
    images, targets = _scene(2, 3, 40, 40)
    aug = GpuAugment(size=48, degrees=20.0, mosaic=0.5)
    params = aug.sample_params(3, generator=torch.Generator().manual_seed(0))
    x1, listed = aug(images, targets, params=params)
    padded = pad_targets(targets)
    padded["instance_map"] = instance_map(targets)
    x2, out = aug(images, padded, params=params)
    assert torch.equal(x1, x2)
    assert out["boxes"].shape == (3, 4 * 4, 4) and out["valid"].shape == (3, 16)
    assert out["instance_map"].shape == (3, 48, 48) and out["instance_map"].dtype == torch.int32
    _, relisted = aug(images, padded, params=params, output="list")
    _, repadded = aug(images, targets, params=params, output="padded")
    assert torch.equal(repadded["boxes"], out["boxes"]) and torch.equal(repadded["instance_map"], out["instance_map"])
    for b in range(3):
        assert torch.equal(relisted[b]["boxes"], listed[b]["boxes"]) and torch.equal(
            relisted[b]["masks"], listed[b]["masks"]
        )
        assert torch.equal(out["boxes"][b][out["valid"][b]], listed[b]["boxes"])
        assert torch.equal(out["labels"][b][out["valid"][b]], listed[b]["labels"])
        ids = torch.nonzero(out["valid"][b]).flatten() + 1
        assert torch.equal((out["instance_map"][b][None] == ids.view(-1, 1, 1)).to(torch.uint8), listed[b]["masks"])


def test_colour_normalisation_and_fill() -> None:
    images = torch.full((2, 3, 10, 20), 200, dtype=torch.uint8)
    empty = [{"boxes": torch.zeros(0, 4), "labels": torch.zeros(0, dtype=torch.long)}] * 2
    identity = {"size": 20, "hflip": 0.0, "scale": (1.0, 1.0), "translate": 0.0}
    mean, std = (0.485, 0.456, 0.406), (0.229, 0.224, 0.225)
    x, _ = GpuAugment(**identity, mean=mean, std=std, **NO_COLOUR)(images, empty)
    m, s = torch.tensor(mean).view(3, 1), torch.tensor(std).view(3, 1)
    assert torch.allclose(x[:, :, 10, :], ((200 / 255 - m) / s).expand(2, 3, 20), atol=1e-5)  # image rows
    assert torch.allclose(x[:, :, 0, :], ((114 / 255 - m) / s).expand(2, 3, 20), atol=1e-5)  # letterbox bar
    grey, _ = GpuAugment(**identity, hue=0.5, saturation=0.9, value=0.0)(images, empty)
    assert torch.allclose(grey[:, :, 10], torch.full_like(grey[:, :, 10], 200 / 255), atol=1e-4)  # grey stays grey
    colour = images.clone()
    colour[:, 0] = 250
    colour[:, 2] = 30
    jittered, _ = GpuAugment(**identity, hue=0.2, saturation=0.9, value=0.5)(colour, empty)
    assert float(jittered.min()) >= 0.0 and float(jittered.max()) <= 1.0
    assert not torch.allclose(jittered[0], jittered[1])  # per-sample parameters


def test_generator_determinism_and_list_of_sizes() -> None:
    ds = SyntheticShapes(4, size=(48, 64), seed=0)
    samples = [ds[i] for i in range(4)]
    images, targets = detection_collate(samples)
    aug = GpuAugment(size=64, degrees=10.0, mosaic=0.5)
    a = aug(images, targets, generator=torch.Generator().manual_seed(5))
    b = aug(images, targets, generator=torch.Generator().manual_seed(5))
    c = aug(images, targets, generator=torch.Generator().manual_seed(6))
    assert torch.equal(a[0], b[0]) and all(torch.equal(p["boxes"], q["boxes"]) for p, q in zip(a[1], b[1]))
    assert not torch.equal(a[0], c[0])
    other = SyntheticShapes(2, size=(30, 40), seed=1)
    mixed = [samples[0], other[0], samples[1], other[1]]
    x, out = aug([s[0] for s in mixed], [s[1] for s in mixed], generator=torch.Generator().manual_seed(0))
    assert x.shape == (4, 3, 64, 64) and len(out) == 4
    for t in out:
        assert np.abs(masks_to_boxes(t["masks"].numpy()) - t["boxes"].numpy()).max(initial=0) <= 1.0


class _CountOps(TorchDispatchMode):
    def __init__(self) -> None:
        super().__init__()
        self.ops: Counter[str] = Counter()

    def __torch_dispatch__(self, func, types, args=(), kwargs=None):
        self.ops[str(func)] += 1
        return func(*args, **(kwargs or {}))


@pytest.mark.parametrize("masks", [False, True])
def test_the_number_of_ops_does_not_grow_with_the_batch(masks: bool) -> None:
    aug = GpuAugment(size=32, degrees=10.0, mosaic=0.5)
    counts = []
    for B in (2, 7):
        images, targets = _scene(0, B, 24, 24, n=3)
        padded = pad_targets(targets)
        if masks:
            padded["instance_map"] = instance_map(targets)
        params = aug.sample_params(B, generator=torch.Generator().manual_seed(0))
        with _CountOps() as mode:
            aug.apply(images, padded, params)
        counts.append(mode.ops)
    assert counts[0] == counts[1]
    assert counts[0]["aten.grid_sampler_2d.default"] == (2 if masks else 1)
    views = ("view", "select", "slice", "unsqueeze", "expand", "permute", "transpose", "unbind", "alias", "detach",
             "squeeze", "_unsafe_view", "reshape", "lift_fresh")  # fmt: skip
    launches = sum(n for op, n in counts[0].items() if op.split(".")[1] not in views)
    assert launches < 300, launches


@pytest.mark.slow
def test_apply_under_torch_compile() -> None:
    images, targets = _scene(4, 4, 32, 32, n=3)
    aug = GpuAugment(size=40, degrees=15.0, mosaic=0.5)
    padded = pad_targets(targets)
    padded["instance_map"] = instance_map(targets)
    params = aug.sample_params(4, generator=torch.Generator().manual_seed(1))
    x_ref, ref = aug.apply(images, padded, params)
    compiled = torch.compile(aug.apply, fullgraph=True, dynamic=False)
    x, out = compiled(images, padded, params)
    assert torch.allclose(x, x_ref, atol=1e-4)
    assert torch.equal(out["valid"], ref["valid"])
    assert torch.allclose(out["boxes"], ref["boxes"])
    assert torch.equal(out["instance_map"], ref["instance_map"])
