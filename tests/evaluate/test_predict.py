"""``model.predict(source)`` for every task: the same ``Results`` from every kind of source, equal to the model's own
batch output; ``plot``/``save``/``to_dict``/``to_coco``; ``tools/infer.py`` writes what ``Results`` say."""

from __future__ import annotations

import json
from pathlib import Path

import numpy as np
import pytest
import torch
from PIL import Image

import vision
from vision.cli.infer import main as infer_main
from vision.io import read_image, write_image
from vision.results import Results, load_sources


def _images(tmp_path: Path, n: int = 2, size: tuple[int, int] = (48, 64)) -> list[Path]:
    gen = torch.Generator().manual_seed(0)
    folder = tmp_path / "imgs"
    paths = []
    for i in range(n):
        img = torch.randint(0, 256, (3, *size), generator=gen, dtype=torch.uint8)
        img[:, 10:30, 12:40] = 255  # a bright rectangle: something to detect
        paths.append(write_image(folder / f"im{i}.png", img))
    return paths


def _sources(path: Path) -> dict[str, object]:
    hwc = read_image(path, layout="hwc")
    return {
        "path": str(path),
        "path list": [path],
        "PIL": Image.fromarray(hwc),
        "numpy": hwc,
        "uint8 tensor": read_image(path),
        "float tensor": read_image(path).float() / 255,
    }


def test_detection_results_from_every_source_equal_the_batch_output(detector, tmp_path):
    path = _images(tmp_path, 1)[0]
    image = read_image(path)
    reference = detector.predict([image.float() / 255], score_threshold=0.0, max_det=20)[0]  # today's dicts
    assert isinstance(reference, dict) and len(reference["boxes"]) > 0
    for kind, source in _sources(path).items():
        (r,) = detector.predict(source, conf=0.0, max_det=20)
        assert isinstance(r, Results) and r.task == "detection", kind
        assert torch.equal(r.image, image), kind
        assert torch.allclose(r.boxes, reference["boxes"]) and torch.equal(r.labels, reference["labels"]), kind
        assert torch.allclose(r.scores, reference["scores"]) and r.names == ["a", "b", "c"], kind
        assert r.path == (str(path) if "path" in kind else None), kind
    folder = detector.predict(path.parent, conf=0.0, max_det=20)
    assert [x.path for x in folder] == [str(path)] and torch.equal(folder[0]["boxes"], folder[0].boxes)


def test_detection_plot_save_to_dict_to_coco(detector, tmp_path):
    path = _images(tmp_path, 1)[0]
    (r,) = detector.predict(path, conf=0.0, max_det=5)
    drawn = r.plot()
    assert drawn.dtype == np.uint8 and drawn.shape == (48, 64, 3)
    assert not np.array_equal(drawn, read_image(path, layout="hwc"))  # boxes drawn
    saved = r.save(tmp_path / "out.png")
    assert np.array_equal(read_image(saved, layout="hwc"), drawn)
    record = r.to_dict()
    assert record["file"] == str(path) and len(record["detections"]) == len(r) == 5
    coco = r.to_coco(image_id=7)
    for item, box, label in zip(coco, r.boxes.tolist(), r.labels.tolist()):
        x, y, w, h = item["bbox"]
        assert item["image_id"] == 7 and item["category_id"] == label + 1
        assert [x, y, x + w, y + h] == pytest.approx(box)
    assert r.to_coco(1, label_to_cat_id={0: 10, 1: 11, 2: 12})[0]["category_id"] == 10 + int(r.labels[0])
    rounded = r.to_coco(7, [10, 11, 12], decimals=1)  # a list of ids as label_to_cat_id; values as to_dict rounds
    for item, exact in zip(rounded, coco):
        assert item["category_id"] == exact["category_id"] + 9 and item["score"] == round(exact["score"], 4)
        assert item["bbox"] == [round(v, 1) for v in exact["bbox"]] != exact["bbox"]


def test_masks_become_rles_that_decode_back():
    from pycocotools import mask as mask_utils

    masks = torch.zeros(2, 1, 20, 30)
    masks[0, 0, 2:8, 3:9] = 0.9
    masks[1, 0, 10:18, 5:25] = 0.7
    det = {"boxes": torch.tensor([[3.0, 2, 9, 8], [5, 10, 25, 18]]), "scores": torch.tensor([0.9, 0.8]),
           "labels": torch.tensor([0, 1]), "masks": masks}  # fmt: skip
    r = Results.from_detections(torch.zeros(3, 20, 30, dtype=torch.uint8), det, ["x", "y"])
    assert r.masks.dtype == torch.bool and r.masks.shape == (2, 20, 30)
    for item, m in zip(r.to_coco(1), r.masks):
        assert np.array_equal(mask_utils.decode(item["segmentation"]), m.numpy().astype(np.uint8))
    assert r.plot()[5, 5].tolist() != [0, 0, 0]  # the mask is painted


