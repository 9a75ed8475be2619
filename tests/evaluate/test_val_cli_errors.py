"""``vision val``: a bad ``batch``/``imgsz``/task key is one ``error:`` line naming it (exit 2); ``imgsz=`` that an
exported file cannot take is refused rather than ignored."""

from __future__ import annotations

import sys
import types
from pathlib import Path
from typing import Any

import pytest

from vision.cli.main import main


def _refused(capsys, argv: list[str]) -> str:
    with pytest.raises(SystemExit) as info:
        main(["val", *argv])
    assert info.value.code == 2
    err = capsys.readouterr().err.strip().splitlines()
    assert len(err) == 1 and err[0].startswith("error: "), err
    return err[0].removeprefix("error: ")


@pytest.mark.parametrize(
    ("arg", "message"),
    [
        ("batch=0", "batch=0 is not allowed: batch must be an integer >= 1"),
        ("imgsz=0", "imgsz=0 is not allowed: imgsz must be an integer >= 1"),
        ("imgsz=abc", "imgsz=abc is not allowed: imgsz must be an integer >= 1"),
        ("workers=-1", "workers=-1 is not allowed: workers must be an integer >= 0"),
    ],
)
def test_bad_value_names_the_key(arg, message, capsys, tmp_path):
    assert _refused(capsys, ["weights=x", arg, f"project={tmp_path}"]) == message
    assert not any(tmp_path.iterdir())


def test_bad_task_key_names_the_key(capsys, tmp_path):
    message = _refused(capsys, ["model=resnet18", "weights=x", "val_fraction=5", f"project={tmp_path}"])
    assert message == "val_fraction=5.0 is not allowed: val_fraction must be a finite number in [0.0, 0.99]"


@pytest.fixture
def onnx_file(monkeypatch, tmp_path) -> dict[str, Any]:
    """An ``.onnx`` path whose ``load_onnx`` returns a stand-in with the given ``preprocess``."""
    pre: dict[str, Any] = {"input_size": [64, 64]}
    module = types.ModuleType("vision.deploy")
    module.load_onnx = lambda path: types.SimpleNamespace(preprocess=pre, task="detection")  # type: ignore[attr-defined]
    monkeypatch.setitem(sys.modules, "vision.deploy", module)
    (tmp_path / "m.onnx").write_bytes(b"onnx")
    return pre


def test_imgsz_other_than_the_exported_size_is_refused(onnx_file, capsys, tmp_path):
    weights = Path(tmp_path / "m.onnx")
    message = _refused(capsys, [f"weights={weights}", "imgsz=128"])
    assert message == f"imgsz=128 does not apply to weights={weights}: the file was exported for 64x64 inputs; " \
        "leave imgsz out, or export again with imgsz=128"  # fmt: skip
    onnx_file.pop("input_size")  # R-CNN: resizes inside the graph
    assert "resizes each image inside its graph" in _refused(capsys, [f"weights={weights}", "imgsz=128"])


def test_imgsz_equal_to_the_exported_size_is_accepted():
    from vision.deploy.runtime import check_exported_imgsz

    check_exported_imgsz(64, "m.onnx", types.SimpleNamespace(preprocess={"input_size": [64, 64]}))


def _shapes_data(root: Path, classes: tuple[str, ...]) -> Path:
    """A COCO-format data YAML of 2 synthetic 64-px images drawn with ``classes`` (train and val)."""
    import json

    import cv2

    from vision.data.synthetic import SyntheticShapes

    shapes = SyntheticShapes(2, size=64, classes=classes)
    (root / "images").mkdir(parents=True)
    for i in range(len(shapes)):
        cv2.imwrite(str(root / "images" / f"{i:06d}.png"), shapes.generate(i)[0][..., ::-1])
    (root / "ann.json").write_text(json.dumps(shapes.to_coco()), encoding="utf-8")
    split = "{images: images, annotations: ann.json}"
    (root / "data.yaml").write_text(f"train: {split}\nval: {split}\n", encoding="utf-8")
    return root / "data.yaml"


@pytest.mark.parametrize(
    ("classes", "why"),
    [
        (("triangle", "circle", "rectangle"), "in another order (label 0 is 'circle' to one, 'triangle' to the other)"),
        (("circle", "rectangle"), "has 3 classes"),
        (("circle", "rectangle", "star"), "(triangle unknown there)"),
    ],
)
def test_data_with_other_class_names_is_refused(det_run, classes, why, capsys, tmp_path):
    data = _shapes_data(tmp_path / "data", classes)
    message = _refused(capsys, [f"weights={det_run}", f"data={data}", f"project={tmp_path / 'v'}"])
    assert why in message and message.endswith("label i must mean the same class to both"), message
    assert not (tmp_path / "v").exists()


def test_check_class_names_compares_names_in_order():
    from vision.tasks._data import check_class_names
    from vision.utils.keys import ArgumentError

    def check(model: list[str] | None, data: list[str] | None) -> None:
        check_class_names(model, data, model_label="the model", data_label="data=x")

    check(["RBC", "wbc "], ["rbc", "WBC"])  # case and spaces do not count
    check(None, ["a"])  # unknown on one side: nothing to compare
    check(["a"], [])
    with pytest.raises(ArgumentError, match=r"\['a', 'b'\] are not data=x's \['a', 'c'\] \(b unknown there\)"):
        check(["a", "b"], ["a", "c"])
    with pytest.raises(ArgumentError, match="in another order"):
        check(["a", "b"], ["b", "a"])


def test_model_other_than_the_exported_network_is_refused(onnx_file, capsys, tmp_path):
    weights = Path(tmp_path / "m.onnx")
    message = _refused(capsys, [f"weights={weights}", "model=resnet18"])
    assert message == f"model=resnet18 does not apply to weights={weights}: an exported file carries its own " \
        "network; leave model= out"  # fmt: skip
