"""``tools/infer.py`` for detectors: no output overwrites another (same stems in other folders or with other
extensions get ``<stem>_2`` ...), unreadable images of a folder or glob are skipped with a warning, and a run that
fails before writing anything leaves no run folder behind."""

from __future__ import annotations

import json
from pathlib import Path

import cv2
import numpy as np
import pytest
import torch

import vision
from vision.cli.infer import main as infer_main
from vision.io import read_image, write_image


@pytest.fixture(scope="module")
def yolo() -> torch.nn.Module:
    torch.manual_seed(0)
    model = vision.create_model("yolo_n", num_classes=3, imgsz=64)
    model.categories = ["circle", "rectangle", "triangle"]
    return model.eval()


def _image(path: Path, height: int, width: int) -> Path:
    """A random image of its own size (to tell which source an output was drawn from)."""
    gen = torch.Generator().manual_seed(height * 1000 + width)
    if path.suffix.lower() in (".jpg", ".jpeg", ".png", ".bmp"):
        return write_image(path, torch.randint(0, 256, (3, height, width), generator=gen, dtype=torch.uint8))
    path.parent.mkdir(parents=True, exist_ok=True)  # .tif, .webp: written by OpenCV itself
    array = torch.randint(0, 256, (height, width, 3), generator=gen, dtype=torch.uint8).numpy()
    assert cv2.imwrite(str(path), array)
    return path


def _video(path: Path, frames: int = 3) -> Path:
    writer = cv2.VideoWriter(str(path), cv2.VideoWriter_fourcc(*"mp4v"), 5.0, (64, 48))
    for _ in range(frames):
        writer.write(np.random.default_rng(0).integers(0, 255, (48, 64, 3), dtype=np.uint8))
    writer.release()
    return path


#: the end of the warning that ``model=`` without ``weights=`` predicts at random
RANDOM = "its weights are random, so are its predictions; give weights= (a tag, a file or a training run)"


def _infer(capsys, monkeypatch, model, tmp_path: Path, source: object, *keys: str) -> tuple[Path, list[str]]:
    """The run folder and the lines on stderr (the warnings; results go to stdout)."""
    monkeypatch.setattr("vision.tasks.detection.infer.load_model", lambda *a, **k: model)
    argv = ["model=yolo_n", f"source={source}", "conf=0.0", "max_det=5", "device=cpu", f"project={tmp_path / 'out'}"]
    assert infer_main([*argv, *keys]) == 0
    captured = capsys.readouterr()
    assert "warning:" not in captured.out, "warnings go to stderr"
    lines = captured.out.strip().splitlines()
    return Path(lines[-1].removeprefix("results saved to ")), captured.err.strip().splitlines()


def _refused(capsys, monkeypatch, model, tmp_path: Path, source: object) -> str:
    monkeypatch.setattr("vision.tasks.detection.infer.load_model", lambda *a, **k: model)
    with pytest.raises(SystemExit) as info:
        infer_main(["model=yolo_n", f"source={source}", "device=cpu", f"project={tmp_path / 'out'}"])
    assert info.value.code == 2
    assert not (tmp_path / "out").exists(), "a run that fails before writing anything leaves no folder behind"
    return capsys.readouterr().err.strip()  # a refused run: no warning that model= has no weights=


def test_same_stems_get_unique_names_in_source_order(capsys, monkeypatch, yolo, tmp_path):
    src = tmp_path / "src"
    sizes = {"a.jpg": (40, 48), "sub/a.jpg": (48, 64), "sub/b.jpg": (56, 40), "x.png": (32, 32), "x.tif": (36, 44),
             "x.webp": (44, 36)}  # fmt: skip
    for name, (h, w) in sizes.items():
        _image(src / name, h, w)
    _video(src / "x.mp4")
    out, _ = _infer(capsys, monkeypatch, yolo, tmp_path, src / "**" / "*", "batch=2")
    expected = {  # source order: a.jpg, sub/a.jpg, sub/b.jpg, x.mp4, x.png, x.tif, x.webp
        "a.jpg": "a.jpg", "sub/a.jpg": "a_2.jpg", "sub/b.jpg": "b.jpg", "x.png": "x_2.png", "x.tif": "x_3.png",
        "x.webp": "x_4.png",
    }  # fmt: skip
    labels = {name: f"labels/{Path(drawn).stem}.json" for name, drawn in expected.items()}
    written = {str(p.relative_to(out)) for p in out.rglob("*") if p.is_file()}
    assert written == {*expected.values(), *labels.values(), "x.mp4", "labels/x.json", "predictions_coco.json"}
    for name, drawn in expected.items():
        assert tuple(read_image(out / drawn).shape[1:]) == sizes[name], f"{drawn} is drawn from {name}"
        assert json.loads((out / labels[name]).read_text())["file"] == str(src / name)
    assert [f["frame"] for f in json.loads((out / "labels" / "x.json").read_text())] == [0, 1, 2]
    coco = json.loads((out / "predictions_coco.json").read_text())
    assert [i["file_name"] for i in coco["images"]] == [str(src / name) for name in expected]
    assert [(i["height"], i["width"]) for i in coco["images"]] == list(sizes.values())
    assert {a["image_id"] for a in coco["annotations"]} <= {i["id"] for i in coco["images"]}