def test_classification_results_from_every_source(tmp_path):
    torch.manual_seed(0)
    model = vision.create_model("csp_darknet_n", num_classes=4).eval()
    model.categories = ["w", "x", "y", "z"]
    path = _images(tmp_path, 1)[0]
    x = model.eval_transforms()(read_image(path))[None]
    reference = model.predict(x, topk=3)[0]  # a normalised batch: today's top-k tuples
    probs = model(x).softmax(-1)[0]
    for kind, source in _sources(path).items():
        (r,) = model.predict(source, topk=3)
        assert r.task == "classification" and r.topk[0][:2] == reference[0][:2], kind
        assert [p for *_, p in r.topk] == pytest.approx([p for *_, p in reference], abs=1e-5), kind
        assert torch.allclose(r.probs, probs, atol=1e-5), kind
    assert r.to_dict()["top"][0]["name"] == reference[0][1]
    assert r.plot().shape == (48, 64, 3)
    with pytest.raises(ValueError, match="to_coco needs detection results"):
        r.to_coco(1)


def test_generation_results():
    torch.manual_seed(0)
    model = vision.create_model("dcgan_32", num_classes=3).eval()
    model.categories = ["p", "q", "r"]
    results = model.predict(2, labels=[2, 1], seed=3)
    again, labels = model.sample(2, labels=[2, 1], seed=3, return_labels=True)
    assert len(results) == 2 and results[0].task == "generation" and labels.tolist() == [2, 1]
    assert torch.equal(results[0].image, again[0].expand(3, -1, -1))
    assert results[1].to_dict() == {"file": None, "label": 1, "class": "q"}
    assert results[1].plot().shape == (*again.shape[-2:], 3)


@pytest.mark.parametrize(
    ("source", "culprit"),
    [
        (np.zeros((4, 4, 3), np.float32), "uint8 [H, W, 3]"),
        (torch.zeros(2, 5, 5), "[3, H, W]"),
        (42, "int"),
        ("no/such/file.png", "no/such/file.png"),
    ],
)
def test_bad_sources_name_the_culprit(source, culprit):
    with pytest.raises((ValueError, FileNotFoundError)) as info:
        load_sources(source)
    assert culprit in str(info.value)


def test_classification_infer_writes_results(tmp_path, capsys):
    weights = tmp_path / "tiny.pt"
    torch.manual_seed(0)
    model = vision.create_model("csp_darknet_n", num_classes=3)
    torch.save(model.state_dict(), weights)
    paths = _images(tmp_path, 2)
    argv = ["model=csp_darknet_n", f"weights={weights}", f"source={paths[0].parent}", "topk=2", f"project={tmp_path}"]
    assert infer_main(argv) == 0
    lines = capsys.readouterr().out.strip().splitlines()
    out = Path(lines[-1].removeprefix("results saved to "))
    written = json.loads((out / "predictions.json").read_text())
    loaded = vision.load_model(str(weights), model="csp_darknet_n")
    expected = [r.to_dict() for r in loaded.predict([str(p) for p in paths], topk=2)]
    assert written == expected and len(written) == 2
    assert lines[0].startswith(f"{paths[0]}: ") and f"({written[0]['top'][0]['label']})" in lines[0]


def _detect_args(tmp_path: Path, source: Path, model: object, **keys: object) -> dict[str, object]:
    from vision.cli.infer import COMMON_KEYS
    from vision.tasks.detection.infer import DETECTION_KEYS

    args = {**COMMON_KEYS, **DETECTION_KEYS, "source": str(source), "project": str(tmp_path / "out"), "_model": model}
    return {**args, "device": "cpu", "conf": 0.0, "max_det": 20, **keys}


@pytest.mark.parametrize("imgsz", [32, 96])
def test_detection_infer_imgsz_is_the_inference_size(detector, tmp_path, imgsz):
    from vision.tasks.detection.infer import infer_detection

    path = _images(tmp_path, 1, size=(60, 90))[0]
    out = infer_detection(_detect_args(tmp_path, path, detector, imgsz=imgsz))
    written = json.loads((out / "labels" / f"{path.stem}.json").read_text())["detections"]
    at_size = detector.predict(path, conf=0.0, max_det=20, imgsz=imgsz)[0].to_dict()["detections"]
    trained = detector.predict(path, conf=0.0, max_det=20)[0].to_dict()["detections"]  # imgsz 64, the model's
    assert written == at_size and written != trained


