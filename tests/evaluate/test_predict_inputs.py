"""Inputs of ``load_model`` and ``predict`` that gave a misleading or raw error: a missing weights path says so, the
detectors' ``conf``/``batch`` aliases work for batches as for files, a classifier names an empty image."""

from __future__ import annotations

import pytest
import torch

import vision
from vision._loader import find_trained_file
from vision.cli.infer import main as infer_main


# ------------------------------------------------------------------------------------------------ missing weights
@pytest.mark.parametrize("weights", ["missing.safetensors", "nope.pth", "runs/detection/nope/weights/best.safetensors"])
def test_load_model_names_a_missing_weights_path(tmp_path, monkeypatch, weights):
    monkeypatch.chdir(tmp_path)
    with pytest.raises(FileNotFoundError, match=f"^weights={weights}: no such file or folder$"):
        vision.load_model(weights)
    with pytest.raises(FileNotFoundError, match="no such file or folder"):
        vision.load_model(weights, model="resnet18")


def test_infer_names_a_missing_weights_path(capsys, tmp_path, monkeypatch):
    monkeypatch.chdir(tmp_path)
    weights = "runs/detection/nope/weights/best.safetensors"
    with pytest.raises(SystemExit) as exit_info:
        infer_main([f"weights={weights}", "source=x.jpg", f"project={tmp_path / 'out'}"])
    assert exit_info.value.code == 2
    assert capsys.readouterr().err.strip().splitlines() == [f"error: weights={weights}: no such file or folder"]


@pytest.mark.parametrize("weights", ["lukemelas_in1k", "tv2_in1k", "https://example.com/resnet18-f37072fd.pth"])
def test_tags_and_urls_are_not_taken_for_paths(tmp_path, monkeypatch, weights):
    monkeypatch.chdir(tmp_path)
    assert find_trained_file(weights) is None
    with pytest.raises(ValueError, match="model= is required"):
        vision.load_model(weights)


# ------------------------------------------------------------------------------------------------ detector aliases
@pytest.fixture(scope="module")
def detector() -> torch.nn.Module:
    torch.manual_seed(0)
    return vision.create_model("yolo_n", num_classes=3).eval()


def _same(a: list, b: list) -> None:
    assert len(a) == len(b)
    for x, y in zip(a, b):
        assert x.keys() == y.keys()
        for key in x:
            torch.testing.assert_close(x[key], y[key])


@pytest.mark.parametrize("as_list", [False, True], ids=["tensor", "list"])
def test_conf_and_batch_aliases_work_for_batches(detector, as_list):
    torch.manual_seed(1)
    x = torch.rand(2, 3, 32, 32)
    source = list(x) if as_list else x
    reference = detector.predict(source, score_threshold=0.0, max_det=5)
    assert [len(d["scores"]) for d in reference] == [5, 5]
    _same(detector.predict(source, conf=0.0, max_det=5), reference)
    _same(detector.predict(source, conf=0.0, max_det=5, batch=1), reference)
    assert [len(d["scores"]) for d in detector.predict(source, conf=1.0, batch=1)] == [0, 0]


def test_conf_and_batch_mistakes_are_value_errors(detector):
    x = torch.rand(1, 3, 64, 64)
    for source in (x, x[0]):
        with pytest.raises(ValueError, match="conf= or score_threshold="):
            detector.predict(source, conf=0.3, score_threshold=0.3)
        with pytest.raises(ValueError, match="batch=0 must be a positive integer"):
            detector.predict(source, batch=0)


# ------------------------------------------------------------------------------------------------ empty images
def test_classifier_names_an_empty_image():
    model = vision.create_model("resnet18", num_classes=3)
    with pytest.raises(ValueError, match=r"^image 0 is empty: shape \(3, 0, 10\)$"):
        model.predict(torch.zeros(3, 0, 10, dtype=torch.uint8))
    with pytest.raises(ValueError, match=r"^image 1 is empty"):
        model.predict([torch.zeros(3, 8, 8, dtype=torch.uint8), torch.zeros(3, 8, 0, dtype=torch.uint8)])
    with pytest.raises(ValueError, match="empty side"):
        model.predict(torch.zeros(2, 3, 0, 10))
