"""Exact resume of a model whose training loss draws random numbers (dropout): the data loaders draw their seeds
from their own generators, never from the global stream a checkpoint restores, so a run resumed mid-epoch takes
the same draws as one never interrupted (issue: the resumed run's loader iterator shifted every later draw by one)."""

from __future__ import annotations

import shutil

import pytest
import torch
from safetensors.torch import load_file
from torch import nn

from vision.backbones.classifier import _ClassifierMixin
from vision.engine import Trainer
from vision.engine.checkpoint import load_resume_state
from vision.engine.config import resolve_args
from vision.registry import MODELS


class TinyDropNet(_ClassifierMixin, nn.Module):
    """conv-GroupNorm-ReLU -> pool -> dropout(0.5) -> linear: its training loss draws random numbers."""

    def __init__(self, num_classes: int = 10) -> None:
        super().__init__()
        self.features = nn.Sequential(
            nn.Conv2d(3, 8, 3, padding=1), nn.GroupNorm(2, 8), nn.ReLU(), nn.AdaptiveAvgPool2d(1), nn.Flatten()
        )
        self.drop = nn.Dropout(0.5)
        self.fc = nn.Linear(8, num_classes)
        self.num_classes, self.card, self.categories = num_classes, None, None

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return self.fc(self.drop(self.features(x)))


@pytest.fixture
def tiny_dropnet():
    @MODELS.register("tiny_dropnet", tags={"classification"}, task="classification")
    def tiny_dropnet(*, num_classes: int = 10, card=None, **kwargs) -> TinyDropNet:
        return TinyDropNet(num_classes=num_classes)

    yield
    MODELS.unregister("tiny_dropnet")


ARGS = ["model=tiny_dropnet", "data=digits", "imgsz=16", "batch=16", "fraction=0.1", "lr=0.05", "tensorboard=false",
        "plots=false", "epochs=2", "save_period=3", "device=cpu"]  # fmt: skip
BATCHES = int(0.1 * 1438) // 16  # 8 per epoch: units at steps 3, 6, 8 (end of epoch 1), 9, 12, 15 (mid-epoch 2)


def _same_weights(a_file, b_file) -> None:
    a, b = load_file(a_file), load_file(b_file)
    assert a.keys() == b.keys()
    for key in a:
        assert torch.equal(a[key], b[key]), key


@pytest.mark.parametrize("workers", [0, 1])
def test_a_dropout_model_killed_mid_epoch_resumes_to_identical_weights(tiny_dropnet, tmp_path, monkeypatch, workers):
    if workers:  # one training thread leaves the other core to the loader worker (else the trainer uses none)
        monkeypatch.setattr(torch, "get_num_threads", lambda: 1)
    extra = [f"workers={workers}", f"project={tmp_path}"]
    reference = Trainer(resolve_args([*ARGS, *extra, "name=ref"])).fit()
    again = Trainer(resolve_args([*ARGS, *extra, "name=again"])).fit()
    _same_weights(reference / "weights" / "last.safetensors", again / "weights" / "last.safetensors")

    trainer = Trainer(resolve_args([*ARGS, *extra, "name=cut"]))
    original = trainer.task.prepare_batch

    def dying(batch, device, *, train):
        if train and getattr(trainer, "step", 0) == 13:  # after the unit at step 12 (batch 4 of epoch 2)
            raise KeyboardInterrupt("simulated kill")
        return original(batch, device, train=train)

    monkeypatch.setattr(trainer.task, "prepare_batch", dying)
    with pytest.raises(KeyboardInterrupt):
        trainer.fit()
    monkeypatch.setattr(trainer.task, "prepare_batch", original)
    cut = tmp_path / "classification" / "cut"
    state = load_resume_state(cut / "weights" / "last.state.pt")
    assert (state["epoch"], state["batch_in_epoch"]) == (1, 4)
    Trainer(resolve_args([f"resume={cut}"])).fit()
    _same_weights(reference / "weights" / "last.safetensors", cut / "weights" / "last.safetensors")


def test_resuming_a_copy_from_its_older_mid_epoch_unit_gives_the_same_weights(tiny_dropnet, tmp_path):
    reference = Trainer(resolve_args([*ARGS, "workers=0", f"project={tmp_path}", "name=ref"])).fit()
    copy = shutil.copytree(reference, tmp_path / "copy")
    units = sorted((copy / "weights" / "ckpt").iterdir())
    older = load_resume_state(units[0] / "state.pt")
    assert older["batch_in_epoch"] > 0, "the older unit is mid-epoch"
    Trainer(resolve_args([f"resume={units[0]}"])).fit()
    _same_weights(reference / "weights" / "last.safetensors", copy / "weights" / "last.safetensors")
