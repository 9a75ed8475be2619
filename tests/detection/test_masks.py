"""The batched mask paste (vision.ops.masks.paste_masks) against torchvision's per-mask paste_masks_in_image."""

from __future__ import annotations

import pytest
import torch
from torchvision.models.detection.roi_heads import paste_masks_in_image

from vision.ops.masks import paste_masks


def _boxes(n: int, H: int, W: int, g: torch.Generator) -> torch.Tensor:
    """Random boxes inside the image (as detectors return them, clipped), plus edge cases."""
    x0 = torch.rand(n, generator=g) * W
    y0 = torch.rand(n, generator=g) * H
    x1 = x0 + torch.rand(n, generator=g) * (W - x0)
    y1 = y0 + torch.rand(n, generator=g) * (H - y0)
    boxes = torch.stack([x0, y0, x1, y1], 1)
    edge = torch.tensor(
        [[0.0, 0.0, W, H], [3.0, 3.0, 3.2, 3.3], [W - 0.5, H - 0.5, W, H], [0.0, 5.0, 1.0, H], [10.0, 10.0, 10.0, 10.0]]
    )
    return torch.cat([boxes, edge])


@pytest.mark.parametrize(("H", "W", "M"), [(240, 320, 28), (97, 61, 28), (50, 80, 14)])
def test_paste_matches_torchvision(H, W, M):
    g = torch.Generator().manual_seed(H * W)
    boxes = _boxes(60, H, W, g)
    masks = torch.rand(len(boxes), 1, M, M, generator=g)
    expected = paste_masks_in_image(masks, boxes, (H, W))
    ours = paste_masks(masks, boxes, (H, W))
    assert ours.shape == expected.shape == (len(boxes), 1, H, W) and ours.dtype == torch.float32
    torch.testing.assert_close(ours, expected, rtol=0, atol=2e-5)
    # [N, M, M] input, binary output
    binary = paste_masks(masks[:, 0], boxes, (H, W), threshold=0.5)
    assert binary.dtype == torch.bool
    assert ((binary != (expected > 0.5)) & ((expected - 0.5).abs() > 1e-4)).sum() == 0


def test_paste_empty_and_padding():
    assert paste_masks(torch.zeros(0, 28, 28), torch.zeros(0, 4), (10, 12)).shape == (0, 1, 10, 12)
    masks = torch.rand(3, 1, 28, 28, generator=torch.Generator().manual_seed(0))
    boxes = torch.tensor([[5.0, 6.0, 40.0, 30.0], [0.0, 0.0, 63.0, 47.0], [20.0, 10.0, 22.0, 40.0]])
    for padding in (0, 2):
        expected = paste_masks_in_image(masks, boxes, (48, 64), padding=padding)
        torch.testing.assert_close(paste_masks(masks, boxes, (48, 64), padding=padding), expected, rtol=0, atol=2e-5)
    with pytest.raises(ValueError, match="boxes must be"):
        paste_masks(masks, boxes[:2], (48, 64))


def test_paste_is_float32_under_autocast():
    """A trainer evaluates inside bf16 autocast: the paste still computes (and returns) float32."""
    g = torch.Generator().manual_seed(1)
    boxes = _boxes(20, 120, 160, g)
    masks = torch.rand(len(boxes), 1, 28, 28, generator=g)
    expected = paste_masks_in_image(masks, boxes, (120, 160))
    with torch.autocast("cpu", dtype=torch.bfloat16):
        ours = paste_masks(masks, boxes, (120, 160))
    assert ours.dtype == torch.float32
    torch.testing.assert_close(ours, expected, rtol=0, atol=2e-5)


def test_benchmark_keeps_every_mask():
    """benchmarks/rcnn.py keeps the masks of every result (binarised as COCO's segm reads them) and refuses a mix."""
    import importlib.util
    from pathlib import Path

    path = Path(__file__).resolve().parents[2] / "benchmarks" / "rcnn.py"
    spec = importlib.util.spec_from_file_location("_bench_rcnn", path)
    bench = importlib.util.module_from_spec(spec)
    spec.loader.exec_module(bench)
    big = torch.rand(100, 1, 800, 700)  # 5.6e7 elements: above the old silent cut-off
    out = bench.predictions(lambda chunk: [{"scores": torch.ones(100), "masks": big} for _ in chunk],
                            [torch.zeros(3, 8, 8)] * 3, 2, torch.device("cpu"))  # fmt: skip
    assert len(out) == 3 and all(torch.equal(d["masks"], big > 0.5) for d in out)
    assert bench.has_masks(out) and not bench.has_masks([{"scores": torch.ones(1)}])
    with pytest.raises(RuntimeError, match="1 of 3 results have no masks"):
        bench.has_masks([*out[:2], {"scores": torch.ones(1)}])
