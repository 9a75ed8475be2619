"""torchvision's R-CNN state dicts load unchanged into ours and give the same detections (exact fp32 path), and the
fast path keeps those detections on the CPU in float32."""

from __future__ import annotations

import pytest
import torch
import torchvision.models.detection as tvd

import vision
from vision.registry import MODELS

NAMES = ["fasterrcnn_resnet50_fpn", "fasterrcnn_resnet50_fpn_v2", "maskrcnn_resnet50_fpn", "maskrcnn_resnet50_fpn_v2"]
# small inputs and few proposals keep this fast; a score threshold of 0 keeps random-weight detections to compare
SETTINGS = {
    "min_size": 160,
    "max_size": 224,
    "rpn_pre_nms_top_n_test": 300,
    "rpn_post_nms_top_n_test": 100,
    "box_score_thresh": 0.0,
    "box_detections_per_img": 50,
}


def _count(model: torch.nn.Module) -> int:
    return sum(p.numel() for p in model.parameters())


@pytest.fixture(scope="module", params=NAMES)
def pair(request):
    name = request.param
    torch.manual_seed(0)
    ref = getattr(tvd, name)(weights=None, weights_backbone=None, **SETTINGS).eval()
    ours = vision.create_model(name, **SETTINGS).eval()
    return name, ref, ours


def test_state_dict_loads_unchanged_and_detections_match(pair, photos):
    name, ref, ours = pair
    photos = photos[1:]  # coffee 400x600, chelsea 300x451
    assert list(ours.state_dict()) == list(ref.state_dict())
    assert _count(ours) == _count(ref)
    result = ours.load_state_dict(ref.state_dict(), strict=True)
    assert not result.missing_keys and not result.unexpected_keys
    with torch.no_grad():
        expected = ref(photos)
        exact = ours.predict(photos, fast=False)
        fast = ours.predict(photos, fast=True)
    for img, e, x, f in zip(photos, expected, exact, fast):
        assert len(e["boxes"]) > 0, "random weights gave no detections to compare"
        for key in ("boxes", "scores", "labels"):  # the exact path is torchvision's, bit for bit
            assert torch.equal(x[key], e[key]), f"{name}: {key} differ"
        assert x["boxes"].dtype == torch.float32 and x["labels"].dtype == torch.int64
        # fast path, float32 on the CPU: the same detections (NMS keeps the same sets, same order)
        assert torch.equal(f["labels"], e["labels"])
        torch.testing.assert_close(f["boxes"], e["boxes"], rtol=0, atol=1e-4)
        torch.testing.assert_close(f["scores"], e["scores"], rtol=0, atol=1e-6)
        if "masks" in e:
            assert torch.equal(x["masks"], e["masks"])
            assert f["masks"].shape == e["masks"].shape == (len(e["boxes"]), 1, *img.shape[-2:])
            torch.testing.assert_close(f["masks"], e["masks"], rtol=0, atol=2e-5)


def test_weights_of_ours_load_into_torchvision(pair):
    """The other direction (benchmarks compare torchvision with weights trained by our engine): same keys, shapes."""
    _, ref, ours = pair
    result = ref.load_state_dict(ours.state_dict(), strict=True)
    assert not result.missing_keys and not result.unexpected_keys


def test_eval_forward_is_predict_and_train_forward_is_loss(photos):
    model = vision.create_model(
        "faster_rcnn", backbone="resnet18", num_classes=3, min_size=96, max_size=128, box_score_thresh=0.0
    ).eval()  # a score threshold of 0: random weights still give detections to compare
    image = photos[2]
    with torch.no_grad():
        a, b = model([image]), model.predict(image[None])
    assert len(a) == len(b) == 1 and len(a[0]["boxes"]) > 0
    for key in ("boxes", "scores", "labels"):
        assert torch.equal(a[0][key], b[0][key]), key
    model.train()
    losses = model([image], [{"boxes": torch.tensor([[10.0, 20.0, 100.0, 120.0]]), "labels": torch.tensor([2])}])
    assert set(losses) == {"loss_classifier", "loss_box_reg", "loss_objectness", "loss_rpn_box_reg"}
    with pytest.raises(ValueError, match="needs targets"):
        model([image])
    with pytest.raises(ValueError, match=r"\[1, 2\]"):  # label 0 is the background
        model.loss([image], [{"boxes": torch.tensor([[10.0, 20.0, 100.0, 120.0]]), "labels": torch.tensor([0])}])


# torchvision's published COCO weights: file name (its SHA-256 prefix after the dash), parameters, COCO-val2017 box mAP
PUBLISHED = {
    "fasterrcnn_resnet50_fpn": ("fasterrcnn_resnet50_fpn_coco-258fb6c6.pth", 41_755_286, 37.0),
    "fasterrcnn_resnet50_fpn_v2": ("fasterrcnn_resnet50_fpn_v2_coco-dd69338a.pth", 43_712_278, 46.7),
    "maskrcnn_resnet50_fpn": ("maskrcnn_resnet50_fpn_coco-bf2d0c1e.pth", 44_401_393, 37.9),
    "maskrcnn_resnet50_fpn_v2": ("maskrcnn_resnet50_fpn_v2_coco-73cbd019.pth", 46_359_409, 47.4),
}


