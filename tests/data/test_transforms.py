"""CPU recipes: building by name, classification outputs, detection box/mask consistency (property tests)."""

from __future__ import annotations

import numpy as np
import pytest
import torch
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st

from vision.data import build_transform, list_transforms, masks_to_boxes
from vision.ops import unletterbox
from vision.registry import UnknownNameError

SETTINGS = settings(max_examples=25, deadline=None, database=None, suppress_health_check=[HealthCheck.too_slow])


def test_build_errors_list_valid_names_and_kwargs() -> None:
    assert {"classification_train", "classification_eval", "detection_train", "detection_eval"} <= set(
        list_transforms()
    )
    with pytest.raises(UnknownNameError, match=r"Did you mean detection_train.*Valid recipes: classification_eval"):
        build_transform("detection_trian")
    with pytest.raises(TypeError, match=r"unknown argument\(s\) hflp\. Did you mean hflip\?.*size=224"):
        build_transform("classification_train", hflp=0.2)


def test_classification_recipes() -> None:
    image = np.random.default_rng(0).integers(0, 256, (50, 70, 3), dtype=np.uint8)
    train = build_transform("classification_train", size=32, seed=0)
    x = train(image)
    assert x.dtype == torch.float32 and x.shape == (3, 32, 32)
    ev = build_transform("classification_eval", size=32, mean=(0, 0, 0), std=(1, 1, 1))
    y = ev(torch.from_numpy(image).permute(2, 0, 1))  # tensors [3, H, W] are accepted too
    assert y.shape == (3, 32, 32) and float(y.min()) >= 0.0 and float(y.max()) <= 1.0
    assert torch.equal(ev(image), ev(image))  # eval is deterministic
    assert "classification_train" in repr(train)


@pytest.mark.parametrize("name", ["classification_train", "classification_eval"])
def test_classification_recipes_antialias_a_shrink(name: str) -> None:
    """A one-pixel checkerboard shrunk 7x is mid-grey when filtered (as PIL/torchvision resize); a plain bilinear
    shrink samples every 7th pixel and returns a checkerboard again. Nearest keeps sampling, as asked."""
    board = ((np.indices((224, 224)).sum(0) % 2) * 255).astype(np.uint8)[..., None].repeat(3, 2)
    crop = {"scale": (1.0, 1.0), "ratio": (1.0, 1.0), "hflip": 0.0, "color_jitter": 0} if "train" in name else {}
    plain = {"size": 32, "mean": (0, 0, 0), "std": (1, 1, 1), **crop}
    shrunk = build_transform(name, **plain, **({"crop_pct": 1.0} if "eval" in name else {}))(board)
    assert shrunk.mean().item() == pytest.approx(0.5, abs=0.02) and shrunk.std().item() < 0.02
    sampled = build_transform(name, **plain, interpolation="nearest", **({"crop_pct": 1.0} if "eval" in name else {}))
    assert sampled(board).std().item() > 0.4


def _colour_scene(rng: np.random.Generator, H: int, W: int, n: int) -> tuple[np.ndarray, np.ndarray, np.ndarray]:
    """An image with ``n`` non-overlapping coloured rectangles/discs (colour 40 * (k + 1) in red), their masks and
    labels ``k``."""
    image = np.zeros((H, W, 3), np.uint8)
    masks = np.zeros((n, H, W), np.uint8)
    taken = np.zeros((H, W), bool)
    yy, xx = np.mgrid[:H, :W]
    for k in range(n):
        for _ in range(50):
            cx, cy = rng.uniform(0.15, 0.85) * W, rng.uniform(0.15, 0.85) * H
            r = rng.uniform(0.06, 0.14) * min(H, W)
            m = (xx - cx) ** 2 + (yy - cy) ** 2 <= r * r if k % 2 else (abs(xx - cx) <= r) & (abs(yy - cy) <= r * 0.7)
            if not (m & taken).any():
                break
        m &= ~taken
        taken |= m
        masks[k] = m
        image[m] = (40 * (k + 1), 255 - 30 * k, 128)
    return image, masks, np.arange(n, dtype=np.int64)


