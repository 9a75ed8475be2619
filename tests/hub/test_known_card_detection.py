"""A local copy of a published detector weight file (same SHA-256) builds and names classes exactly as its tag does."""

from __future__ import annotations

import dataclasses
import hashlib

import pytest
import torch

import vision
from vision._api import _attach_card
from vision.registry import resolve_entry

NAME = "fasterrcnn_resnet50_fpn"
SMALL = {"min_size": 96, "max_size": 128, "rpn_post_nms_top_n_test": 20}


@pytest.fixture
def published_copy(tmp_path, monkeypatch):
    """A weight file standing in for torchvision's COCO file: the tv_coco card is patched to carry its SHA-256."""
    entry = resolve_entry(NAME)
    card = entry.cards["tv_coco"]
    torch.manual_seed(0)
    source = entry.builder(card=card)  # the architecture of the published file (nothing downloaded)
    path = tmp_path / "coco.pth"
    torch.save(source.state_dict(), path)
    digest = hashlib.sha256(path.read_bytes()).hexdigest()
    patched = dataclasses.replace(card, sha256=digest[:8])
    monkeypatch.setitem(entry.cards, "tv_coco", patched)
    return path, patched, source


def test_local_copy_of_a_card_builds_like_the_tag(published_copy):
    path, card, source = published_copy
    model = vision.create_model(NAME, weights=str(path), **SMALL)
    assert model.card is card
    # the card's architecture: torchvision's v1 COCO weights need FrozenBatchNorm2d with eps=0
    eps = {m.eps for m in model.backbone.body.modules() if type(m).__name__ == "FrozenBatchNorm2d"}
    assert eps == {0.0}
    assert not any("BatchNorm" in type(m).__name__ and type(m).__name__ != "FrozenBatchNorm2d" for m in model.modules())
    # data-set label space: no "__background__" (names[label - 1] names model label ``label``)
    assert card.categories[0] == "__background__"
    assert model.categories == list(card.categories[1:]) and len(model.categories) == 90
    expected = source.state_dict()
    assert set(model.state_dict()) == set(expected)
    assert all(torch.equal(v, expected[k]) for k, v in model.state_dict().items())
    # torchvision's builder for pretrained weights: three trainable layers (layer2..4), FPN and heads trainable
    trainable = {n for n, p in model.named_parameters() if p.requires_grad}
    assert trainable == {n for n, p in _pretrained_style_torchvision().named_parameters() if p.requires_grad}
    assert {n.split(".")[2] for n in trainable if n.startswith("backbone.body.")} == {"layer2", "layer3", "layer4"}


def _pretrained_style_torchvision() -> torch.nn.Module:
    """torchvision's fasterrcnn_resnet50_fpn as its builder makes it for COCO weights (FrozenBatchNorm2d, the default
    three trainable backbone layers), without downloading anything."""
    import torchvision.models.detection as tvd
    from torchvision.models import resnet50
    from torchvision.models.detection.backbone_utils import _resnet_fpn_extractor
    from torchvision.ops.misc import FrozenBatchNorm2d

    body = _resnet_fpn_extractor(resnet50(weights=None, norm_layer=FrozenBatchNorm2d), 3)
    return tvd.FasterRCNN(body, num_classes=91)


def test_attached_card_names_skip_the_background_slot():
    """The fallback for builders that do not keep the card: names are in the data-set label space."""
    card = resolve_entry(NAME).cards["tv_coco"]
    model = vision.create_model(NAME, **SMALL)
    assert model.card is None and model.categories is None
    _attach_card(model, card)
    assert model.card is card and model.categories == list(card.categories[1:])
