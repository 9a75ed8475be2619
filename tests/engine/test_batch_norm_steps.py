"""Batch norm fed one value per channel: a training step (``batch=1``) or a ``cpu_replicas`` part of one image whose
batch norm would stop training is refused before the run folder is made, naming the key and a value that works;
the training loader drops an incomplete last batch, so no step is smaller than ``batch``."""

from __future__ import annotations

import pytest
import torch
from torch import nn

from vision.backbones.classifier import _ClassifierMixin
from vision.cli.train import main as train_main
from vision.engine import Trainer
from vision.engine.config import resolve_args
from vision.registry import MODELS


class TinyBnNet(_ClassifierMixin, nn.Module):
    """conv-BN-ReLU -> pool -> (BN1d: one value per channel for one image) -> linear."""

    def __init__(self, num_classes: int = 10, head_bn: bool = True) -> None:
        super().__init__()
        self.features = nn.Sequential(
            nn.Conv2d(3, 8, 3, padding=1), nn.BatchNorm2d(8), nn.ReLU(), nn.AdaptiveAvgPool2d(1), nn.Flatten()
        )
        self.head_bn = nn.BatchNorm1d(8) if head_bn else nn.Identity()
        self.fc = nn.Linear(8, num_classes)
        self.num_classes, self.card, self.categories = num_classes, None, None

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return self.fc(self.head_bn(self.features(x)))


@pytest.fixture
def tiny_bnnet():
    @MODELS.register("tiny_bnnet", tags={"classification"}, task="classification")
    def tiny_bnnet(*, num_classes: int = 10, card=None, head_bn: bool = True, **kwargs) -> TinyBnNet:
        return TinyBnNet(num_classes=num_classes, head_bn=head_bn)

    yield
    MODELS.unregister("tiny_bnnet")


QUICK = ["model=tiny_bnnet", "data=digits", "imgsz=16", "fraction=0.02", "epochs=1", "workers=0", "device=cpu",
         "tensorboard=false", "plots=false"]  # fmt: skip


def _train(argv, capsys):
    try:
        code = train_main(argv)
    except SystemExit as stop:
        code = stop.code
    out, err = capsys.readouterr()
    return code, out, err


def test_batch_1_with_a_starved_batch_norm_is_refused_before_a_run_folder(tiny_bnnet, tmp_path, capsys):
    code, _, err = _train([*QUICK, "batch=1", f"project={tmp_path}"], capsys)
    assert code == 2
    assert err == ("error: batch=1 makes training steps of 1 image, which give the batch-norm layer head_bn one "
                   "value per channel: it cannot train on that; give batch=2 or more\n")  # fmt: skip
    assert not (tmp_path / "classification").exists()


def test_cpu_replicas_parts_of_one_image_are_refused_naming_a_count_that_works(tiny_bnnet, tmp_path, capsys):
    code, out, err = _train([*QUICK, "batch=8", "cpu_replicas=8", f"project={tmp_path}"], capsys)
    assert code == 2 and "cpu_replicas=8: each step" not in out
    assert err == ("error: cpu_replicas=8 cuts each step's 8 images into parts of 1 image, which give the batch-norm "
                   "layer head_bn one value per channel: it cannot train on that; give cpu_replicas=4 or fewer (parts "
                   "of 2 images or more), or batch=16 or more\n")  # fmt: skip
    assert not (tmp_path / "classification").exists()
    code, out, err = _train([*QUICK, "batch=8", "cpu_replicas=4", f"project={tmp_path}"], capsys)
    assert code == 0, err
    assert "cpu_replicas=4: each step's batch runs as 4 parts of 2 images" in out


def test_batch_1_trains_where_batch_norm_gets_more_than_one_value(tiny_bnnet, tmp_path, capsys):
    code, _, err = _train([*QUICK, "batch=1", "fraction=0.005", "model_kwargs.head_bn=false", f"project={tmp_path}"],
                          capsys)  # fmt: skip
    assert code == 0, err  # BatchNorm2d over 16x16 values per channel of one image


def test_batch_norm_starved_names_the_first_layer_and_leaves_the_model_alone():
    from vision.engine.replicas import batch_norm_starved

    class Loss:
        def compute_loss(self, model, batch):
            return {"loss": model(batch).sum()}

    net = TinyBnNet()
    before = {k: v.clone() for k, v in net.state_dict().items()}
    assert batch_norm_starved(net, Loss(), torch.rand(1, 3, 8, 8)) == "head_bn"
    assert batch_norm_starved(net, Loss(), torch.rand(2, 3, 8, 8)) is None
    assert batch_norm_starved(TinyBnNet(head_bn=False), Loss(), torch.rand(1, 3, 8, 8)) is None
    assert all(torch.equal(before[k], v) for k, v in net.state_dict().items())  # running stats untouched


def test_the_training_loader_drops_an_incomplete_last_batch(tiny_bnnet, tmp_path):
    trainer = Trainer(resolve_args([*QUICK, "batch=3", f"project={tmp_path}"]))  # 28 images: 9 batches of 3
    trainer._setup_device()
    trainer._build_loaders()
    assert [len(labels) for _, labels in trainer.train_loader] == [3] * 9
