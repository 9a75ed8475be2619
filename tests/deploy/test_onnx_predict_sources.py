"""``OnnxModel.predict`` on a detector file takes what the PyTorch detector's ``predict`` takes (paths, folders,
arrays) and gives the same :class:`~vision.results.Results`; its options can only narrow the post-processing inside
the file, and say so otherwise."""

from __future__ import annotations

from pathlib import Path

import pytest
import torch

import vision

pytest.importorskip("onnxruntime")
pytest.importorskip("skimage")

from vision.cli.export import _sample_photos
from vision.deploy import export_onnx, load_onnx
from vision.deploy.check import match_detections
from vision.results import Results


@pytest.fixture(scope="module")
def folder(tmp_path_factory: pytest.TempPathFactory) -> Path:
    """Two real photos as PNG files (lossless: both sides read the same pixels)."""
    from PIL import Image

    out = tmp_path_factory.mktemp("photos")
    for i, photo in enumerate(_sample_photos()[:2]):
        Image.fromarray(photo.permute(1, 2, 0).numpy()).save(out / f"photo{i}.png")
    return out


@pytest.fixture(scope="module")
def ssd(tmp_path_factory: pytest.TempPathFactory) -> tuple[torch.nn.Module, object]:
    """An untrained SSD (96 px) and its file, score threshold 0.2 inside."""
    torch.manual_seed(0)
    model = vision.create_model("ssd", backbone="resnet18", num_classes=4, size=96).eval()
    path = export_onnx(model, tmp_path_factory.mktemp("ssd") / "ssd.onnx", score_threshold=0.2, max_det=50)
    return model, load_onnx(path)


def _same(ref: list[Results], got: list[Results], score_threshold: float, max_det: int) -> int:
    """Assert that two lists of Results match (paths, images, detections as the export check matches them, both
    cut at ``score_threshold`` and ``max_det``); the number of detections compared."""
    assert [r.path for r in got] == [r.path for r in ref] and all(isinstance(r, Results) for r in got)
    for r, g in zip(ref, got):
        assert torch.equal(r.image, g.image)
        ok, _, _, msg = match_detections({"boxes": r.boxes, "scores": r.scores, "labels": r.labels},
                                         {"boxes": g.boxes, "scores": g.scores, "labels": g.labels},
                                         score_threshold=score_threshold, max_det=max_det)  # fmt: skip
        assert ok, msg
    return sum(len(r) for r in ref)


def test_detector_file_predicts_a_folder_as_pytorch_does(ssd, folder):
    """The reproduction: ``load_onnx(file).predict(path)`` raised AttributeError ('str' has no 'detach')."""
    model, onnx_model = ssd
    got = onnx_model.predict(str(folder))
    assert _same(model.predict(str(folder), max_det=50), got, 0.25, 50) > 0
    assert all(float(r.scores.min()) > 0.25 for r in got if len(r))  # a source's default threshold, as PyTorch's
    one = onnx_model.predict(str(folder / "photo0.png"))
    assert len(one) == 1 and one[0].path == str(folder / "photo0.png")
    array = onnx_model.predict(one[0].image.permute(1, 2, 0).numpy())  # an HWC uint8 array
    assert array[0].path is None and torch.equal(array[0].scores, one[0].scores)


def test_options_narrow_the_files_post_processing(ssd, folder):
    model, onnx_model = ssd
    got = onnx_model.predict([str(folder / "photo0.png"), str(folder / "photo1.png")], conf=0.3, max_det=3, batch=1)
    assert _same(model.predict(str(folder), conf=0.3, max_det=3), got, 0.3, 3) > 0
    batch = [r.image.float() / 255 for r in got]  # a batch keeps the dicts and the file's own threshold
    dets = onnx_model.predict(batch)
    assert isinstance(dets[0], dict) and len(dets[0]["scores"]) > 3
    assert [len(d["scores"]) for d in onnx_model.predict(batch, max_det=2)] == [2, 2]


@pytest.mark.parametrize(
    ("options", "message"),
    [({"iou": 0.3}, r"runs NMS inside the file at IoU 0\.\d+: .*export it again with iou=0\.3"),
     ({"conf": 1.5}, r"conf=1\.5 must be a number in \[0, 1\]")],
)  # fmt: skip
def test_options_the_file_cannot_apply_are_refused(ssd, folder, options, message):
    with pytest.raises(ValueError, match=message):
        ssd[1].predict(str(folder), **options)


def test_a_threshold_below_the_files_keeps_the_files_and_says_so(ssd, folder):
    """tools/infer.py passes its default conf=0.25 to a file exported with a higher one: a warning, not an error."""
    onnx_model = ssd[1]
    with pytest.warns(UserWarning, match=r"keeps only scores above 0\.2 .*export it again with conf=0\.1"):
        got = onnx_model.predict(str(folder), conf=0.1)
    assert _same(onnx_model.predict(str(folder), conf=0.2), got, 0.2, 50) > 0


def test_classifier_file_refuses_detector_options(tmp_path, folder):
    torch.manual_seed(0)
    model = vision.create_model("resnet18", num_classes=3).eval()
    onnx_model = load_onnx(export_onnx(model, tmp_path / "r18.onnx", imgsz=32))
    assert len(onnx_model.predict(str(folder))) == 2
    with pytest.raises(TypeError, match="classifier: predict takes topk=, not conf="):
        onnx_model.predict(str(folder), conf=0.5)


def test_rcnn_file_carries_its_box_heads_post_processing(tmp_path, folder):
    """An R-CNN file says its score threshold (the default source threshold is the higher of it and 0.25)."""
    torch.manual_seed(0)
    model = vision.create_model("faster_rcnn", backbone="resnet18", num_classes=4, min_size=96, max_size=128).eval()
    model.roi_heads.score_thresh = 0.3
    onnx_model = load_onnx(export_onnx(model, tmp_path / "frcnn.onnx"))
    assert onnx_model.post_processing() == (0.3, float(model.roi_heads.nms_thresh), model.roi_heads.detections_per_img)
    model.fast = False  # torchvision's exact path, which the file runs, one image at a time (no batch padding)
    got = onnx_model.predict(str(folder))
    assert _same(model.predict(str(folder), conf=0.3, batch=1), got, 0.3, 100) > 0
    assert all(float(r.scores.min()) > 0.3 for r in got if len(r))
