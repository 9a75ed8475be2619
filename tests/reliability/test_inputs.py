"""Issue 13, class 2 (silent wrong models): detectors and classifiers refuse float images outside [0, 1] (0..255
floats) with a message saying how to convert, instead of predicting on them; one host read per batch."""

from __future__ import annotations

import pytest
import torch

import vision
from vision.models.detection.common import as_image_list
from vision.ops.image_range import check_unit_range

TINY_RCNN = {"min_size": 96, "max_size": 128, "fpn_channels": 32, "representation_size": 64,
             "rpn_pre_nms_top_n_test": 100, "rpn_post_nms_top_n_test": 32, "box_detections_per_img": 20}  # fmt: skip


def _images(n: int = 2, size: int = 64, seed: int = 0) -> torch.Tensor:
    return torch.rand(n, 3, size, size, generator=torch.Generator().manual_seed(seed))


@pytest.fixture(scope="module")
def yolo():
    torch.manual_seed(0)
    return vision.create_model("yolo_n", num_classes=3, imgsz=64).eval()


def test_yolo_refuses_0_255_floats_batch_and_list(yolo):
    x = _images()
    yolo.predict(x)  # [0, 1]: fine
    yolo.predict((x * 255).round().to(torch.uint8))  # uint8: fine
    for bad in (x * 255, list(x * 255)):
        with pytest.raises(ValueError, match=r"image 0: float values in \[.*\] are outside \[0, 1\].*x / 255"):
            yolo.predict(bad)


def test_yolo_loss_on_cpu_refuses_0_255_floats(yolo):
    target = [{"boxes": torch.tensor([[4.0, 4.0, 30.0, 30.0]]), "labels": torch.tensor([1])}] * 2
    yolo.train()
    try:
        with pytest.raises(ValueError, match=r"x / 255"):
            yolo.loss(_images() * 255, target)
        assert torch.isfinite(sum(yolo.loss(_images(), target).values()))
    finally:
        yolo.eval()


def test_rcnn_and_ssd_refuse_0_255_floats():
    torch.manual_seed(0)
    rcnn = vision.create_model("faster_rcnn", backbone="resnet18", num_classes=4, **TINY_RCNN).eval()
    ssd = vision.create_model("ssd", backbone="resnet18", num_classes=4, size=96).eval()
    x = _images(1, 96)
    for model in (rcnn, ssd):
        model.predict(x)
        with pytest.raises(ValueError, match=r"outside \[0, 1\].*x / 255"):
            model.predict(x * 255)


def test_the_offending_image_is_named_and_negative_values_refused():
    images = [torch.rand(3, 8, 8), torch.rand(3, 9, 7) - 0.5]
    with pytest.raises(ValueError, match=r"image 1: float values in \[-0\.\d+, .*\] are outside \[0, 1\]"):
        as_image_list(images)
    as_image_list([torch.rand(3, 8, 8), torch.ones(3, 5, 5) * 1.001])  # interpolation overshoot is tolerated


def test_one_host_read_per_batch(monkeypatch):
    reads = []
    real_tolist, real_item = torch.Tensor.tolist, torch.Tensor.item
    monkeypatch.setattr(torch.Tensor, "tolist", lambda self: reads.append("tolist") or real_tolist(self))
    monkeypatch.setattr(torch.Tensor, "item", lambda self: reads.append("item") or real_item(self))
    check_unit_range([torch.rand(3, 8, 8) for _ in range(16)])
    check_unit_range(torch.rand(16, 3, 8, 8))
    assert reads == ["tolist", "tolist"]


def test_classifier_predict_refuses_unnormalised_pixels():
    torch.manual_seed(0)
    model = vision.create_model("resnet18", num_classes=5).eval()
    image = (_images(1, 32)[0] * 255).round().to(torch.uint8)
    x = model.eval_transforms()(image)[None]
    assert len(model.predict(x, topk=2)[0]) == 2
    with pytest.raises(ValueError, match=r"cannot be a normalised image.*eval_transforms"):
        model.predict(image[None].float())


def test_an_image_with_a_nan_value_is_refused_not_predicted_on(yolo):
    x = _images(3)
    x[1, 2, 5, 7] = float("nan")
    for bad in (x, list(x)):
        with pytest.raises(ValueError, match=r"^image 1: its values include NaN"):
            yolo.predict(bad)
    classifier = vision.create_model("resnet18", num_classes=5).eval()
    batch = classifier.eval_transforms()((_images(1, 32)[0] * 255).round().to(torch.uint8))[None].repeat(2, 1, 1, 1)
    batch[1, 0, 0, 0] = float("nan")
    with pytest.raises(ValueError, match=r"^image 1: its values include NaN"):
        classifier.predict(batch)
