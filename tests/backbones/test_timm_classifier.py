"""timm classifiers and weights: input sizes, heads of another size, ``VISION_OFFLINE`` (vision/backbones/timm.py,
vision/backbones/_timm_build.py, TimmClassifier in vision/backbones/classifier.py)."""

from __future__ import annotations

import os
import subprocess
import sys
import time
from pathlib import Path

import pytest
import timm
import torch

import vision
from vision.hub.download import DownloadError, OfflineError

ROOT = Path(__file__).resolve().parents[2]


def test_a_vit_classifier_takes_any_size_and_equals_timm_at_its_own():
    model = vision.create_model("timm/vit_tiny_patch16_224", num_classes=5).eval()
    ref = timm.create_model("vit_tiny_patch16_224", num_classes=5).eval()
    ref.load_state_dict(model.model.state_dict())
    x = torch.rand(2, 3, 224, 224)
    with torch.no_grad():
        assert torch.allclose(model(x), ref(x), atol=1e-5)
        for H, W in ((128, 128), (97, 131)):
            assert model(torch.rand(1, 3, H, W)).shape == (1, 5)


def test_a_fixed_size_classifier_names_the_size_it_needs():
    model = vision.create_model("timm/levit_128s", num_classes=3).eval()
    with torch.no_grad(), pytest.raises(ValueError, match=r"timm/levit_128s cannot take a 128x128 input.*224x224"):
        model(torch.rand(1, 3, 128, 128))


def test_weights_with_another_number_of_classes_drop_the_head_with_a_warning(tmp_path):
    src = timm.create_model("resnet18")
    path = tmp_path / "r18.pth"
    torch.save(src.state_dict(), path)
    with pytest.warns(UserWarning, match="model.fc"):
        model = vision.create_model("timm/resnet18", weights=str(path), num_classes=10)
    assert model.classifier_prefixes == ("model.fc.",)
    assert model.new_head_prefixes == ("model.fc",)
    assert torch.equal(model.model.layer4[1].conv2.weight, src.layer4[1].conv2.weight)
    assert model.model.fc.out_features == 10


def _fake_hub_cache(root: Path, repo: str, state: dict[str, torch.Tensor]) -> None:
    from safetensors.torch import save_file

    folder = root / f"models--{repo.replace('/', '--')}"
    commit = "0" * 40
    (folder / "refs").mkdir(parents=True)
    (folder / "refs" / "main").write_text(commit)
    (folder / "snapshots" / commit).mkdir(parents=True)
    save_file({k: v.contiguous() for k, v in state.items()}, folder / "snapshots" / commit / "model.safetensors")


def test_offline_timm_weights_come_from_the_local_hub_cache_or_fail_naming_the_model(tmp_path, monkeypatch):
    from huggingface_hub import constants

    monkeypatch.setenv("VISION_OFFLINE", "1")
    monkeypatch.setenv("TORCH_HOME", str(tmp_path / "torch"))  # nor a copy of timm's release URL
    monkeypatch.setattr(constants, "HF_HUB_CACHE", str(tmp_path))
    with pytest.raises(OfflineError, match=r"timm/lcnet_050\.ra2_in1k .*not in the local cache"):
        vision.create_model("timm/lcnet_050", weights="ra2_in1k")
    state = timm.create_model("lcnet_050").state_dict()
    release = tmp_path / "torch" / "hub" / "checkpoints" / "lcnet_050-f447553b.pth"  # timm's older source
    release.parent.mkdir(parents=True)
    torch.save(state, release)
    assert torch.equal(
        vision.create_model("timm/lcnet_050", weights=True).model.conv_stem.weight, state["conv_stem.weight"]
    )
    release.unlink()
    _fake_hub_cache(tmp_path, "timm/lcnet_050.ra2_in1k", state)
    classifier = vision.create_model("timm/lcnet_050", weights="ra2_in1k")
    backbone = vision.create_backbone("timm/lcnet_050.ra2_in1k")
    for conv in (classifier.model.conv_stem, backbone.body.conv_stem):
        assert torch.equal(conv.weight, state["conv_stem.weight"])


def test_offline_with_an_empty_hf_home_fails_fast_naming_the_model(tmp_path):
    env = {**os.environ, "VISION_OFFLINE": "1", "HF_HOME": str(tmp_path / "hf"), "TORCH_HOME": str(tmp_path / "t")}
    env.pop("HF_HUB_CACHE", None)
    code = "import vision; vision.create_model('timm/lcnet_050', weights='ra2_in1k')"
    start = time.monotonic()
    run = subprocess.run([sys.executable, "-c", code], env=env, cwd=ROOT, capture_output=True, text=True, timeout=120)
    assert run.returncode != 0
    assert time.monotonic() - start < 60
    last = run.stderr.strip().splitlines()[-1]
    assert "OfflineError" in last and "timm/lcnet_050.ra2_in1k" in last and "not in the local cache" in last, last
    assert str(tmp_path / "hf" / "hub") in last


def test_a_hub_failure_names_the_timm_model(monkeypatch):
    from huggingface_hub.errors import LocalEntryNotFoundError

    def unreachable(*args, **kwargs):
        raise LocalEntryNotFoundError("An error happened while trying to locate the file on the Hub.")

    monkeypatch.delenv("VISION_OFFLINE", raising=False)
    monkeypatch.setattr("timm.models._hub.hf_hub_download", unreachable)
    with pytest.raises(DownloadError, match=r"timm/lcnet_050\.ra2_in1k from the Hugging Face hub"):
        vision.create_model("timm/lcnet_050", weights="ra2_in1k")


def test_an_unknown_timm_tag_lists_the_known_ones():
    with pytest.raises(ValueError, match=r"timm/lcnet_050\.bogus has no pretrained weights.*ra2_in1k"):
        vision.create_model("timm/lcnet_050", weights="bogus")
