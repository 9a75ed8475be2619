"""Registry strictness, names with weight tags, listing, plugins through entry points."""

from __future__ import annotations

import importlib
import sys
import textwrap
from pathlib import Path

import pytest
import torch
from torch import nn

import vision
from vision.registry import MODELS, Registry, UnknownNameError, discover_plugins, split_name


def test_split_name():
    assert split_name("resnet50") == ("resnet50", None)
    assert split_name("resnet50.tv_in1k") == ("resnet50", "tv_in1k")
    assert split_name("timm/resnet50.a1_in1k") == ("timm/resnet50", "a1_in1k")
    with pytest.raises(TypeError):
        split_name("")


def test_duplicate_name_is_an_error():
    reg = Registry("things")

    @reg.register("a")
    def a() -> int:
        return 1

    with pytest.raises(ValueError, match="already registered"):
        reg.register("a")(lambda: 2)
    with pytest.raises(ValueError, match=r"contain no '\.'"):
        reg.register("a.b")(lambda: 2)


def test_unknown_name_lists_close_matches():
    with pytest.raises(UnknownNameError) as info:
        vision.create_model("resnet5O")
    message = str(info.value)
    assert "resnet50" in message and "Did you mean" in message
    with pytest.raises(UnknownNameError, match="efficientnet_b0"):
        vision.create_backbone("efficientnet_bo")


def test_unknown_weight_tag_lists_known_tags():
    with pytest.raises(FileNotFoundError, match="tv_in1k"):
        vision.create_model("resnet18", weights="no_such_tag")
    with pytest.raises(UnknownNameError, match="tv_in1k"):
        vision.get_card("resnet18.bogus")


def test_list_models_filters():
    assert {"resnet18", "resnet50", "resnet152"} <= set(vision.list_models("resnet*"))
    assert all(n.startswith("vgg") for n in vision.list_models("vgg*"))
    tagged = vision.list_models("resnet50*", pretrained=True)
    assert {"resnet50.tv_in1k", "resnet50.tv2_in1k"} <= set(tagged)
    assert "efficientnet_lite0.lukemelas_in1k" in vision.list_models("efficientnet_lite0", pretrained=True)
    features = vision.list_models(capability="features")
    assert "inception_v3" in features
    assert vision.list_models("*", task="no-such-task") == []
    timm_names = vision.list_models("timm/resnet1*")
    assert "timm/resnet18" in timm_names


def test_card_and_tag_in_name():
    card = vision.get_card("resnet50")
    assert card is vision.get_card("resnet50.tv2_in1k")  # default = torchvision's DEFAULT
    assert card.sha256 == "11ad3fa6" and card.num_classes == 1000 and len(card.categories) == 1000
    assert card.metrics["ImageNet-1K"]["acc@1"] == pytest.approx(80.858)
    with pytest.raises(ValueError, match="already selects weights"):
        vision.create_model("resnet18.tv_in1k", weights="other")


# ----------------------------------------------------------------------------------------------------------- plugins

_GOOD = """
from torch import nn
from vision.registry import MODELS

@MODELS.register("plugin_tiny_net", tags={"classification"}, task="classification")
def plugin_tiny_net(*, num_classes: int = 3, **kwargs):
    return nn.Sequential(nn.Flatten(), nn.LazyLinear(num_classes))
"""

_BROKEN = """
raise ImportError("this plugin is broken on purpose")
"""


def _make_dist(site: Path, dist: str, module: str, code: str) -> None:
    (site / f"{module}.py").write_text(textwrap.dedent(code))
    info = site / f"{dist}-1.0.dist-info"
    info.mkdir()
    (info / "METADATA").write_text(f"Metadata-Version: 2.1\nName: {dist}\nVersion: 1.0\n")
    (info / "entry_points.txt").write_text(f"[vision.models]\n{dist} = {module}\n")
    (info / "RECORD").write_text("")


@pytest.fixture
def plugin_site(tmp_path, monkeypatch):
    site = tmp_path / "site"
    site.mkdir()
    _make_dist(site, "tinyplug", "tinyplug_models", _GOOD)
    _make_dist(site, "brokenplug", "brokenplug_models", _BROKEN)
    monkeypatch.syspath_prepend(str(site))
    importlib.invalidate_caches()
    yield site
    monkeypatch.undo()  # the plugins leave sys.path before the rediscovery, or it would register them again
    importlib.invalidate_caches()
    MODELS.unregister("plugin_tiny_net")
    for mod in ("tinyplug_models", "brokenplug_models"):
        sys.modules.pop(mod, None)
    discover_plugins(force=True)


def test_plugin_registers_and_broken_plugin_warns(plugin_site):
    with pytest.warns(RuntimeWarning, match=r"brokenplug.*broken on purpose"):
        status = discover_plugins(force=True)
    assert status["tinyplug"] == "ok"
    assert status["brokenplug"].startswith("failed")
    assert "plugin_tiny_net" in vision.list_models("plugin_*")
    model = vision.create_model("plugin_tiny_net", num_classes=5)
    assert isinstance(model, nn.Module)
    assert model(torch.zeros(2, 4)).shape == (2, 5)


def test_plugins_command_reports_status(plugin_site, capsys):
    from vision.cli.main import main

    with pytest.warns(RuntimeWarning):
        discover_plugins(force=True)
    assert main(["plugins"]) == 0
    out = capsys.readouterr().out
    assert "tinyplug: ok" in out and "brokenplug: failed" in out


def test_unknown_task_names_the_known_ones() -> None:
    from vision.engine.task import get_task

    with pytest.raises(ValueError, match=r"unknown task 'detectoin' \(did you mean 'detection'\?\); known tasks: "):
        get_task("detectoin")
