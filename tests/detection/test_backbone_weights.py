"""``backbone_weights=<file>`` in every detector: the file's weights reach the detector's backbone, and the detector
normalises its input as the backbone expects (the backbone card's mean/std, else the architecture's own)."""

from __future__ import annotations

import pytest
import torch

import vision

DETECTORS = {
    "yolo": {"neck_channels": (16, 32, 64), "depth": 1},
    "ssd": {"size": 128, "extra_widths": (32, 32)},
    "faster_rcnn": {"min_size": 128, "max_size": 160, "fpn_channels": 16, "representation_size": 32},
    "mask_rcnn": {"min_size": 128, "max_size": 160, "fpn_channels": 16, "representation_size": 32, "mask_channels": 8},
}
#: backbone -> (key of its classifier checkpoint, key in its feature extractor, expected mean, expected std)
BACKBONES = {
    "resnet18": ("conv1.weight", "conv1.weight", (0.485, 0.456, 0.406), (0.229, 0.224, 0.225)),
    "timm/vit_tiny_patch16_224": (
        "model.patch_embed.proj.weight", "body.model.patch_embed.proj.weight", (0.5,) * 3, (0.5,) * 3,
    ),
}  # fmt: skip


@pytest.fixture(scope="module", params=list(BACKBONES))
def checkpoint(request, tmp_path_factory):
    """A classifier checkpoint of the backbone with recognisable (shifted) weights."""
    name = request.param
    torch.manual_seed(1)
    classifier = vision.create_model(name)
    state = {
        k: (v + 0.01 * torch.randn_like(v) if v.is_floating_point() else v) for k, v in classifier.state_dict().items()
    }
    path = tmp_path_factory.mktemp("ckpt") / f"{name.replace('/', '_')}.pth"
    torch.save(state, path)
    return name, path, state


def _feature_body(model):
    if hasattr(model.backbone, "fpn"):
        body = model.backbone.body
    elif hasattr(model.backbone, "neck") and hasattr(model.backbone, "out_channels"):
        body = model.backbone.backbone
    else:
        body = model.backbone
    return body.body if type(body).__name__ == "PyramidBackbone" else body


def _mean_std(model):
    if hasattr(model, "transform"):  # torchvision R-CNN / SSD
        return tuple(model.transform.image_mean), tuple(model.transform.image_std)
    return tuple(model.mean.flatten().tolist()), tuple(model.std.flatten().tolist())


@pytest.mark.parametrize("detector", list(DETECTORS))
def test_backbone_weights_file_reaches_every_detector(detector, checkpoint):
    name, path, state = checkpoint
    file_key, body_key, mean, std = BACKBONES[name]
    reference = vision.create_backbone(name, weights=path).state_dict()
    assert torch.equal(reference[body_key], state[file_key])
    model = vision.create_model(
        detector, backbone=name, backbone_weights=str(path), num_classes=3, **DETECTORS[detector]
    )
    body = _feature_body(model).state_dict()
    assert torch.equal(body[body_key], state[file_key])
    floats = [k for k in body if body[k].is_floating_point() and k in reference]
    assert len(floats) > 10 and all(torch.equal(body[k], reference[k]) for k in floats)
    got_mean, got_std = _mean_std(model)
    assert got_mean == pytest.approx(mean, abs=1e-6) and got_std == pytest.approx(std, abs=1e-6)


def test_a_file_of_another_network_is_refused(tmp_path):
    path = tmp_path / "other.pth"
    torch.save(vision.create_model("timm/convnext_atto").state_dict(), path)
    with pytest.raises(RuntimeError, match="does not fit"):
        vision.create_model("yolo", backbone="timm/vit_tiny_patch16_224", backbone_weights=str(path), num_classes=3)
