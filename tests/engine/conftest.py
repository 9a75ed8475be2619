"""A tiny classifier without batch norm, installed as a plugin so that subprocesses (torchrun) see it too."""

from __future__ import annotations

import importlib
import sys
import textwrap
from pathlib import Path

import pytest

PLUGIN = '''
import torch
from torch import nn

from vision.backbones.classifier import _ClassifierMixin
from vision.registry import MODELS


class TinyConvNet(_ClassifierMixin, nn.Module):
    """conv-GroupNorm-ReLU x2 -> pool -> linear; ``nan_at``: the loss is NaN from that call on (for tests)."""

    def __init__(self, num_classes=10, nan_at=-1, **kwargs):
        super().__init__()
        self.features = nn.Sequential(
            nn.Conv2d(3, 16, 3, padding=1), nn.GroupNorm(4, 16), nn.ReLU(),
            nn.Conv2d(16, 32, 3, stride=2, padding=1), nn.GroupNorm(4, 32), nn.ReLU(),
            nn.AdaptiveAvgPool2d(1), nn.Flatten())
        self.fc = nn.Linear(32, num_classes)
        self.num_classes = num_classes
        self.card = None
        self.categories = None
        self.nan_at = nan_at
        self.calls = 0

    def forward(self, x):
        return self.fc(self.features(x))

    def loss(self, batch, **kwargs):
        out = super().loss(batch, **kwargs)
        self.calls += 1
        if 0 <= self.nan_at < self.calls:
            out["cls"] = out["cls"] * float("nan")
        return out


if "tiny_convnet" not in MODELS._entries:
    @MODELS.register("tiny_convnet", tags={"classification"}, task="classification")
    def tiny_convnet(*, num_classes=10, card=None, **kwargs):
        return TinyConvNet(num_classes=num_classes, **kwargs)
'''


@pytest.fixture(scope="session")
def plugin_path(tmp_path_factory) -> Path:
    site = tmp_path_factory.mktemp("plugin_site")
    (site / "vz_testmodels.py").write_text(textwrap.dedent(PLUGIN))
    info = site / "vz_testmodels-1.0.dist-info"
    info.mkdir()
    (info / "METADATA").write_text("Metadata-Version: 2.1\nName: vz-testmodels\nVersion: 1.0\n")
    (info / "entry_points.txt").write_text("[vision.models]\nvz_testmodels = vz_testmodels\n")
    (info / "RECORD").write_text("")
    return site


@pytest.fixture
def tiny_model(plugin_path, monkeypatch):
    """Registers ``tiny_convnet`` in this process; returns the plugin folder (for PYTHONPATH of subprocesses)."""
    monkeypatch.syspath_prepend(str(plugin_path))
    importlib.invalidate_caches()
    importlib.import_module("vz_testmodels")
    yield plugin_path
    sys.modules.pop("vz_testmodels", None)
    from vision.registry import MODELS

    MODELS.unregister("tiny_convnet")