def test_detection_infer_imgsz_a_model_cannot_take_is_refused(tmp_path):
    from vision.tasks.detection.infer import infer_detection

    class Fixed(torch.nn.Module):  # a fixed-size detector (as an exported file): predict takes no size
        imgsz, metadata = 320, {"model": "yolo_n"}

        def predict(self, images, *, topk=5):
            return [{"boxes": torch.zeros(0, 4), "scores": torch.zeros(0), "labels": torch.zeros(0, dtype=torch.long)}
                    for _ in images]  # fmt: skip

    path = _images(tmp_path, 1)[0]
    assert infer_detection(_detect_args(tmp_path, path, Fixed(), imgsz=320)).is_dir()  # its own size: accepted
    with pytest.raises(ValueError, match=r"^imgsz=640 does not apply to yolo_n: its fixed input size is 320; leave"):
        infer_detection(_detect_args(tmp_path, path, Fixed(), imgsz=640))
    Fixed.imgsz = None
    with pytest.raises(ValueError, match=r"^imgsz=640 does not apply to yolo_n: it sizes its input itself"):
        infer_detection(_detect_args(tmp_path, path, Fixed(), imgsz=640))


def test_detection_infer_imgsz_with_an_exported_file_is_checked_as_vision_val_checks_it(tmp_path):
    from vision.deploy.runtime import OnnxModel
    from vision.tasks.detection.infer import _imgsz_option

    exported = OnnxModel.__new__(OnnxModel)  # the attributes load_onnx reads from a file's metadata
    exported.path, exported.imgsz, exported.preprocess = tmp_path / "m.onnx", 64, {"input_size": [64, 64]}
    assert _imgsz_option(exported, 64, False) == {}
    with pytest.raises(ValueError, match=r"^imgsz=128 does not apply to weights=.*m\.onnx: the file was exported for"):
        _imgsz_option(exported, 128, False)
    exported.preprocess = {}  # an R-CNN file: resizes inside its graph
    with pytest.raises(ValueError, match="resizes each image inside its graph"):
        _imgsz_option(exported, 64, False)


def test_sources_default_to_the_cli_threshold_and_take_the_cli_names(detector, tmp_path):
    """``predict(source)`` scores above 0.25 unless told otherwise, as ``tools/infer.py`` (and ultralytics) do; a
    batch keeps the model's own threshold (validation needs it). ``iou=`` is ``iou_threshold=``, as on the CLI."""
    path = _images(tmp_path, 1)[0]
    x = [read_image(path).float() / 255]
    model_default = detector.predict(x)[0]
    assert len(model_default["scores"]) > 0 and float(model_default["scores"].min()) < 0.25
    (r,) = detector.predict(str(path))
    at_cli_conf = detector.predict(x, score_threshold=0.25)[0]
    assert torch.equal(r.scores, at_cli_conf["scores"]) and bool((r.scores >= 0.25).all())
    (low,) = detector.predict(str(path), conf=0.001)
    assert torch.equal(low.scores, model_default["scores"])
    a = detector.predict(x, iou=0.3, score_threshold=0.0)[0]
    b = detector.predict(x, iou_threshold=0.3, score_threshold=0.0)[0]
    assert torch.equal(a["boxes"], b["boxes"]) and not torch.equal(
        a["boxes"], detector.predict(x, conf=0.0)[0]["boxes"]
    )


@pytest.mark.parametrize(
    ("options", "said"),
    [
        ({"conf": 1.5}, r"^conf=1\.5 must be a number in \[0, 1\]"),
        ({"score_threshold": -0.1}, r"^score_threshold=-0\.1 must be a number in \[0, 1\]"),
        ({"iou": 2}, r"^iou=2 must be a number in \[0, 1\]"),
        ({"iou": 0.5, "iou_threshold": 0.5}, "give iou= or iou_threshold="),
        ({"max_det": 0}, r"^max_det=0 must be a positive integer"),
    ],
)
def test_bad_detection_options_are_refused(detector, options, said):
    with pytest.raises(ValueError, match=said):
        detector.predict([torch.rand(3, 32, 32)], **options)


@pytest.mark.parametrize(("key", "value"), [("topk", 0), ("batch", 0), ("topk", 2.5)])
def test_bad_classifier_options_are_refused(key, value):
    model = vision.create_model("resnet18", num_classes=3)
    with pytest.raises(ValueError, match=rf"^{key}={value!r} must be a positive integer"):
        model.predict(torch.randint(0, 256, (3, 20, 20), dtype=torch.uint8), **{key: value})
