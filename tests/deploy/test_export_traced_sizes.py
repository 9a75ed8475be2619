"""What the ONNX exporter used to bake in or refuse: backbone alignment that must follow the input size (R-CNN files
take any size), adaptive average pools with uneven bins (AlexNet / VGG classifiers off 224 px), timm ViT position
embeddings resampled with antialiased bicubic (ViT detectors), and the exporter's graph dump on failure. Each file is
compared with the PyTorch model by onnxruntime."""

from __future__ import annotations

import io

import numpy as np
import pytest
import torch
import torch.nn.functional as F
from torch import nn

import vision

pytest.importorskip("onnxruntime")
pytest.importorskip("skimage")

import onnxruntime as ort

from vision.cli.export import _sample_photos
from vision.deploy import check_export, export_onnx, load_onnx
from vision.deploy._traceable import FixedAdaptiveAvgPool2d, traceable


@pytest.fixture(scope="module")
def photos() -> list[torch.Tensor]:
    """Three real photos, float [3, H, W] in [0, 1]."""
    return [p.float() / 255 for p in _sample_photos()[:3]]


def _relative_error(ref: torch.Tensor, got: np.ndarray) -> float:
    return float(np.abs(ref.numpy() - got).max() / max(float(ref.abs().max()), 1e-12))


class _Features(nn.Module):
    """A backbone's feature maps as a tuple (what an ONNX graph returns)."""

    def __init__(self, backbone: nn.Module) -> None:
        super().__init__()
        self.backbone = backbone

    def forward(self, x: torch.Tensor) -> tuple[torch.Tensor, ...]:
        return tuple(self.backbone(x).values())


@pytest.mark.parametrize("name", ["alexnet", pytest.param("inception_v3", marks=pytest.mark.slow)])
def test_aligned_maps_follow_the_input_size_of_a_traced_graph(name):
    """AlexNet's and Inception's raw maps are smaller than ceil(H / stride) and are resized to it: traced at 96 px,
    the graph must resize to each input's own size (it baked 96 px's in), as in PyTorch."""
    torch.manual_seed(0)
    graph = _Features(vision.create_backbone(name).eval()).eval()
    buf = io.BytesIO()
    with torch.no_grad():
        torch.onnx.export(graph, (torch.rand(1, 3, 96, 96),), buf, input_names=["x"], opset_version=17,
                          dynamic_axes={"x": {2: "h", 3: "w"}}, dynamo=False)  # fmt: skip
    session = ort.InferenceSession(buf.getvalue(), providers=["CPUExecutionProvider"])
    for hw in [(128, 160), (160, 96)]:  # an R-CNN pads its input to a multiple of the largest stride
        x = torch.rand(1, 3, *hw)
        with torch.no_grad():
            ref = graph(x)
        got = session.run(None, {"x": x.numpy()})
        assert [tuple(g.shape) for g in got] == [tuple(r.shape) for r in ref]
        assert max(_relative_error(r, g) for r, g in zip(ref, got)) < 1e-5


def test_rcnn_with_an_aligned_backbone_takes_any_image_size(tmp_path, photos):
    """The reproduction: Faster R-CNN on AlexNet exported at 160 px failed on a 160 x 200 image (min IoU 0.017).
    The 400 x 600 photo is resized by 0.4 exactly (see the next test)."""
    torch.manual_seed(0)
    model = vision.create_model("faster_rcnn", backbone="alexnet", num_classes=4, min_size=160, max_size=256).eval()
    onnx_model = load_onnx(export_onnx(model, tmp_path / "frcnn_alexnet.onnx", imgsz=160))
    images = [F.interpolate(photos[0][None], size=hw, mode="bilinear")[0] for hw in [(160, 200), (200, 160)]]
    assert tuple(photos[2].shape[-2:]) == (400, 600)
    result = check_export(model, onnx_model, [*images, photos[2]])
    assert result.ok and result.compared, result.lines


class _Resize(nn.Module):
    """An R-CNN's input transform: one image [3, H, W] -> the resized, normalised, padded batch."""

    def __init__(self, transform: nn.Module) -> None:
        super().__init__()
        self.transform = transform

    def forward(self, image: torch.Tensor) -> torch.Tensor:
        return self.transform([image])[0].tensors


