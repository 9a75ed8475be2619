"""``list_models`` applies ``task=``, ``capability=`` and ``pretrained=`` to ``timm/`` names as to registered ones:
a timm name is a classification model with the tags its registry entry has (``classification``, ``features``,
``timm``, ``self-weights``); the CLI (``vision list``) says when the filters leave nothing."""

from __future__ import annotations

import pytest

import vision
from vision.cli.main import main as vision_main
from vision.registry import resolve_entry

pytest.importorskip("timm")


def test_timm_names_are_filtered_by_task_and_capability() -> None:
    every = vision.list_models("timm/resnet18*")
    assert "timm/resnet18" in every
    assert vision.list_models("timm/resnet18*", task="detection") == []
    assert vision.list_models("timm/resnet18*", capability="nonsense") == []
    assert vision.list_models("timm/resnet18*", task="classification") == every
    assert vision.list_models("timm/resnet18*", capability="features") == every
    assert vision.list_models("timm/resnet18*", task="classification", capability="timm") == every
    entry = resolve_entry("timm/resnet18")  # what the listing promises is what the registry builds
    assert entry.task == "classification" and {"classification", "features"} <= entry.tags


def test_timm_pretrained_names_are_filtered_too() -> None:
    tagged = vision.list_models("timm/resnet18*", pretrained=True)
    assert tagged and all(n.startswith("timm/resnet18") and "." in n for n in tagged)
    assert vision.list_models("timm/resnet18*", pretrained=True, task="detection") == []
    assert vision.list_models("timm/resnet18*", pretrained=True, capability="features") == tagged


def test_vision_list_says_the_task_leaves_no_timm_model(capsys: pytest.CaptureFixture[str]) -> None:
    with pytest.raises(SystemExit) as info:
        vision_main(["list", "timm/resnet18*", "--task", "detection"])
    out, err = capsys.readouterr()
    assert info.value.code != 0 and "timm/resnet18" not in out
    assert err.startswith("error: ") and "detection" in err and err.count("\n") == 1, err
