"""Every backbone family as the body of Faster R-CNN and Mask R-CNN: two training steps and a prediction on the CPU.

The FPN, anchors and RoI pools come from the backbone's declared features; nothing lists channels by hand.
"""

from __future__ import annotations

import pytest
import torch

import vision
from vision.data import SyntheticShapes

from .conftest import TINY_RCNN

BACKBONES = ["alexnet", "vgg16", "resnet50", "inception_v3", "efficientnet_b0", "timm/mobilenetv3_small_100"]
SLOW = {"vgg16", "inception_v3"}  # big torchvision constructors / slow CPU convolutions


@pytest.fixture(scope="module")
def batch():
    ds = SyntheticShapes(2, size=128, seed=5, masks=True)
    images = [ds[i][0].float() / 255 for i in range(2)]
    targets = [{k: v for k, v in ds[i][1].items() if k in ("boxes", "labels", "masks")} for i in range(2)]
    for t in targets:
        t["labels"] = t["labels"] + 1  # model labels: 0 is the background
    return images, targets


@pytest.mark.parametrize("model_name", ["faster_rcnn", "mask_rcnn"])
@pytest.mark.parametrize("backbone", BACKBONES)
def test_trains_two_steps_and_predicts(backbone, model_name, batch, request):
    if backbone in SLOW:
        request.applymarker(pytest.mark.slow)
    torch.manual_seed(0)
    model = vision.create_model(model_name, backbone=backbone, num_classes=4, **TINY_RCNN)
    body, fpn = model.backbone.body, model.backbone.fpn
    assert {s.name for s in fpn.in_specs} <= {s.name for s in body.specs}
    assert len(model.rpn.anchor_generator.sizes) == len(fpn.specs)
    assert model.roi_heads.box_roi_pool.featmap_names == [s.name for s in fpn.main_specs]
    images, targets = batch
    if model_name == "faster_rcnn":
        targets = [{k: v for k, v in t.items() if k != "masks"} for t in targets]
    model.train()
    named = [(n, p) for n, p in model.named_parameters() if p.requires_grad]
    params = [p for _, p in named]
    opt = torch.optim.SGD(params, lr=0.005, momentum=0.9)
    before = [p.detach().clone() for p in params]
    for _ in range(2):
        losses = model.loss(images, targets)
        expected = {"loss_classifier", "loss_box_reg", "loss_objectness", "loss_rpn_box_reg"}
        assert set(losses) == expected | ({"loss_mask"} if model_name == "mask_rcnn" else set())
        loss = sum(losses.values())
        assert torch.isfinite(loss)
        opt.zero_grad()
        loss.backward()
        opt.step()
    # every part learned (nothing is frozen without weights): at least one parameter of each changed
    changed = {n for (n, p), b in zip(named, before) if not torch.equal(b, p)}
    parts = ["backbone.body.", "backbone.fpn.", "rpn.", "roi_heads.box_head.", "roi_heads.box_predictor."]
    if model_name == "mask_rcnn":
        parts += ["roi_heads.mask_head.", "roi_heads.mask_predictor."]
    assert len(named) == len(list(model.parameters()))
    for part in parts:
        assert any(n.startswith(part) for n in changed), f"{backbone}: no parameter of {part} changed"
    model.eval()
    dets = model.predict(torch.stack(images), score_threshold=0.0)
    assert len(dets) == 2
    for img, det in zip(images, dets):
        n = len(det["boxes"])
        assert det["boxes"].shape == (n, 4) and det["scores"].shape == (n,) and det["labels"].dtype == torch.int64
        assert n <= TINY_RCNN["box_detections_per_img"]
        if n:
            assert int(det["labels"].min()) >= 1 and int(det["labels"].max()) <= 3
            boxes, (H, W) = det["boxes"], img.shape[-2:]
            assert float(boxes[:, :2].min()) >= 0.0
            assert float(boxes[:, 2].max()) <= W + 1e-3 and float(boxes[:, 3].max()) <= H + 1e-3
            assert bool((boxes[:, 2:] >= boxes[:, :2]).all())
        if model_name == "mask_rcnn":
            assert det["masks"].shape == (n, 1, *img.shape[-2:])
