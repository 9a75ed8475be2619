"""A local copy of a published detector weight file (same SHA-256) builds and names classes exactly as its tag does."""

from __future__ import annotations

import dataclasses
import hashlib

import pytest
import torch

import vision
from vision._api import _attach_card, resolve_entry

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
    assert all(torch.equal(v, source.state_dict()[k]) for k, v in model.state_dict().items())
    trainable = {n.split(".")[0] for n, p in model.backbone.body.named_parameters() if p.requires_grad}
    assert trainable == {"layer2", "layer3", "layer4"}  # torchvision's default for pretrained weights


def test_attached_card_names_skip_the_background_slot():
    """The fallback for builders that do not keep the card: names are in the data-set label space."""
    card = resolve_entry(NAME).cards["tv_coco"]
    model = vision.create_model(NAME, **SMALL)
    assert model.card is None and model.categories is None
    _attach_card(model, card)
    assert model.card is card and model.categories == list(card.categories[1:])