@pytest.mark.parametrize(
    ("sizes", "hw"), [((160, 256), (400, 600)), ((800, 1333), (375, 500)), ((800, 1333), (427, 640))]
)
def test_rcnn_file_resizes_each_image_to_pytorchs_size(sizes, hw):
    """torchvision's traced resize computed ``min_size * (1 / short)`` in float32: 400 x 600 at min_size 160 became
    159 x 239, not 160 x 240 (and 375 x 500 at 800: 799 rows), so every detection moved."""
    from torchvision.models.detection.transform import GeneralizedRCNNTransform

    graph = _Resize(GeneralizedRCNNTransform(sizes[0], sizes[1], [0.5] * 3, [0.25] * 3)).eval()
    buf = io.BytesIO()
    with torch.no_grad(), traceable(graph, torch.rand(3, 64, 64), dynamic_size=True, opset=17, name="resize"):
        torch.onnx.export(graph, (torch.rand(3, 64, 64),), buf, input_names=["x"], opset_version=17,
                          dynamic_axes={"x": {1: "h", 2: "w"}}, dynamo=False)  # fmt: skip
    x = torch.rand(3, *hw)
    got = ort.InferenceSession(buf.getvalue(), providers=["CPUExecutionProvider"]).run(None, {"x": x.numpy()})[0]
    with torch.no_grad():
        ref = graph(x)
    assert got.shape == tuple(ref.shape) and np.abs(got - ref.numpy()).max() < 1e-3


@pytest.mark.parametrize(("n_in", "n_out"), [(3, 6), (4, 7), (5, 3), (7, 7), (13, 6), (10, 4), (1, 5)])
def test_fixed_adaptive_pool_has_pytorchs_bins(n_in, n_out):
    x = torch.randn(2, 3, n_in, n_in + 2)
    pool = nn.AdaptiveAvgPool2d((n_out, n_out + 1))
    fixed = FixedAdaptiveAvgPool2d((n_in, n_in + 2), (n_out, n_out + 1))
    torch.testing.assert_close(fixed(x), pool(x), rtol=1e-6, atol=1e-6)


def test_uneven_adaptive_pool_exports_and_matches_onnxruntime():
    """A 6 x 6 pool of a 3 x 3 map (AlexNet at 128 px) and a 7 x 7 pool of a 5 x 5 one, on activations of a few
    units: onnxruntime's output equals PyTorch's; the module is restored afterwards."""
    torch.manual_seed(0)
    graph = nn.Sequential(nn.Conv2d(3, 4, 3, stride=2), nn.AdaptiveAvgPool2d((6, 6)), nn.Conv2d(4, 4, 3, padding=1),
                          nn.AdaptiveAvgPool2d(7)).eval()  # fmt: skip
    x = torch.randn(1, 3, 7, 7) * 3
    buf = io.BytesIO()
    with torch.no_grad(), traceable(graph, x, dynamic_size=False, opset=17, name="pools"):
        torch.onnx.export(graph, (x,), buf, input_names=["x"], opset_version=17, dynamo=False)
    assert isinstance(graph[1], nn.AdaptiveAvgPool2d) and isinstance(graph[3], nn.AdaptiveAvgPool2d)
    got = ort.InferenceSession(buf.getvalue(), providers=["CPUExecutionProvider"]).run(None, {"x": x.numpy()})[0]
    with torch.no_grad():
        assert _relative_error(graph(x), got) < 1e-6


@pytest.mark.parametrize(("name", "size"), [("alexnet", 128), pytest.param("vgg11", 96, marks=pytest.mark.slow)])
def test_alexnet_and_vgg_classifiers_export_off_224(tmp_path, photos, name, size):
    """``vision export model=alexnet imgsz=128`` failed (adaptive_avg_pool2d with uneven bins)."""
    torch.manual_seed(0)
    model = vision.create_model(name, num_classes=10).eval()
    onnx_model = load_onnx(export_onnx(model, tmp_path / f"{name}.onnx", imgsz=size))
    assert isinstance(model.avgpool, nn.AdaptiveAvgPool2d)
    assert check_export(model, onnx_model, photos).ok
    x = torch.randn(2, 3, size, size)
    with torch.no_grad():
        assert _relative_error(model(x), onnx_model(x).numpy()) < 1e-5


