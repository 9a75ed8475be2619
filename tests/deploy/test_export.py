"""ONNX export (issue 14): each family's file is checked by onnxruntime against the PyTorch model on real photos, the
YOLO file runs with onnxruntime and numpy alone, and ``tools/infer.py`` draws from a ``.onnx`` file.

Real images: scikit-image's and scikit-learn's sample photos (shipped with those packages, no download)."""

from __future__ import annotations

import json
import subprocess
import sys
import textwrap

import numpy as np
import pytest
import torch

import vision

pytest.importorskip("onnxruntime")
pytest.importorskip("skimage")

from vision.cli.export import _sample_photos
from vision.deploy import check_export, export_onnx, load_onnx


@pytest.fixture(scope="module")
def photos() -> list[torch.Tensor]:
    """Three real photos, float [3, H, W] in [0, 1]."""
    return [p.float() / 255 for p in _sample_photos()[:3]]


def _confident_yolo() -> torch.nn.Module:
    """A random yolo_n with spread-out scores: batch-norm statistics measured on noise (at initialisation the
    features vanish and every score ties), class biases 0 instead of the prior and small class weights (distinct
    scores around 0.5)."""
    torch.manual_seed(0)
    model = vision.create_model("yolo_n", num_classes=3, imgsz=160)
    for m in model.modules():
        if isinstance(m, torch.nn.BatchNorm2d):
            m.momentum = None  # cumulative average over the passes below
    model.train()
    with torch.no_grad():
        for _ in range(2):
            model.forward_raw(torch.rand(2, 3, 160, 160))
        for name, p in model.head.named_parameters():
            if name.startswith("cls.") and name.endswith(".2.bias"):  # the last convolution of each level
                p.zero_()
            elif name.startswith("cls.") and name.endswith(".2.weight"):
                p.mul_(0.02)  # logits of a few units: distinct scores, no saturation
    return model.eval()


@pytest.fixture(scope="module")
def yolo_file(tmp_path_factory: pytest.TempPathFactory) -> tuple[torch.nn.Module, object]:
    model = _confident_yolo()
    path = export_onnx(model, tmp_path_factory.mktemp("yolo") / "yolo_n.onnx", score_threshold=0.3, max_det=50)
    return model, path


def test_classifier_export_matches_pytorch(tmp_path, photos):
    torch.manual_seed(0)
    model = vision.create_model("resnet18", num_classes=10).eval()
    onnx_model = load_onnx(export_onnx(model, tmp_path / "r18.onnx", dynamic=True))
    assert not any(m.training for m in model.modules())  # the export leaves the model as it found it (eval)
    result = check_export(model, onnx_model, photos)
    assert result.ok, result.lines
    assert result.max_diff <= 1e-4
    assert onnx_model.task == "classification" and onnx_model.num_classes == 10
    x = torch.stack([onnx_model.eval_transforms()((p * 255).to(torch.uint8)) for p in photos])
    assert [t[0][0] for t in onnx_model.predict(x, topk=3)] == [t[0][0] for t in model.predict(x, topk=3)]


def test_yolo_export_matches_pytorch_and_carries_metadata(yolo_file, photos):
    model, path = yolo_file
    onnx_model = load_onnx(path)
    result = check_export(model, onnx_model, photos)
    assert result.ok, result.lines
    assert sum(int(line.split()[2]) for line in result.lines if line.startswith("image ")) > 0  # detections compared
    meta = onnx_model.metadata
    assert meta["task"] == "detection" and meta["kind"] == "yolo" and meta["version"] == vision.__version__
    assert json.loads(meta["names"]) == ["0", "1", "2"]
    pre = json.loads(meta["preprocess"])
    assert pre["mode"] == "letterbox" and pre["input_size"] == [160, 160] and pre["fill"] == 114
    assert [o.name for o in onnx_model.session.get_outputs()] == ["boxes", "scores", "labels", "num_dets"]