@pytest.mark.parametrize("name", NAMES)
def test_coco_cards_describe_the_model(name):
    entry = MODELS.get(name)
    card = entry.cards["tv_coco"]
    file, num_params, box_map = PUBLISHED[name]
    assert "background_class" in entry.tags and entry.task == "detection"
    model = entry.builder(card=card)  # the architecture the weights load into (nothing downloaded)
    assert _count(model) == card.num_params == num_params
    assert model.num_classes == 91  # COCO's 90 category ids + the background
    assert card.categories[0] == "__background__" and card.categories[1] == "person"
    assert card.categories[-1] == "toothbrush"
    assert model.categories == list(card.categories[1:])  # data-set labels: model label - 1
    assert card.url == f"https://download.pytorch.org/models/{file}"
    assert card.sha256 == file.removesuffix(".pth").rsplit("-", 1)[1]
    assert card.metrics["COCO-val2017"]["box_map"] == box_map
    if not name.endswith("_v2"):  # torchvision's v1 COCO weights run with FrozenBatchNorm2d(eps=0)
        eps = {m.eps for m in model.modules() if type(m).__name__ == "FrozenBatchNorm2d"}
        assert eps == {0.0}


def _trainable(model: torch.nn.Module) -> set[str]:
    return {n for n, p in model.named_parameters() if p.requires_grad}


def test_torchvision_style_arguments():
    # without any weights torchvision warns and trains all five layers (freezing random layers makes no sense)
    with pytest.warns(UserWarning, match="trainable_backbone_layers=2 has no effect"):
        model = vision.create_model("fasterrcnn_resnet50_fpn", num_classes=5, trainable_backbone_layers=2, min_size=300)
    assert model.num_classes == 5 and model.transform.min_size == (300,)
    with pytest.warns(UserWarning, match="trainable_backbone_layers"):
        ref = tvd.fasterrcnn_resnet50_fpn(
            weights=None, weights_backbone=None, num_classes=5, trainable_backbone_layers=2
        )
    assert _trainable(model) == _trainable(ref)
    assert all(p.requires_grad for p in model.backbone.body.parameters())
    with pytest.raises(ValueError, match="trainable_backbone_layers"):
        vision.create_model("fasterrcnn_resnet50_fpn", trainable_backbone_layers=6)


def _pretrained_style_torchvision(num_classes: int, trainable_layers: int = 3) -> torch.nn.Module:
    """torchvision's fasterrcnn_resnet50_fpn as its builder makes it for pretrained weights (FrozenBatchNorm2d, three
    trainable layers), without downloading anything."""
    from torchvision.models import resnet50
    from torchvision.models.detection.backbone_utils import _resnet_fpn_extractor
    from torchvision.ops.misc import FrozenBatchNorm2d

    body = _resnet_fpn_extractor(resnet50(weights=None, norm_layer=FrozenBatchNorm2d), trainable_layers)
    return tvd.FasterRCNN(body, num_classes=num_classes, **SETTINGS)


def test_weights_file_builds_the_pretrained_architecture(tmp_path, photos):
    """``weights=<file>`` behaves like torchvision's pretrained weights: FrozenBatchNorm2d, three trainable layers,
    and the detections of torchvision's pretrained-style model with the same state dict."""
    torch.manual_seed(1)
    ref = _pretrained_style_torchvision(num_classes=5).eval()
    with torch.no_grad():  # non-trivial frozen statistics, so a trainable BatchNorm (or another eps) would show
        for m in ref.modules():
            if type(m).__name__ == "FrozenBatchNorm2d":
                m.running_mean.uniform_(-0.1, 0.1)
                m.running_var.uniform_(0.5, 1.5)
    path = tmp_path / "frcnn.pth"
    torch.save(ref.state_dict(), path)
    ours = vision.create_model("fasterrcnn_resnet50_fpn", weights=str(path), num_classes=5, **SETTINGS).eval()
    norms = [type(m).__name__ for m in ours.backbone.body.modules() if "BatchNorm" in type(m).__name__]
    assert norms and set(norms) == {"FrozenBatchNorm2d"}
    assert _trainable(ours) == _trainable(ref)
    assert all(torch.equal(v, ref.state_dict()[k]) for k, v in ours.state_dict().items())
    with torch.no_grad():
        expected = ref(photos[1:])
        got = ours.predict(photos[1:], fast=False)
    for e, g in zip(expected, got):
        assert len(e["boxes"]) > 0
        for key in ("boxes", "scores", "labels"):
            assert torch.equal(g[key], e[key]), key
    # trainable_backbone_layers applies with weights, as in torchvision
    two = vision.create_model("fasterrcnn_resnet50_fpn", weights=str(path), num_classes=5, trainable_backbone_layers=2)
    assert _trainable(two) == _trainable(_pretrained_style_torchvision(num_classes=5, trainable_layers=2))


def test_weights_file_of_torchvision_loads_through_create_model(tmp_path):
    torch.manual_seed(0)
    ref = tvd.fasterrcnn_resnet50_fpn(weights=None, weights_backbone=None, num_classes=5)
    path = tmp_path / "tv_frcnn.pth"
    torch.save(ref.state_dict(), path)
    ours = vision.create_model("fasterrcnn_resnet50_fpn", weights=str(path), num_classes=5)
    assert all(torch.equal(v, ref.state_dict()[k]) for k, v in ours.state_dict().items())
    with pytest.warns(UserWarning, match="box_predictor"):  # another num_classes: the class layers start fresh
        other = vision.create_model("fasterrcnn_resnet50_fpn", weights=str(path), num_classes=3)
    assert other.num_classes == 3
    assert torch.equal(
        other.state_dict()["backbone.fpn.inner_blocks.0.0.weight"],
        ref.state_dict()["backbone.fpn.inner_blocks.0.0.weight"],
    )