@SETTINGS
@given(seed=st.integers(0, 10_000), degrees=st.sampled_from([0.0, 30.0]), mask_mode=st.sampled_from(["map", "list"]))
def test_detection_train_masks_and_boxes_agree(seed: int, degrees: float, mask_mode: str) -> None:
    rng = np.random.default_rng(seed)
    H, W = int(rng.integers(48, 120)), int(rng.integers(48, 120))
    image, masks, labels = _colour_scene(rng, H, W, 4)
    target = {"boxes": masks_to_boxes(masks), "labels": labels, "masks": masks, "image_id": 7}
    t = build_transform("detection_train", size=96, degrees=degrees, shear=5.0, hsv_p=0.0, mask_mode=mask_mode,
                        seed=seed, min_size=1.0, interpolation="nearest")  # fmt: skip
    out_image, out = t(image, target)
    assert out_image.shape == (3, 96, 96) and out_image.dtype == torch.uint8 and out["image_id"] == 7
    m = out["masks"].numpy()
    assert m.dtype == np.uint8 and m.shape == (len(out["boxes"]), 96, 96)
    assert np.abs(masks_to_boxes(m) - out["boxes"].numpy()).max(initial=0) <= 1.0
    red = out_image[0].numpy()
    for k, label in enumerate(out["labels"].tolist()):
        inside = red[m[k] > 0]
        assert np.median(inside) == 40 * (label + 1)  # the mask covers the pixels of the same instance


@SETTINGS
@given(
    seed=st.integers(0, 10_000),
    s=st.floats(0.5, 1.5),
    shift=st.floats(-0.2, 0.2),
    hflip=st.booleans(),
    vflip=st.booleans(),
)
def test_detection_train_boxes_match_the_analytic_transform(
    seed: int, s: float, shift: float, hflip: bool, vflip: bool
) -> None:
    rng = np.random.default_rng(seed)
    H, W, S = int(rng.integers(40, 200)), int(rng.integers(40, 200)), 128
    xy = rng.uniform(0, 1, (5, 2)) * [W - 3, H - 3]
    wh = rng.uniform(0, 1, (5, 2)) * [W / 3, H / 3] + 2
    boxes = np.concatenate([xy, np.minimum(xy + wh, [W, H])], 1).astype(np.float32)
    image = rng.integers(0, 256, (H, W, 3), dtype=np.uint8)
    # a degenerate range fixes the parameter: translate (shift, shift) moves both axes by int(shift * S) pixels
    t = build_transform("detection_train", size=S, crop_p=0.0, scale=(s, s), translate=(shift, shift), hsv_p=0.0,
                        hflip=float(hflip), vflip=float(vflip), min_visibility=0.0, min_size=0.0)  # fmt: skip
    _, out = t(image, {"boxes": boxes, "labels": np.arange(5)})
    # analytic: letterbox (albumentations rounds the resized side) -> scale about the centre + shift -> flips
    lb = S / max(H, W)
    nw, nh = max(1, round(W * lb)), max(1, round(H * lb))
    x = boxes[:, [0, 2]] * (nw / W) + (S - nw) // 2
    y = boxes[:, [1, 3]] * (nh / H) + (S - nh) // 2
    x = s * (x - S / 2) + S / 2 + int(shift * S)
    y = s * (y - S / 2) + S / 2 + int(shift * S)
    if hflip:
        x = S - x[:, ::-1]
    if vflip:
        y = S - y[:, ::-1]
    expected = np.stack([x[:, 0], y[:, 0], x[:, 1], y[:, 1]], 1).clip(0, S)
    alive = (expected[:, 2] > expected[:, 0]) & (expected[:, 3] > expected[:, 1])
    assert out["labels"].tolist() == np.flatnonzero(alive).tolist()
    np.testing.assert_allclose(out["boxes"].numpy(), expected[alive], atol=1e-3)


def test_overlapping_masks_take_the_list_path() -> None:
    masks = np.zeros((2, 40, 40), np.uint8)
    masks[0, 5:25, 5:25] = 1
    masks[1, 15:35, 15:35] = 1  # overlaps mask 0: the id map cannot represent it
    image = np.zeros((40, 40, 3), np.uint8)
    t = build_transform("detection_eval", size=80)
    _, out = t(image, {"boxes": masks_to_boxes(masks), "labels": np.array([0, 1]), "masks": masks})
    assert out["masks"].shape == (2, 80, 80)
    assert int((out["masks"].sum(0) > 1).sum()) > 0  # overlap preserved
    assert out["boxes"].tolist() == [[10.0, 10.0, 50.0, 50.0], [30.0, 30.0, 70.0, 70.0]]
    t.mask_mode = "map"
    with pytest.raises(ValueError, match="non-overlapping"):
        t(image, {"boxes": masks_to_boxes(masks), "labels": np.array([0, 1]), "masks": masks})