def test_common_names_are_kept_and_explanation_maps_follow_their_image(capsys, monkeypatch, yolo, tmp_path):
    src = tmp_path / "src"
    _image(src / "a.png", 40, 48)
    _image(src / "sub" / "a.png", 48, 64)
    out, _ = _infer(capsys, monkeypatch, yolo, tmp_path, src / "**" / "*.png", "explain=eigencam")
    assert sorted(str(p.relative_to(out)) for p in out.rglob("*.png")) == [
        "a.png", "a_2.png", "a_2_eigencam.png", "a_eigencam.png"
    ]  # fmt: skip
    assert tuple(read_image(out / "a_eigencam.png").shape[1:]) == (40, 48)
    assert tuple(read_image(out / "a_2_eigencam.png").shape[1:]) == (48, 64)


def test_run_outputs_never_give_a_taken_name():
    from vision.tasks._outputs import RunOutputs

    names = RunOutputs("predictions_coco.json")
    assert names.claim("a", "{}.jpg", "labels/{}.json", "{}_gradcam.png") == "a"
    assert names.claim("a_gradcam", "{}.png", "labels/{}.json", "{}_gradcam.png") == "a_gradcam_2"  # a's map
    assert names.claim("A", "{}.png", "labels/{}.json") == "A_2"  # names are compared without case
    assert names.claim("a_2", "{}.png", "labels/{}.json") == "a_2_2"  # A_2 took labels/a_2.json
    assert names.claim("predictions_coco", "{}.png", "labels/{}.json") == "predictions_coco"
    assert names.claim("predictions", "{}.png", "labels/{}.json") == "predictions"


@pytest.mark.parametrize("batch", [1, 16])
def test_unreadable_images_of_a_folder_are_skipped(capsys, monkeypatch, yolo, tmp_path, batch):
    src = tmp_path / "mixed"
    _image(src / "a.jpg", 40, 48)
    _image(src / "c.png", 48, 64)
    (src / "b.jpg").write_text("not an image", encoding="utf-8")
    (src / "d.png").write_bytes(b"")
    out, lines = _infer(capsys, monkeypatch, yolo, tmp_path, src, f"batch={batch}")
    warnings = [line for line in lines if line.startswith("warning:") and "without weights=" not in line]
    assert warnings == [
        f"warning: {src / 'b.jpg'}: not a readable image (OpenCV could not decode the bytes); skipped",
        f"warning: {src / 'd.png'}: the file is empty (0 bytes); skipped",
        "warning: 2 of 4 files skipped: not readable (named above)",
    ]
    assert lines[-2:] == [warnings[-1], f"warning: model=yolo_n without weights=: {RANDOM}"], "the count comes last"
    written = {str(p.relative_to(out)) for p in out.rglob("*") if p.is_file()}
    assert written == {"a.jpg", "c.png", "labels/a.json", "labels/c.json", "predictions_coco.json"}
    coco = json.loads((out / "predictions_coco.json").read_text())
    assert [i["file_name"] for i in coco["images"]] == [str(src / "a.jpg"), str(src / "c.png")]


def test_a_video_opencv_cannot_open_is_skipped_in_a_folder(capsys, monkeypatch, yolo, tmp_path):
    src = tmp_path / "clips"
    _image(src / "a.jpg", 40, 48)
    (src / "broken.mp4").write_text("not a video", encoding="utf-8")
    out, lines = _infer(capsys, monkeypatch, yolo, tmp_path, src)
    warnings = [line for line in lines if line.startswith("warning:") and "without weights=" not in line]
    assert warnings == [
        f"warning: {src / 'broken.mp4'}: OpenCV cannot open the video; skipped",
        "warning: 1 of 2 files skipped: not readable (named above)",
    ]
    assert {str(p.relative_to(out)) for p in out.rglob("*") if p.is_file()} == {
        "a.jpg",
        "labels/a.json",
        "predictions_coco.json",
    }


