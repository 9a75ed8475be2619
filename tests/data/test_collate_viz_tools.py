"""Detection collate, padding, instance maps, aspect-ratio batching, drawing helpers and the grid tool."""

from __future__ import annotations

import importlib.util
from pathlib import Path

import cv2
import numpy as np
import pytest
import torch
from torch.utils.data import DataLoader, RandomSampler

from vision.data import AspectRatioBatchSampler, SyntheticShapes, detection_collate, instance_map, pad_targets
from vision.viz import denormalize, draw_boxes, make_grid, save_image

ROOT = Path(__file__).resolve().parents[2]


def _target(n: int, H: int = 8, W: int = 8) -> dict:
    masks = torch.zeros(n, H, W, dtype=torch.uint8)
    for k in range(n):
        masks[k, k, : k + 1] = 1
    return {"boxes": torch.arange(4 * n, dtype=torch.float32).view(n, 4), "labels": torch.arange(n) + 1,
            "masks": masks, "iscrowd": torch.zeros(n, dtype=torch.uint8), "image_id": n}  # fmt: skip


def test_detection_collate_stacks_same_sizes_and_lists_others() -> None:
    a = (torch.zeros(3, 4, 5, dtype=torch.uint8), _target(2))
    b = (torch.ones(3, 4, 5, dtype=torch.uint8), _target(0))
    images, targets = detection_collate([a, b])
    assert images.shape == (2, 3, 4, 5) and [t["image_id"] for t in targets] == [2, 0]
    images, _ = detection_collate([a, (torch.zeros(3, 6, 5, dtype=torch.uint8), _target(1))])
    assert isinstance(images, list) and len(images) == 2


def test_pad_targets_and_instance_map() -> None:
    targets = [_target(2), _target(0), _target(3)]
    padded = pad_targets(targets)
    assert padded["boxes"].shape == (3, 3, 4) and padded["valid"].tolist() == [[1, 1, 0], [0, 0, 0], [1, 1, 1]]
    assert torch.equal(padded["boxes"][2], targets[2]["boxes"]) and padded["labels"][0].tolist() == [1, 2, 0]
    assert padded["iscrowd"].shape == (3, 3)
    assert pad_targets(targets, max_boxes=2)["valid"].tolist() == [[1, 1], [0, 0], [1, 1]]
    ids = instance_map(targets)
    assert ids.shape == (3, 8, 8) and ids.dtype == torch.uint8
    for b, t in enumerate(targets):
        for k in range(len(t["boxes"])):
            assert torch.equal(ids[b] == k + 1, t["masks"][k].bool())
    overlap = {"masks": torch.ones(2, 4, 4, dtype=torch.uint8), "boxes": torch.zeros(2, 4)}
    assert int(instance_map([overlap]).unique().item()) == 2  # the highest index wins shared pixels


def test_aspect_ratio_batch_sampler() -> None:
    ratios = [1.5, 0.5, 1.2, 0.7, 2.0, 0.9, 1.1]  # landscape: 0, 2, 4, 6 ; portrait: 1, 3, 5
    sampler = AspectRatioBatchSampler(range(7), ratios, batch_size=2)
    batches = list(sampler)
    assert batches == [[0, 2], [1, 3], [4, 6], [5]] and len(sampler) == 4
    assert len(AspectRatioBatchSampler(range(7), ratios, batch_size=2, drop_last=True)) == 3
    shuffled = AspectRatioBatchSampler(RandomSampler(range(7), generator=torch.Generator().manual_seed(0)), ratios,
                                       batch_size=3)  # fmt: skip
    seen = [i for batch in shuffled for i in batch]
    assert sorted(seen) == list(range(7))
    for batch in shuffled:
        assert len({ratios[i] >= 1.0 for i in batch}) == 1
    ds = SyntheticShapes(6, size=(32, 48))
    loader = DataLoader(ds, batch_sampler=AspectRatioBatchSampler(range(6), ds.aspect_ratios(), batch_size=4),
                        collate_fn=detection_collate)  # fmt: skip
    assert [x.shape[0] for x, _ in loader] == [4, 2]


def test_draw_boxes_and_grid(tmp_path: Path) -> None:
    image = torch.zeros(3, 40, 60, dtype=torch.uint8)
    masks = torch.zeros(2, 40, 60, dtype=torch.uint8)
    masks[0, 5:15, 5:25] = 1
    drawn = draw_boxes(image, torch.tensor([[5.0, 5.0, 25.0, 15.0], [30, 20, 50, 35]]), torch.tensor([0, 1]),
                       scores=[0.9, 0.5], masks=masks, class_names=["a", "b"])  # fmt: skip
    assert drawn.dtype == torch.uint8 and drawn.shape == (3, 40, 60) and int(image.sum()) == 0
    assert int(drawn[:, 10, 15].sum()) > 0 and int(drawn[:, 30, 10].sum()) == 0
    grid = make_grid([drawn, image[:, :20]], nrow=2, padding=2)
    assert grid.shape == (3, 44, 126)
    path = save_image(grid, tmp_path / "g.png")
    assert cv2.imread(str(path)).shape == (44, 126, 3)
    x = torch.rand(3, 4, 4)
    assert torch.equal(denormalize(x), (x * 255).round().to(torch.uint8))


@pytest.mark.parametrize("pipeline", ["gpu", "cpu"], ids=["batched", "albumentations"])  # "gpu" would mark it
def test_augment_grid_tool_writes_a_png(tmp_path: Path, pipeline: str) -> None:
    spec = importlib.util.spec_from_file_location("augment_grid", ROOT / "tools" / "augment_grid.py")
    tool = importlib.util.module_from_spec(spec)
    spec.loader.exec_module(tool)
    out = tmp_path / "grid.png"
    path = tool.main(["data=synthetic", f"out={out}", "n=4", "size=96", f"pipeline={pipeline}", "device=cpu"])
    image = cv2.imread(str(path))
    assert path == out and image is not None and image.shape[0] > 96 and image.std() > 0
    with pytest.raises(SystemExit, match="Did you mean 'size'"):
        tool.main(["siz=3"])
    assert np.array_equal(cv2.imread(str(path)), image)