def test_unknown_mask_mode_names_the_choices() -> None:
    from vision.data.transforms import DetectionTransform

    with pytest.raises(ValueError, match="mask_mode must be one of 'auto', 'map', 'list', got 'both'"):
        DetectionTransform("detection_eval", {}, None, mask_mode="both")


def test_detection_eval_letterbox_round_trip() -> None:
    rng = np.random.default_rng(0)
    image = rng.integers(0, 256, (45, 100, 3), dtype=np.uint8)
    boxes = np.array([[0, 0, 100, 45], [10.5, 3.25, 20, 40]], np.float32)
    img, out = build_transform("detection_eval", size=64, normalize=True, mean=(0.5,) * 3, std=(0.25,) * 3)(
        image, {"boxes": boxes, "labels": np.array([3, 4]), "iscrowd": np.array([0, 1], np.uint8)}
    )
    assert img.dtype == torch.float32 and img.shape == (3, 64, 64)
    assert out["iscrowd"].tolist() == [0, 1] and out["labels"].tolist() == [3, 4]
    np.testing.assert_allclose(unletterbox(out["boxes"], out["letterbox"]).numpy(), boxes, atol=1e-4)
    assert float(img[:, 0, 0].mean()) == pytest.approx((114 / 255 - 0.5) / 0.25, abs=1e-5)  # fill in the bars


def test_empty_targets_and_worker_reseeding() -> None:
    t = build_transform("detection_train", size=64, seed=0)
    image = np.zeros((30, 40, 3), np.uint8)
    img, out = t(image, {"boxes": np.zeros((0, 4), np.float32), "labels": np.zeros(0, np.int64)})
    assert img.shape == (3, 64, 64) and out["boxes"].shape == (0, 4) and out["labels"].shape == (0,)


class _Same(torch.utils.data.Dataset):
    def __init__(self, transform) -> None:
        self.transform = transform
        self.image = np.random.default_rng(0).integers(0, 256, (40, 40, 3), dtype=np.uint8)

    def __len__(self) -> int:
        return 4

    def __getitem__(self, i: int):
        return self.transform(self.image)


def test_workers_do_not_repeat_each_others_augmentations() -> None:
    t = build_transform("classification_train", size=24, seed=0)
    loader = torch.utils.data.DataLoader(_Same(t), batch_size=1, num_workers=2)
    first_of_each_worker = list(loader)[:2]  # worker 0 -> index 0, worker 1 -> index 1
    assert not torch.equal(first_of_each_worker[0], first_of_each_worker[1])


def test_detection_shrink_scales_boxes_and_masks_and_never_upscales() -> None:
    rng = np.random.default_rng(0)
    image = rng.integers(0, 256, (240, 320, 3), dtype=np.uint8)
    masks = np.zeros((2, 240, 320), np.uint8)
    masks[0, 40:120, 60:200] = 1
    masks[1, 150:230, 10:90] = 1
    target = {"boxes": masks_to_boxes(masks), "labels": np.array([1, 2]), "masks": masks}
    out, t = build_transform("detection_shrink", size=160)(image, target)
    assert out.dtype == torch.uint8 and tuple(out.shape) == (3, 120, 160)
    # boxes scale by exactly 1/2; the shrunk masks' tight boxes agree with them to a pixel
    np.testing.assert_allclose(t["boxes"].numpy(), target["boxes"] / 2, atol=1e-5)
    assert tuple(t["masks"].shape) == (2, 120, 160)
    np.testing.assert_allclose(masks_to_boxes(t["masks"].numpy()), t["boxes"].numpy(), atol=1.0)
    assert torch.equal(t["labels"], torch.tensor([1, 2]))
    # area interpolation: each output pixel is the mean of a 2x2 block (what OpenCV's INTER_AREA gives at 1/2)
    block = image[:2, :2].reshape(-1, 3).mean(0)
    np.testing.assert_allclose(out[:, 0, 0].numpy(), block, atol=1.0)
    small, t2 = build_transform("detection_shrink", size=640)(image, target)  # larger than the image: unchanged
    assert tuple(small.shape) == (3, 240, 320) and np.array_equal(small.permute(1, 2, 0).numpy(), image)
    np.testing.assert_array_equal(np.asarray(t2["boxes"]), target["boxes"])
