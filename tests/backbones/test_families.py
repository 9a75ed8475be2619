"""Every registered variant of the five families against its torchvision (or timm) reference.

- parameter count equals the reference builder's (and the papers' headline numbers);
- with the same state dict, logits equal the reference's (max abs diff <= 1e-5, fp32);
- every card's ``num_params`` and ``categories`` describe the model the builder makes.
"""

from __future__ import annotations

import pytest
import timm
import torch
import torchvision

import vision
from vision.registry import BACKBONES

FAMILY_PREFIXES = ("alexnet", "vgg", "resnet", "resnext", "wide_resnet", "inception", "efficientnet")
VARIANTS = sorted(n for n in BACKBONES.names() if n.startswith(FAMILY_PREFIXES))
BIG = {
    "efficientnet_b7",
    "efficientnet_b6",
    "efficientnet_v2_l",
    "efficientnet_v2_m",
    "vgg19",
    "vgg19_bn",
    "wide_resnet101_2",
    "resnext101_64x4d",
    "resnext101_32x8d",
    "resnet152",
}


def _reference(name: str) -> torch.nn.Module:
    if name.startswith("efficientnet_lite"):
        return timm.create_model(f"tf_{name}", pretrained=False)
    kwargs = {"init_weights": False} if name == "inception_v3" else {}
    return getattr(torchvision.models, name)(weights=None, **kwargs)


def _count(model: torch.nn.Module) -> int:
    return sum(p.numel() for p in model.parameters())


def test_all_families_are_registered():
    for expected in (
        "alexnet",
        "vgg11",
        "vgg11_bn",
        "vgg13",
        "vgg13_bn",
        "vgg16",
        "vgg16_bn",
        "vgg19",
        "vgg19_bn",
        "resnet18",
        "resnet34",
        "resnet50",
        "resnet101",
        "resnet152",
        "resnext50_32x4d",
        "resnext101_32x8d",
        "resnext101_64x4d",
        "wide_resnet50_2",
        "wide_resnet101_2",
        "inception_v3",
        *(f"efficientnet_b{i}" for i in range(8)),
        "efficientnet_v2_s",
        "efficientnet_v2_m",
        "efficientnet_v2_l",
        *(f"efficientnet_lite{i}" for i in range(5)),
    ):
        assert expected in VARIANTS


@pytest.mark.parametrize("name", VARIANTS, ids=VARIANTS)
def test_params_and_logits_match_reference(name, request):
    if name in BIG:
        request.applymarker(pytest.mark.slow)
    torch.manual_seed(0)
    ref = _reference(name).eval()
    ours = vision.create_model(name).eval()
    assert _count(ours) == _count(ref)
    missing, unexpected = ours.load_state_dict(ref.state_dict(), strict=True)
    assert not missing and not unexpected
    size = 96 if name == "inception_v3" else 64
    x = torch.randn(2, 3, size, size)
    with torch.no_grad():
        diff = (ours(x) - ref(x)).abs().max().item()
    assert diff <= 1e-5, f"{name}: logits differ by {diff}"
    for tag, card in BACKBONES.get(name).cards.items():
        assert card.num_params == _count(ours), f"{name}.{tag}: card num_params {card.num_params}"
        if card.categories is not None:
            assert len(card.categories) == card.num_classes == 1000


@pytest.mark.parametrize(
    ("name", "millions"),
    [("alexnet", 61.1), ("vgg16", 138.4), ("resnet50", 25.6), ("inception_v3", 27.2), ("efficientnet_b0", 5.3)],
)
def test_paper_parameter_counts(name, millions):
    assert round(_count(vision.create_model(name)) / 1e6, 1) == millions


def test_inception_training_mode_returns_logits_and_aux_loss():
    model = vision.create_model("inception_v3", num_classes=4).train()
    losses = model.loss((torch.randn(2, 3, 299, 299), torch.tensor([0, 3])))
    assert set(losses) == {"cls", "aux"}
    assert all(torch.isfinite(v) for v in losses.values())


def test_num_classes_replaces_head():
    model = vision.create_model("resnet18", num_classes=7)
    assert model.fc.out_features == 7
    assert model(torch.randn(1, 3, 64, 64)).shape == (1, 7)
    with pytest.raises(ValueError, match="num_classes"):
        vision.create_model("resnet18", num_classes=0)


def test_eval_transforms_follow_the_card():
    model = vision.create_model("efficientnet_b1")  # no weights: ImageNet defaults
    image = torch.randint(0, 256, (3, 300, 400), dtype=torch.uint8)
    assert model.eval_transforms()(image).shape == (3, 224, 224)
    card = vision.get_card("efficientnet_b1.tv2_in1k")
    model.card = card
    out = model.eval_transforms()(image)
    assert out.shape == (3, 240, 240) and out.dtype == torch.float32
    with pytest.raises(ValueError, match=r"\[3, H, W\]"):
        model.eval_transforms()(torch.zeros(2, 3, 4, 4))
