"""Registry error messages: the listing command and count they point at, open-ended (``timm/``) names, models without
published weights, and built modules passed where a name is expected (named by class, never printed)."""

from __future__ import annotations

import pytest

import vision
from vision.registry import Registry, UnknownNameError, describe, split_name, weights_from_name


def test_unknown_timm_name_says_timm_has_no_such_model():
    for build in (vision.create_backbone, vision.create_model):
        with pytest.raises(UnknownNameError) as info:
            build("timm/nonexistent_net")
        message = str(info.value)
        assert "timm has no model 'nonexistent_net'" in message
        assert "also accepted" not in message  # the name already starts with timm/
        assert "`vision list 'timm/*'`" in message


def test_unknown_names_point_at_the_command_that_lists_them_with_its_count():
    with pytest.raises(UnknownNameError) as info:
        vision.create_backbone("yolo_n")  # a model, not a backbone
    n_backbones = len(vision.list_models(capability="features"))
    assert f"`vision list --capability features` shows the {n_backbones} backbones" in str(info.value)
    with pytest.raises(UnknownNameError) as info:
        vision.create_model("yolo_q")
    assert f"`vision list` shows the {len(vision.list_models())} models" in str(info.value)
    assert "yolo_n" in str(info.value)  # a close match


def test_prefix_family_lists_close_names_and_small_registries_list_their_names():
    reg = Registry("things")
    reg.register("alpha")(lambda: 1)
    reg.register("beta")(lambda: 2)
    reg.register_prefix("fam/", lambda name: None, names=lambda: ["fam/resnet18", "fam/resnet50", "fam/vit"])
    assert "Did you mean: fam/resnet18" in reg.unknown_message("fam/resnet19")
    assert "fam has no model 'resnet19'" in reg.unknown_message("fam/resnet19")
    message = reg.unknown_message("alpah")
    assert "Did you mean: alpha?" in message and "Known things: alpha, beta." in message


def test_card_of_a_model_without_weights():
    with pytest.raises(UnknownNameError, match=r"^yolo_n has no published weights$"):
        vision.get_card("yolo_n")
    with pytest.raises(UnknownNameError, match=r"yolo_n has no published weights \(no tag 'x'\)"):
        vision.get_card("yolo_n.x")


def test_a_module_where_a_name_is_expected_is_named_by_its_class():
    body = vision.create_backbone("resnet18")
    with pytest.raises(TypeError) as info:
        split_name(body)
    assert str(info.value) == "a model name must be a non-empty string, got a FeatureExtractor"
    with pytest.raises(TypeError, match=r"got a FeatureExtractor$"):
        vision.create_backbone(body)
    assert describe("x" * 200).endswith("...") and len(describe("x" * 200)) == 80
    assert describe(None) == "None" and describe(3) == "3"


def test_weights_from_name():
    assert weights_from_name("resnet18.tv_in1k", None) == ("resnet18", "tv_in1k")
    assert weights_from_name("resnet18.tv_in1k", True) == ("resnet18", "tv_in1k")
    assert weights_from_name("resnet18", "tv_in1k") == ("resnet18", "tv_in1k")
    assert weights_from_name("timm/resnet18.a1_in1k", None) == ("timm/resnet18", "a1_in1k")
    with pytest.raises(ValueError, match=r"resnet18.tv_in1k already selects weights 'tv_in1k'; do not also pass "):
        weights_from_name("resnet18.tv_in1k", "other.pth", keyword="backbone_weights")