def test_yolo_metadata_that_does_not_fit_the_graph_is_refused(yolo_file, photos, tmp_path):
    """``imgsz`` other than the graph's input is refused when the file is opened; ``names`` shorter than the labels
    the graph gives is refused when a detection has such a label (not a wrong name, not an IndexError)."""
    import onnx

    from vision.deploy.export import set_metadata

    _, path = yolo_file
    proto = onnx.load(path)
    meta = {p.key: p.value for p in proto.metadata_props}
    pre = json.loads(meta["preprocess"])
    set_metadata(proto, {**meta, "imgsz": "320", "preprocess": json.dumps({**pre, "input_size": [320, 320]})})
    onnx.save(proto, tmp_path / "sz.onnx")
    with pytest.raises(ValueError, match="metadata 'imgsz' says 320x320 inputs, but the graph takes 160x160"):
        load_onnx(tmp_path / "sz.onnx")
    labels = torch.cat([d["labels"] for d in load_onnx(path).predict(photos)])
    assert int(labels.max()) >= 1  # the graph gives labels past the one name below
    set_metadata(proto, {**meta, "names": json.dumps(["0"])})
    onnx.save(proto, tmp_path / "names.onnx")
    with pytest.raises(ValueError, match="metadata 'names' lists 1 classes but the graph gives label"):
        load_onnx(tmp_path / "names.onnx").predict(photos)


def test_check_fails_on_a_different_model(yolo_file, photos):
    """The check can fail: the file against another model's weights."""
    _, path = yolo_file
    other = _confident_yolo()
    with torch.no_grad():
        for p in other.head.parameters():
            p.add_(0.05)
    assert not check_export(other, load_onnx(path), photos).ok


def test_yolo_file_runs_with_onnxruntime_and_numpy_only(yolo_file, photos, tmp_path):
    """A deployer's process: numpy letterbox (the photo is cropped to 160 x 120, so only padding), onnxruntime, no
    torch and no vision imported; the boxes equal those of OnnxModel and the PyTorch model."""
    model, path = yolo_file
    image = (photos[0][:, 100:220, 100:260] * 255).round().to(torch.uint8)  # [3, 120, 160]
    np.save(tmp_path / "image.npy", image.permute(1, 2, 0).numpy())
    script = textwrap.dedent(f"""
        import json, sys
        import numpy as np
        import onnxruntime as ort
        sess = ort.InferenceSession({str(path)!r}, providers=["CPUExecutionProvider"])
        meta = sess.get_modelmeta().custom_metadata_map
        size = json.loads(meta["preprocess"])["input_size"][0]
        img = np.load({str(tmp_path / "image.npy")!r})                      # HWC uint8, longer side == size
        h, w = img.shape[:2]
        top, left = (size - h) // 2, (size - w) // 2
        canvas = np.full((size, size, 3), np.float32(114 / 255), np.float32)
        canvas[top:top + h, left:left + w] = img.astype(np.float32) / 255
        boxes, scores, labels, n = sess.run(None, {{"images": canvas.transpose(2, 0, 1)[None]}})
        boxes = boxes[0, :n[0]] - np.array([left, top, left, top], np.float32)
        assert "torch" not in sys.modules and "vision" not in sys.modules, "imported torch or vision"
        json.dump({{"boxes": boxes.tolist(), "scores": scores[0, :n[0]].tolist()}}, sys.stdout)
    """)
    out = subprocess.run([sys.executable, "-c", script], capture_output=True, text=True, timeout=120, check=True)
    got = json.loads(out.stdout)
    ours = load_onnx(path).predict([image.float() / 255])[0]
    assert len(got["boxes"]) == len(ours["boxes"]) > 0
    np.testing.assert_allclose(np.clip(got["boxes"], 0, [160, 120, 160, 120]), ours["boxes"].numpy(), atol=1e-3)
    from vision.deploy.check import match_detections, reference_predict

    ok, *_ = match_detections(reference_predict(model, load_onnx(path), [image.float() / 255])[0], ours)
    assert ok


def test_infer_from_onnx_draws_an_image(yolo_file, photos, tmp_path, capsys):
    from vision.cli.infer import main as infer_main
    from vision.io import read_image, write_image

    _, path = yolo_file
    src = tmp_path / "photo.png"
    write_image(src, (photos[1] * 255).round().to(torch.uint8))
    assert infer_main([f"weights={path}", f"source={src}", "conf=0.3", f"project={tmp_path / 'out'}"]) == 0
    drawn = read_image(tmp_path / "out" / "detection" / "infer" / "photo.png")
    assert drawn.shape == read_image(src).shape and not torch.equal(drawn, read_image(src))  # boxes were drawn
    labels = json.loads((tmp_path / "out" / "detection" / "infer" / "labels" / "photo.json").read_text())
    assert labels["detections"] and labels["detections"][0]["name"] in ("0", "1", "2")


