"""A plugin's own classification network — a plain ``nn.Module`` mapping images to logits, registered as the
registry's docstring shows — trains, validates, predicts and exports like the zoo's classifiers (it used to stop
training with ``AttributeError: 'MyNet' object has no attribute 'loss'``); a plain network registered for detection
or generation, which cannot work without the task's methods, is refused in one line naming them."""

from __future__ import annotations

import pytest
import torch
from torch import nn

import vision
from vision.backbones.classifier import adopt_classifier
from vision.cli.main import main as vision_main
from vision.engine import Trainer
from vision.engine.config import resolve_args
from vision.registry import MODELS


class PlainNet(nn.Module):
    """A plugin's network: images ``[B, 3, H, W]`` -> logits ``[B, K]``, nothing else."""

    def __init__(self, num_classes: int = 10) -> None:
        super().__init__()
        self.body = nn.Sequential(nn.Conv2d(3, 8, 3, padding=1), nn.ReLU(), nn.AdaptiveAvgPool2d(1), nn.Flatten())
        self.fc = nn.Linear(8, num_classes)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return self.fc(self.body(x))


@pytest.fixture
def plain_net():
    @MODELS.register("plain_net_test", tags={"classification"}, task="classification")
    def plain_net_test(*, num_classes: int = 10) -> nn.Module:
        return PlainNet(num_classes)

    yield "plain_net_test"
    MODELS.unregister("plain_net_test")


def test_adopted_network_keeps_its_forward_and_state_dict():
    torch.manual_seed(0)
    net = PlainNet(4)
    state = {k: v.clone() for k, v in net.state_dict().items()}
    x = torch.randn(2, 3, 16, 16)
    before = net(x)
    adopted = adopt_classifier(net, num_classes=4)
    assert adopted is net and isinstance(net, PlainNet) and type(net).__name__ == "PlainNet"
    assert torch.equal(net(x), before) and net.state_dict().keys() == state.keys()
    assert net.num_classes == 4 and net.card is None and net.categories is None
    loss = net.loss((x, torch.tensor([0, 3])))["cls"].item()
    assert loss == pytest.approx(nn.functional.cross_entropy(before, torch.tensor([0, 3])).item(), rel=1e-6)
    assert adopt_classifier(net) is net and type(adopt_classifier(PlainNet(2))) is type(net)  # one subclass per class
    resnet = vision.create_model("resnet18", num_classes=2)
    assert type(adopt_classifier(resnet)) is type(resnet)  # the zoo's own classifiers are left as they are


@pytest.mark.slow
def test_plain_plugin_network_trains_validates_predicts_and_exports(plain_net, tmp_path, capsys):
    args = ["task=classification", f"model={plain_net}", "data=digits", "imgsz=16", "epochs=1", "fraction=0.1",
            "batch=32", "workers=0", "tensorboard=false", f"project={tmp_path}"]  # fmt: skip
    run = Trainer(resolve_args(args)).fit()
    model = vision.load_model(str(run))
    assert isinstance(model, PlainNet) and model.categories == [str(i) for i in range(10)]
    image = torch.randint(0, 256, (3, 40, 30), dtype=torch.uint8)
    result = model.predict(image)[0]
    with torch.no_grad():
        expected = model(model.eval_transforms()(image)[None]).softmax(-1)[0]
    assert torch.allclose(result.probs, expected, atol=1e-6)
    assert vision_main(["val", f"weights={run}", f"project={tmp_path}"]) == 0
    pytest.importorskip("onnxruntime")
    assert vision_main(["export", f"weights={run}"]) == 0
    assert "PASS" in capsys.readouterr().out


@pytest.mark.parametrize(
    ("task", "data", "said"),
    [
        ("detection", "synthetic", "has no loss() and no predict(): a detection model needs loss(images, targets)"),
        ("generation", "digits", "has no sample() and no loss(): a generation model needs sample(n, labels=, seed=)"),
    ],
)
def test_plain_network_for_another_task_is_one_error_line(task, data, said, tmp_path, capsys):
    from vision.cli.train import main as train_main

    @MODELS.register("plain_other_test", tags={task}, task=task)
    def plain_other_test(**kwargs) -> nn.Module:
        return PlainNet(3)

    try:
        with pytest.raises(SystemExit) as info:
            train_main([f"task={task}", "model=plain_other_test", f"data={data}", "epochs=1", f"project={tmp_path}"])
    finally:
        MODELS.unregister("plain_other_test")
    err = capsys.readouterr().err.strip().splitlines()
    assert info.value.code == 2 and len(err) == 1, err
    assert err[0].startswith("error: model=plain_other_test (PlainNet) ") and said in err[0], err