def test_a_run_that_fails_before_writing_leaves_no_folder(capsys, monkeypatch, yolo, tmp_path):
    bad = tmp_path / "bad"
    bad.mkdir()
    (bad / "b.jpg").write_text("not an image", encoding="utf-8")
    assert _refused(capsys, monkeypatch, yolo, tmp_path, bad / "b.jpg") == (
        f"error: {bad / 'b.jpg'}: not a readable image (OpenCV could not decode the bytes)"
    )  # a single named file: an error, as it always was
    (bad / "c.png").write_bytes(b"")
    assert _refused(capsys, monkeypatch, yolo, tmp_path, bad).splitlines() == [  # the skipped files, then the error
        f"warning: {bad / 'b.jpg'}: not a readable image (OpenCV could not decode the bytes); skipped",
        f"warning: {bad / 'c.png'}: the file is empty (0 bytes); skipped",
        f"error: source {str(bad)!r}: none of its 2 files is readable (each is named above)",
    ]

    class Broken(torch.nn.Module):
        def predict(self, images, **options):
            raise RuntimeError("the detector broke")

    _image(bad / "a.jpg", 40, 48)
    assert _refused(capsys, monkeypatch, Broken(), tmp_path, bad / "a.jpg") == "error: the detector broke"


def test_predictions_coco_json_keeps_the_training_datas_category_ids(capsys, monkeypatch, tmp_path):
    """Trained on categories 7 (circle), 3 (rectangle), 1 (triangle): ``predictions_coco.json`` scores against that
    data's own annotations (it used ``label + 1``, so class 3 meant another class there). The ids travel with the
    weights (``category_ids`` in the metadata)."""
    from vision.engine.checkpoint import save_weights

    torch.manual_seed(0)
    net = vision.create_model("yolo_n", num_classes=3, imgsz=64)
    meta = {"model": "yolo_n", "task": "detection", "classes": ["circle", "rectangle", "triangle"],
            "label_offset": 0, "imgsz": 64, "model_kwargs": {"imgsz": 64}, "category_ids": [7, 3, 1]}  # fmt: skip
    model = vision.load_model(str(save_weights(tmp_path / "w.safetensors", net.state_dict(), meta))).eval()
    assert model.category_ids == [7, 3, 1]
    out, _ = _infer(capsys, monkeypatch, model, tmp_path, _image(tmp_path / "a.png", 48, 64))
    coco = json.loads((out / "predictions_coco.json").read_text())
    assert coco["categories"] == [{"id": 7, "name": "circle"}, {"id": 3, "name": "rectangle"},
                                  {"id": 1, "name": "triangle"}]  # fmt: skip
    labels = json.loads((out / "labels" / "a.json").read_text())["detections"]
    assert labels and [a["category_id"] for a in coco["annotations"]] == [[7, 3, 1][d["label"]] for d in labels]


def test_the_detection_task_records_its_datas_category_ids():
    from vision.engine.config import resolve_args
    from vision.tasks.detection.task import DetectionTask

    task = DetectionTask(resolve_args(["task=detection", "model=yolo_n", "data=synthetic", "synthetic.train=2",
                                       "synthetic.val=2", "synthetic.size=32", "imgsz=32"]))  # fmt: skip
    task.build_datasets()
    assert task.metadata()["category_ids"] == [1, 2, 3]


def test_an_exported_file_keeps_the_category_ids_and_refuses_bad_ones(capsys, tmp_path):
    pytest.importorskip("onnxruntime")
    import onnx

    from vision.deploy import export_onnx, load_onnx
    from vision.deploy.export import set_metadata

    torch.manual_seed(0)
    net = vision.create_model("yolo_n", num_classes=3, imgsz=64).eval()
    net.categories, net.category_ids = ["circle", "rectangle", "triangle"], [7, 3, 1]
    path = export_onnx(net, tmp_path / "y.onnx", score_threshold=0.0, max_det=5)
    assert load_onnx(path).category_ids == [7, 3, 1]
    source = _image(tmp_path / "a.png", 48, 64)
    assert infer_main([f"weights={path}", f"source={source}", "conf=0.0", f"project={tmp_path / 'out'}"]) == 0
    out = Path(capsys.readouterr().out.strip().splitlines()[-1].removeprefix("results saved to "))
    coco = json.loads((out / "predictions_coco.json").read_text())
    assert [c["id"] for c in coco["categories"]] == [7, 3, 1] and coco["annotations"]
    assert {a["category_id"] for a in coco["annotations"]} <= {7, 3, 1}
    proto = onnx.load(path)
    set_metadata(proto, {**{p.key: p.value for p in proto.metadata_props}, "category_ids": "[7, 3]"})
    onnx.save(proto, tmp_path / "bad.onnx")
    with pytest.raises(ValueError, match=r"metadata 'category_ids' must be a JSON list of 3 integers"):
        load_onnx(tmp_path / "bad.onnx")