def test_ssd_export_matches_pytorch(tmp_path, photos):
    torch.manual_seed(0)
    model = vision.create_model("ssd", backbone="resnet18", num_classes=4, size=96).eval()
    model.score_thresh = 0.3
    onnx_model = load_onnx(export_onnx(model, tmp_path / "ssd.onnx", batch=2))
    result = check_export(model, onnx_model, photos)  # 3 images through a batch-2 file: chunked and padded
    assert result.ok, result.lines
    assert onnx_model.metadata["kind"] == "ssd" and onnx_model.categories == ["0", "1", "2"]


@pytest.mark.slow
def test_faster_rcnn_export_matches_pytorch(tmp_path, photos):
    torch.manual_seed(0)
    model = vision.create_model("faster_rcnn", backbone="resnet18", num_classes=3, min_size=96, max_size=128,
                                box_score_thresh=0.0).eval()  # fmt: skip
    onnx_model = load_onnx(export_onnx(model, tmp_path / "frcnn.onnx"))  # not dynamic=True: any size all the same
    assert [d if isinstance(d, int) else "dyn" for d in onnx_model.input_shape] == [3, "dyn", "dyn"]
    assert len({tuple(p.shape) for p in photos}) == 3  # three sizes, none of them the example's 128 x 128
    result = check_export(model, onnx_model, photos)
    assert result.ok, result.lines
    assert all(int(d["labels"].max()) <= 1 for d in onnx_model.predict(photos) if len(d["labels"]))  # data-set labels


def test_cli_rejects_bad_input_with_one_error_line(tmp_path, capsys):
    from vision.cli.main import main

    with pytest.raises(SystemExit) as err:
        main(["export", "model=resnet18", "format=tflite"])
    assert err.value.code == 2
    assert capsys.readouterr().err.strip() == "error: format='tflite' is not supported (only format=onnx)"
    with pytest.raises(SystemExit) as err:
        main(["export", "model=resnet18", "int8=true"])
    assert err.value.code == 2 and "needs data=" in capsys.readouterr().err


def test_cli_exits_1_when_the_check_fails(tmp_path, monkeypatch, capsys):
    import vision.deploy
    from vision.cli.main import main
    from vision.deploy import CheckResult

    monkeypatch.setattr(vision.deploy, "check_export", lambda *a: CheckResult(ok=False, lines=["image 0: x"]))
    code = main(["export", "model=resnet18", f"file={tmp_path / 'r.onnx'}", "check_images=1"])
    assert code == 1 and "onnxruntime check: FAIL" in capsys.readouterr().out


def test_match_detections_accepts_only_true_nms_near_ties():
    from vision.deploy.check import match_detections

    def dets(boxes, scores, labels):
        return {"boxes": torch.tensor(boxes, dtype=torch.float32), "scores": torch.tensor(scores),
                "labels": torch.tensor(labels)}  # fmt: skip

    ref = dets([[0, 0, 10, 10], [50, 50, 60, 60]], [0.9, 0.4], [0, 1])
    assert match_detections(ref, dets([[0, 0, 10, 10], [50, 50, 60, 60.01]], [0.9, 0.4004], [0, 1]))[0]
    # the second box's NMS rival (IoU 0.82 > 0.7, same class, score equal to 1e-7) survived instead: a near tie
    swapped = dets([[0, 0, 10, 10], [50, 50, 60, 61]], [0.9, 0.4000001], [0, 1])
    ok, _, _, msg = match_detections(ref, swapped, nms_iou=0.7)
    assert ok and "1 near tie" in msg
    assert not match_detections(ref, dets([[0, 0, 10, 10], [50, 50, 60, 61]], [0.9, 0.41], [0, 1]), nms_iou=0.7)[0]
    assert not match_detections(ref, dets([[0, 0, 10, 10], [50, 50, 60, 75]], [0.9, 0.4], [0, 1]), nms_iou=0.7)[0]
    assert not match_detections(ref, dets([[0, 0, 10, 10], [50, 50, 60, 61]], [0.9, 0.4], [0, 0]), nms_iou=0.7)[0]
    assert not match_detections(ref, dets([[0, 0, 10, 10]], [0.9], [0]))[0]  # counts differ
