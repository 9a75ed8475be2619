"""SSD: torchvision's state dicts load and give torchvision's detections; any backbone trains and predicts."""

from __future__ import annotations

import pytest
import torch
from torchvision.models import detection as tvd

import vision
from vision.models.detection.common import label_offset
from vision.registry import MODELS


def _distinct_scores(name: str, model: torch.nn.Module) -> None:
    """Random weights whose scores are input-dependent and distinct, so the kept set has no ties to break."""
    with torch.no_grad():
        if name == "ssdlite320_mobilenet_v3_large":
            for m in model.modules():
                if isinstance(m, torch.nn.Conv2d):
                    torch.nn.init.kaiming_normal_(m.weight)
                if isinstance(m, torch.nn.BatchNorm2d):
                    m.running_mean.uniform_(-0.1, 0.1)
                    m.running_var.uniform_(0.5, 2.0)
                    m.bias.uniform_(-0.2, 0.2)
            std = 0.05
        else:
            std = 0.01
        for p in model.head.parameters():
            p.normal_(0, std)


@pytest.mark.parametrize("name", ["ssdlite320_mobilenet_v3_large", "ssd300_vgg16"])
def test_torchvision_state_dict_gives_torchvision_detections(name):
    torch.manual_seed(0)
    reference = getattr(tvd, name)(weights=None, weights_backbone=None, num_classes=5).eval()
    _distinct_scores(name, reference)
    ours = vision.create_model(name, num_classes=5).eval()
    ours.load_state_dict(reference.state_dict())  # strict: same keys and shapes
    images = [torch.rand(3, 240, 320), torch.rand(3, 300, 200)]
    with torch.no_grad():
        expected = reference(images)
    got = ours(images)
    for e, g in zip(expected, got):
        assert len(e["boxes"]) > 50
        assert torch.equal(e["labels"], g["labels"])
        assert torch.equal(e["scores"], g["scores"])
        assert torch.equal(e["boxes"], g["boxes"])
    assert [len(d["boxes"]) for d in ours.predict(torch.stack([images[0]] * 2), max_det=7)] == [7, 7]


@pytest.mark.parametrize("name", ["ssdlite320_mobilenet_v3_large", "ssd300_vgg16"])
def test_cards_describe_the_models(name):
    entry = MODELS.get(name)
    assert {"detection", "background_class"} <= entry.tags
    card = entry.card()
    assert card.url.startswith("https://download.pytorch.org/models/") and card.num_classes == 91
    with torch.device("meta"):
        model = vision.create_model(name, num_classes=card.num_classes)
    assert sum(p.numel() for p in model.parameters()) == card.num_params
    assert label_offset(model) == 1 and label_offset(name) == 1


def test_any_backbone_trains_and_predicts():
    torch.manual_seed(0)
    model = vision.create_model("ssd", backbone="resnet18", num_classes=4, size=160)
    assert model.backbone.out_channels == [256, 512, 512, 256, 256, 256]
    targets = [
        {"boxes": torch.tensor([[10.0, 20.0, 60.0, 90.0]]), "labels": torch.tensor([1])},
        {"boxes": torch.tensor([[5.0, 5.0, 40.0, 30.0], [50.0, 50.0, 50.0, 70.0]]), "labels": torch.tensor([3, 2])},
        {"boxes": torch.zeros(0, 4), "labels": torch.zeros(0, dtype=torch.int64)},
    ]
    opt = torch.optim.SGD(model.parameters(), lr=0.01)
    model.train()
    for _ in range(2):
        losses = model.loss(torch.rand(3, 3, 100, 120), targets)
        assert set(losses) == {"bbox_regression", "classification"}
        loss = sum(losses.values())
        assert torch.isfinite(loss)
        opt.zero_grad()
        loss.backward()
        opt.step()
    model.eval()
    dets = model([torch.rand(3, 100, 120), torch.rand(3, 64, 48)])
    for det, (H, W) in zip(dets, [(100, 120), (64, 48)]):
        assert det["boxes"].dtype == torch.float32 and det["labels"].dtype == torch.int64
        if len(det["labels"]):
            assert det["labels"].min() >= 1 and det["labels"].max() <= 3
            assert (det["boxes"][:, 2] <= W).all() and (det["boxes"][:, 3] <= H).all()
    assert model.rebuild_kwargs["backbone"] == "resnet18" and "backbone_weights" not in model.rebuild_kwargs


@pytest.mark.parametrize(
    ("labels", "match"),
    [
        ([2, 0], r"target 1: labels \[0\] are outside \[1, 4\): SSD labels are model labels with 0 the background"),
        ([4, 1], r"target 1: labels \[4\] are outside \[1, 4\)"),
        ([-1, 1], r"target 1: labels \[-1\] are outside"),
        ([1], "target 1: 2 boxes but 1 labels"),
    ],
    ids=["background", "too-large", "negative", "count-mismatch"],
)
def test_bad_labels_raise_naming_the_target(labels, match):
    model = vision.create_model("ssd", backbone="resnet18", num_classes=4, size=96)  # 3 classes + background
    targets = [
        {"boxes": torch.tensor([[10.0, 20.0, 60.0, 90.0]]), "labels": torch.tensor([3])},
        {"boxes": torch.tensor([[5.0, 5.0, 40.0, 30.0], [50.0, 50.0, 70.0, 70.0]]), "labels": torch.tensor(labels)},
    ]
    with pytest.raises(ValueError, match=match):
        model.loss(torch.rand(2, 3, 100, 120), targets)


def test_backbone_without_stride_16_and_32_maps_is_refused(monkeypatch):
    import dataclasses

    real = vision.create_backbone

    def odd_strides(name, **kwargs):  # a backbone whose stages are at strides 12, 24, 48, 96
        body = real(name, **kwargs)
        body.feature_info = [dataclasses.replace(s, stride=s.stride * 3) for s in body.feature_info]
        return body

    monkeypatch.setattr(vision, "create_backbone", odd_strides)
    with pytest.raises(
        ValueError, match=r"needs features at strides \[16, 32\]; the backbone has no level at stride 16"
    ):
        vision.create_model("ssd", backbone="resnet18", num_classes=4)
