"""An exported file's metadata is checked when it is opened: a missing or malformed key, an unknown kind or metadata
that does not fit the graph is one ``ValueError`` naming the file and the key, never a raw traceback or a silently
wrong result; onnxruntime errors while running name the file and the input shapes."""

from __future__ import annotations

import json
from pathlib import Path
from types import SimpleNamespace

import pytest
import torch

import vision

pytest.importorskip("onnxruntime")
pytest.importorskip("onnx")

import onnx

from vision.deploy import export_onnx, load_onnx
from vision.deploy.export import set_metadata
from vision.hub.cards import Preprocess


@pytest.fixture(scope="module")
def classifier_file(tmp_path_factory: pytest.TempPathFactory) -> Path:
    """An untrained resnet18 with 10 classes made for and exported at 64 x 64 (fixed batch 1, static logits
    [1, 10])."""
    torch.manual_seed(0)
    model = vision.create_model("resnet18", num_classes=10).eval()
    model.card = SimpleNamespace(preprocess=Preprocess(input_size=(64, 64), resize_size=73))
    return export_onnx(model, tmp_path_factory.mktemp("meta") / "r18.onnx")


def tampered(path: Path, out: Path, **changes: str | None) -> Path:
    """A copy of ``path`` whose metadata has ``changes`` applied (``None`` removes the key)."""
    proto = onnx.load(path)
    meta = {p.key: p.value for p in proto.metadata_props}
    for key, value in changes.items():
        if value is None:
            meta.pop(key)
        else:
            meta[key] = value
    set_metadata(proto, meta)
    onnx.save(proto, out)
    return out


def test_untouched_file_loads(classifier_file):
    model = load_onnx(classifier_file)
    assert model.kind == "classifier" and model.imgsz == 64 and model.num_classes == 10


@pytest.mark.parametrize(
    ("changes", "key", "detail"),
    [
        ({"preprocess": None}, "preprocess", "is missing"),
        ({"imgsz": None}, "imgsz", "is missing"),
        ({"names": "[RBC"}, "names", "is not valid JSON"),
        ({"names": '{"a": 1}'}, "names", "must be a JSON list"),
        ({"names": "[]"}, "names", "non-empty JSON list"),
        ({"preprocess": "{mode"}, "preprocess", "is not valid JSON"),
        ({"imgsz": "abc"}, "imgsz", "must be an integer >= 1, got 'abc'"),
        ({"batch": "two"}, "batch", "must be an integer >= 1"),
        ({"kind": "foo"}, "kind", "is 'foo', not one of classifier, yolo, ssd, rcnn"),
        ({"kind": "yolo", "task": "detection"}, "kind", "the graph has 1 outputs, not 4"),
        ({"task": "detection"}, "task", "a 'classifier' file is a 'classification' model"),
        ({"imgsz": "320"}, "imgsz", "is 320, but preprocess 'input_size' is [64, 64]"),
        ({"names": json.dumps(["a", "b", "c"])}, "names", "lists 3 classes, but the graph gives 10 logits"),
        ({"batch": "4"}, "batch", "is 4, but the graph takes batches of 1"),
    ],
)
def test_bad_metadata_is_named(classifier_file, tmp_path, changes, key, detail):
    path = tampered(classifier_file, tmp_path / "t.onnx", **changes)
    with pytest.raises(ValueError, match="metadata") as err:
        load_onnx(path)
    message = str(err.value)
    assert message.startswith(f"{path}: metadata {key!r} ") and detail in message, message


def test_input_size_that_is_not_the_graphs_is_refused(classifier_file, tmp_path):
    pre = json.loads(load_onnx(classifier_file).metadata["preprocess"])
    path = tampered(classifier_file, tmp_path / "t.onnx", imgsz="32", preprocess=json.dumps({**pre,
                    "input_size": [32, 32]}))  # fmt: skip
    with pytest.raises(ValueError, match="'preprocess' says 32x32 inputs, but the graph takes 64x64"):
        load_onnx(path)


def test_onnxruntime_errors_name_the_file_and_the_shapes(classifier_file):
    model = load_onnx(classifier_file)
    with pytest.raises(ValueError, match="cannot run on an input") as err:
        model(torch.zeros(1, 3, 32, 32))
    message = str(err.value)
    assert message.startswith(f"{classifier_file} cannot run on an input of shape [1, 3, 32, 32] float32: the file "
                              "takes images [1, 3, 64, 64] float32")  # fmt: skip
    assert "Got: 32 Expected: 64" in message and "\n" not in message
