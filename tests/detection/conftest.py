"""Shared fixtures of the detection tests: real photos, tiny model settings, a tiny synthetic run."""

from __future__ import annotations

from typing import Any

import pytest
import torch

#: R-CNN keywords that keep CPU tests fast: small inputs, few proposals, narrow heads
TINY_RCNN: dict[str, Any] = {
    "min_size": 128,
    "max_size": 160,
    "fpn_channels": 32,
    "representation_size": 64,
    "mask_channels": 16,
    "rpn_pre_nms_top_n_train": 200,
    "rpn_post_nms_top_n_train": 64,
    "rpn_pre_nms_top_n_test": 100,
    "rpn_post_nms_top_n_test": 32,
    "rpn_batch_size_per_image": 64,
    "box_batch_size_per_image": 32,
    "box_detections_per_img": 20,
}


@pytest.fixture(scope="session")
def photos() -> list[torch.Tensor]:
    """Three real photos (scikit-image astronaut, coffee, chelsea): float ``[3, H, W]`` in [0, 1], different sizes."""
    skimage_data = pytest.importorskip("skimage.data")
    return [
        torch.from_numpy(image).permute(2, 0, 1).float().div(255.0).contiguous()
        for image in (skimage_data.astronaut(), skimage_data.coffee(), skimage_data.chelsea())
    ]
