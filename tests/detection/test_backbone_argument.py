"""The ``backbone=`` argument of every detector: a weight tag in the name builds the same model as
``backbone_weights=tag`` (frozen BatchNorm for R-CNN, same weights, normalisation and rebuild arguments), a built
backbone module gives the same network as its name, and YOLO's level checks name the argument at fault."""

from __future__ import annotations

import dataclasses
import hashlib

import pytest
import torch
from torchvision.ops.misc import FrozenBatchNorm2d

import vision
from vision.registry import BACKBONES

SMALL = {
    "yolo": {"neck_channels": (16, 32, 64), "depth": 1, "imgsz": 64},
    "ssd": {"size": 96, "extra_widths": (32, 32)},
    "faster_rcnn": {"min_size": 96, "max_size": 128, "fpn_channels": 16, "representation_size": 32},
}
NAME, TAG, MEAN, STD = "tagtest_resnet18", "test_in1k", (0.3, 0.4, 0.5), (0.2, 0.25, 0.3)


@pytest.fixture(scope="module")
def checkpoint(tmp_path_factory):
    """A resnet18 classifier checkpoint with recognisable weights."""
    torch.manual_seed(1)
    state = vision.create_model("resnet18").state_dict()
    state = {k: v + 0.01 if v.is_floating_point() else v for k, v in state.items()}
    path = tmp_path_factory.mktemp("ckpt") / "resnet18-tagtest.pth"
    torch.save(state, path)
    return path


@pytest.fixture
def tagged_backbone(checkpoint, file_server, vision_home):
    """``tagtest_resnet18`` in ``BACKBONES`` with one card, ``test_in1k``, served from loopback."""
    (file_server.root / checkpoint.name).write_bytes(checkpoint.read_bytes())
    base = BACKBONES.get("resnet18")
    card = base.cards["tv_in1k"].replace(
        url=file_server.url(checkpoint.name),
        sha256=hashlib.sha256(checkpoint.read_bytes()).hexdigest(),
        file_size=None,
        preprocess=dataclasses.replace(base.cards["tv_in1k"].preprocess, mean=MEAN, std=STD),
    )
    BACKBONES.add(dataclasses.replace(base, name=NAME, cards={TAG: card}, default_tag=TAG))
    yield NAME
    BACKBONES.unregister(NAME)


def _same_tensors(a: torch.nn.Module, b: torch.nn.Module) -> None:
    sa, sb = a.state_dict(), b.state_dict()
    assert list(sa) == list(sb)
    assert all(torch.equal(sa[k], sb[k]) for k in sa)


@pytest.mark.parametrize("detector", list(SMALL))
def test_weight_tag_in_the_name_is_backbone_weights(detector, tagged_backbone):
    models = []
    for spelling in ({"backbone": f"{NAME}.{TAG}"}, {"backbone": NAME, "backbone_weights": TAG}):
        torch.manual_seed(0)
        models.append(vision.create_model(detector, num_classes=3, **spelling, **SMALL[detector]))
    tagged, keyword = models
    _same_tensors(tagged, keyword)
    assert type(tagged) is type(keyword) and tagged.name == keyword.name
    assert tagged.rebuild_kwargs == keyword.rebuild_kwargs and tagged.rebuild_kwargs["backbone"] == NAME
    if detector == "faster_rcnn":  # torchvision's rule under backbone weights: frozen BatchNorm, either spelling
        assert tuple(tagged.transform.image_mean) == pytest.approx(MEAN)
        norms = [type(m) for m in tagged.backbone.body.modules() if "BatchNorm" in type(m).__name__]
        assert norms and all(t is FrozenBatchNorm2d for t in norms)
    with pytest.raises(ValueError, match=rf"{NAME}.{TAG} already selects weights"):
        vision.create_model(detector, backbone=f"{NAME}.{TAG}", backbone_weights="other.pth", **SMALL[detector])


@pytest.mark.parametrize("detector", list(SMALL))
def test_built_backbone_gives_the_network_of_its_name(detector):
    torch.manual_seed(0)
    by_name = vision.create_model(detector, backbone="resnet18", num_classes=3, **SMALL[detector]).eval()
    module = vision.create_backbone("resnet18")  # every level, strides 4..32: the head picks its own
    built = vision.create_model(detector, backbone=module, num_classes=3, **SMALL[detector]).eval()
    built.load_state_dict(by_name.state_dict())  # strict: the same parameters under the same keys
    images = [torch.rand(3, 80, 96, generator=torch.Generator().manual_seed(2))]
    with torch.no_grad():
        a, b = by_name.predict(images, score_threshold=0.0), built.predict(images, score_threshold=0.0)
    assert len(a[0]["boxes"]) > 0
    for key in ("boxes", "scores", "labels"):
        assert torch.equal(a[0][key], b[0][key])


@pytest.mark.parametrize("detector", list(SMALL))
def test_built_backbone_errors_name_the_class_and_the_argument(detector):
    module = vision.create_backbone("resnet18")
    with pytest.raises(
        ValueError, match=r"backbone_weights apply to a backbone name; the built FeatureExtractor"
    ) as info:
        vision.create_model(detector, backbone=module, backbone_weights="tv_in1k", **SMALL[detector])
    assert "\n" not in str(info.value)
    with pytest.raises(TypeError, match=r"declares no feature levels") as info:
        vision.create_model(detector, backbone=torch.nn.Conv2d(3, 8, 3), **SMALL[detector])
    assert "\n" not in str(info.value) and "Conv2d" in str(info.value)
    with pytest.raises(TypeError, match=r"backbone must be a registry name or a built backbone, got 3$"):
        vision.create_model(detector, backbone=3, **SMALL[detector])


def test_yolo_level_count_and_strides_name_the_argument():
    with pytest.raises(
        ValueError, match=r"^yolo needs 3 backbone levels \(strides 8, 16, 32\); out_indices=\(2, 3\) gives 2"
    ):
        vision.create_model("yolo", backbone="resnet18", out_indices=(2, 3), num_classes=3)
    with pytest.raises(ValueError, match=r"neck_channels=\(16, 32\) gives 2 widths for 3 backbone levels"):
        vision.create_model("yolo", backbone="resnet18", neck_channels=(16, 32), num_classes=3)
    with pytest.raises(ValueError, match=r"double the previous stride; out_indices=\(0, 2, 3\) gives strides"):
        vision.create_model("yolo", backbone="resnet18", out_indices=(0, 2, 3), num_classes=3)
    two = vision.create_model("yolo", backbone="resnet18", out_indices=(2, 3), neck_channels=(16, 32), num_classes=3)
    assert [s.stride for s in two.neck.specs] == [16, 32]  # two levels when the widths say so