def _vit_detector(head: str, **kwargs: object) -> nn.Module:
    torch.manual_seed(0)
    return vision.create_model(head, backbone="timm/vit_tiny_patch16_224", num_classes=4, **kwargs).eval()


@pytest.mark.slow
@pytest.mark.parametrize(("head", "kwargs"), [("yolo", {"imgsz": 160}), ("ssd", {"size": 160})])
def test_vit_detectors_export_at_a_fixed_size(tmp_path, photos, head, kwargs):
    """The position embedding (224 px: 14 x 14) is resampled once for the 160 px grid (10 x 10, a shrink, where
    the antialiasing matters) and written as a constant."""
    model = _vit_detector(head, **kwargs)
    onnx_model = load_onnx(export_onnx(model, tmp_path / f"{head}.onnx", imgsz=160, score_threshold=0.0))
    result = check_export(model, onnx_model, photos)
    assert result.ok and result.compared, result.lines


def test_vit_rcnn_at_opset_17_is_refused_in_one_line(tmp_path):
    model = _vit_detector("faster_rcnn", min_size=160, max_size=256)
    with pytest.raises(ValueError, match=r"opset=18") as err:
        export_onnx(model, tmp_path / "vit_rcnn.onnx", imgsz=160)
    assert "\n" not in str(err.value) and not (tmp_path / "vit_rcnn.onnx").exists()


@pytest.mark.slow
def test_vit_rcnn_at_opset_18_takes_any_image_size(tmp_path, photos):
    """The embedding is resampled inside the graph (antialiased cubic Resize) for each image's grid: larger and
    smaller than the embedding's own 14 x 14."""
    model = _vit_detector("faster_rcnn", min_size=160, max_size=256, box_score_thresh=0.0)
    onnx_model = load_onnx(export_onnx(model, tmp_path / "vit_rcnn.onnx", imgsz=160, opset=18))
    images = [F.interpolate(photos[0][None], size=hw, mode="bilinear")[0] for hw in [(160, 200), (300, 400), (80, 250)]]
    result = check_export(model, onnx_model, images)
    assert result.ok and result.compared, result.lines


def _unexportable(model: nn.Module) -> nn.Module:
    """``model`` with an antialiased bicubic resize in front (an operator the exporter has no ONNX for)."""
    forward = model.forward
    model.forward = lambda x: forward(F.interpolate(x, scale_factor=0.5, mode="bicubic", antialias=True))
    return model


def test_exporter_failure_is_one_line_without_the_graph_dump(tmp_path, capfd):
    model = _unexportable(vision.create_model("resnet18", num_classes=3).eval())
    with pytest.raises(ValueError, match="_upsample_bicubic2d_aa") as err:
        export_onnx(model, tmp_path / "x.onnx", imgsz=64)
    out, errs = capfd.readouterr()
    assert "graph(" not in out + errs and "Torch IR" not in out + errs
    message = str(err.value)
    assert message.startswith("cannot export resnet18 to ONNX (opset 17): ") and "_upsample_bicubic2d_aa" in message
    assert "\n" not in message and "pull request" not in message


def test_cli_export_failure_is_one_error_line(tmp_path, capfd, monkeypatch):
    from vision.cli.export import main

    model = _unexportable(vision.create_model("resnet18", num_classes=3).eval())
    monkeypatch.setattr(vision, "load_model", lambda *args, **kwargs: model)
    with pytest.raises(SystemExit) as stop:
        main(["model=resnet18", "imgsz=64", "check_images=1", f"file={tmp_path / 'x.onnx'}"])
    out, errs = capfd.readouterr()
    assert stop.value.code == 2
    assert out == "" and errs.count("\n") == 1 and errs.startswith("error: cannot export resnet18 to ONNX")
