"""``explain=`` / ``explain_class=`` are checked before ``tools/infer.py`` writes anything: a bad method or class, a
class without a method (or with class-free EigenCAM), a video source and a detector the maps do not cover are each
refused with one line naming the key."""

from __future__ import annotations

import pytest
import torch

import vision
from vision.cli.infer import main as infer_main
from vision.utils.keys import ArgumentError


@pytest.fixture(scope="module")
def yolo():
    torch.manual_seed(0)
    model = vision.create_model("yolo_n", num_classes=3)
    model.categories = ["circle", "rectangle", "triangle"]
    return model.eval()


@pytest.fixture
def image(tmp_path):
    from vision.io import write_image

    path = tmp_path / "img.png"
    write_image(path, (torch.rand(3, 48, 64) * 255).to(torch.uint8))
    return path


@pytest.fixture
def video(tmp_path):
    import cv2
    import numpy as np

    path = tmp_path / "clip.mp4"
    writer = cv2.VideoWriter(str(path), cv2.VideoWriter_fourcc(*"mp4v"), 5.0, (64, 48))
    for _ in range(3):
        writer.write(np.random.default_rng(0).integers(0, 255, (48, 64, 3), dtype=np.uint8))
    writer.release()
    return path


def _refused(capsys, monkeypatch, yolo, tmp_path, source, *keys: str) -> str:
    monkeypatch.setattr("vision.tasks.detection.infer.load_model", lambda *a, **k: yolo)
    with pytest.raises(SystemExit):
        infer_main(["model=yolo_n", f"source={source}", "device=cpu", f"project={tmp_path / 'out'}", *keys])
    assert not (tmp_path / "out").exists(), "nothing is written (and nothing predicted) for a refused command"
    out, err = capsys.readouterr()
    said = [line for line in out.splitlines() if "without weights=" not in line]  # yolo_n's weights are random
    assert said == [], "no prediction is printed before the refusal"
    return err.strip()


def test_explain_on_a_video_is_refused(capsys, monkeypatch, yolo, tmp_path, video):
    err = _refused(capsys, monkeypatch, yolo, tmp_path, video, "explain=gradcam")
    assert err == "error: explain=gradcam does not apply to videos (clip.mp4): heat maps are written for images " \
        "only; leave explain= out, or pass images"  # fmt: skip
    err = _refused(capsys, monkeypatch, yolo, tmp_path, video, "explain=bogus")
    assert err == "error: explain=bogus is not allowed: explain must be one of gradcam, eigencam"


@pytest.mark.parametrize(
    ("keys", "message"),
    [
        (["explain=bogus"], "explain=bogus is not allowed: explain must be one of gradcam, eigencam"),
        (["explain=gradcam", "explain_class=7"], "explain_class=7 is outside [0, 3)"),
        (["explain=gradcam", "explain_class=zebra"], "explain_class='zebra' is neither a class index in [0, 3) nor"),
        (["explain_class=1"], "explain_class=1 needs explain=gradcam"),
        (["explain=eigencam", "explain_class=circle"], "explain_class=circle does not apply to explain=eigencam"),
    ],
)
def test_bad_explain_keys_refused_before_any_output(capsys, monkeypatch, yolo, tmp_path, image, keys, message):
    assert message in _refused(capsys, monkeypatch, yolo, tmp_path, image, *keys)


def test_check_explain_covers_classifiers_and_yolo_only(yolo):
    from vision.tasks._explain import check_explain

    net = vision.create_model("resnet18", num_classes=3)
    net.categories = ["a", "b", "c"]
    assert check_explain(net, {"explain": "GradCAM", "explain_class": "b"}, detector=False) == "gradcam"
    assert check_explain(net, {"explain": "", "explain_class": None}, detector=False) == ""
    assert check_explain(yolo, {"explain": "eigencam"}, detector=True) == "eigencam"
    with pytest.raises(ArgumentError, match="explain_class=2 does not apply to explain=eigencam"):
        check_explain(net, {"explain": "eigencam", "explain_class": 2}, detector=False)
    with pytest.raises(ArgumentError, match=r"explain=gradcam does not apply to .*: detector maps cover YOLO models"):
        check_explain(net, {"explain": "gradcam"}, detector=True)  # e.g. an SSD or a Faster R-CNN
