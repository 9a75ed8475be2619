"""``export_onnx`` at an input size other than the model's own (classifier crop ratio, SSD reference at the file's
size), the classifier check's tolerance and summary, and the opset range; each checked against PyTorch / timm /
torch's own constants."""

from __future__ import annotations

import copy
from pathlib import Path
from types import SimpleNamespace

import pytest
import torch

import vision

pytest.importorskip("onnxruntime")
pytest.importorskip("skimage")

from vision.cli.export import _sample_photos
from vision.deploy import check_export, export_onnx, load_onnx
from vision.deploy.export import max_opset
from vision.hub.cards import Preprocess


@pytest.fixture(scope="module")
def photos() -> list[torch.Tensor]:
    """Three real photos of three sizes, float [3, H, W] in [0, 1]."""
    return [p.float() / 255 for p in _sample_photos()[:3]]


def _resnet(size: int, resize: int, *, crop: bool = True) -> torch.nn.Module:
    """An untrained resnet18 (10 classes) whose card says ``size`` x ``size`` inputs (after a ``resize``)."""
    torch.manual_seed(0)
    model = vision.create_model("resnet18", num_classes=10).eval()
    model.card = SimpleNamespace(preprocess=Preprocess(input_size=(size, size), resize_size=resize, crop=crop))
    return model


@pytest.fixture(scope="module")
def c64(tmp_path_factory: pytest.TempPathFactory) -> tuple[torch.nn.Module, Path]:
    """A classifier made for 64 x 64 inputs exported at its own size."""
    model = _resnet(64, 73)
    return model, export_onnx(model, tmp_path_factory.mktemp("c64") / "c64.onnx")


def test_classifier_imgsz_keeps_the_cards_crop_ratio(tmp_path, photos):
    """An ImageNet card (224 crop of 256) at imgsz=64: input 64, resize as timm's ``floor(64 / crop_pct)``."""
    timm_data = pytest.importorskip("timm.data")
    model = _resnet(224, 256)
    onnx_model = load_onnx(export_onnx(model, tmp_path / "c64.onnx", imgsz=64))
    pre = onnx_model.preprocess
    timm_resize = timm_data.create_transform(input_size=(3, 64, 64), crop_pct=224 / 256, interpolation="bilinear",
                                             is_training=False).transforms[0].size  # fmt: skip
    assert pre["mode"] == "crop" and pre["input_size"] == [64, 64]
    assert pre["resize_size"] == (timm_resize if isinstance(timm_resize, int) else timm_resize[0]) == 73
    result = check_export(model, onnx_model, photos)
    assert result.ok, result.lines


def test_classifier_imgsz_without_a_crop_resizes_to_the_size(tmp_path, photos):
    model = _resnet(32, 32, crop=False)
    onnx_model = load_onnx(export_onnx(model, tmp_path / "c48.onnx", imgsz=48))
    pre = onnx_model.preprocess
    assert pre["mode"] == "resize" and pre["input_size"] == [48, 48] and pre["resize_size"] == 48
    result = check_export(model, onnx_model, photos)
    assert result.ok, result.lines


def test_ssd_at_another_size_is_checked_at_the_files_size(tmp_path, photos):
    """An SSD made for 96 x 96 exported at 64: the reference runs PyTorch at 64 (and restores 96 afterwards)."""
    torch.manual_seed(0)
    model = vision.create_model("ssd", backbone="resnet18", num_classes=4, size=96).eval()
    model.score_thresh = 0.3
    onnx_model = load_onnx(export_onnx(model, tmp_path / "ssd64.onnx", imgsz=64))
    result = check_export(model, onnx_model, photos)
    assert result.ok, result.lines
    assert sum(int(line.split()[2]) for line in result.lines if line.startswith("image ")) > 0  # detections compared
    assert tuple(model.transform.fixed_size) == (96, 96)


def test_classifier_check_tolerates_float32_rounding_of_large_logits(tmp_path, photos):
    """Logits in the thousands differ by float32 rounding (~1e-3) between onnxruntime and PyTorch: that passes
    (tolerance ``1e-4 + 1e-5 * max|logit|``), a fixed ``1e-4`` would not."""
    model = _resnet(64, 73)
    with torch.no_grad():
        model.fc.weight.mul_(3000)
    onnx_model = load_onnx(export_onnx(model, tmp_path / "big.onnx"))
    x = torch.stack([onnx_model.eval_transforms()((p * 255).to(torch.uint8)) for p in photos])
    with torch.no_grad():
        assert float(model(x).abs().max()) > 1000
    result = check_export(model, onnx_model, photos)
    assert result.ok, result.lines


def test_classifier_check_reports_top5_and_logits_separately(c64, photos):
    """Every logit shifted by 0.01 (a different model): the same top-5 everywhere, the logits out of tolerance."""
    model, path = copy.deepcopy(c64[0]), c64[1]
    with torch.no_grad():
        model.fc.bias.add_(0.01)
    result = check_export(model, load_onnx(path), photos)
    assert not result.ok
    assert result.lines[-1].endswith("on every image: False, top-5 identical on every image: True"), result.lines
    assert all("top-5 same" in line and line.endswith("<- FAIL") for line in result.lines[:-1])


def test_opset_above_the_exporters_is_refused_before_tracing(tmp_path, monkeypatch):
    from torch.onnx import _constants

    top = getattr(_constants, "ONNX_TORCHSCRIPT_EXPORTER_MAX_OPSET", 20)
    assert max_opset() == top
    with pytest.raises(ValueError, match=rf"opset must be in \[17, {top}\] .*, got {top + 1}"):
        export_onnx(_resnet(64, 73), tmp_path / "o.onnx", opset=top + 1)
    assert not (tmp_path / "o.onnx").exists()
    monkeypatch.delattr(_constants, "ONNX_TORCHSCRIPT_EXPORTER_MAX_OPSET", raising=False)  # a torch without it
    assert max_opset() == 20
