"""Generation fixes from a user-style sweep: label dropout in [0, 1], guidance and the null label refused by a model
that never learnt it, ``steps`` above ``T`` refused, ``labels=`` checked and recorded by ``tools/infer.py``, and one
clean line for an unknown ``model_kwargs`` key of a generator."""

from __future__ import annotations

import json

import pytest
import torch

import vision
from vision.cli.infer import main as infer_main
from vision.models.generation.diffusion.schedule import NoiseSchedule, run_sampler

TINY_DDPM = {"image_channels": 1, "base_channels": 8, "timesteps": 50, "steps": 2}
TINY_GAN = {"image_channels": 1, "g_channels": 16, "d_channels": 16}


def _ddpm(**kwargs):
    torch.manual_seed(0)
    return vision.create_model("ddpm_unet_s", **{**TINY_DDPM, **kwargs})


def _infer(monkeypatch, model, tmp_path, *keys: str) -> int:
    """``tools/infer.py model=<name> ...`` in-process, sampling from ``model`` (as if loaded from a run)."""
    monkeypatch.setattr("vision.tasks.generation.infer.load_model", lambda *a, **k: model)
    name = "sngan_32" if hasattr(model, "generator") else "ddpm_unet_s"
    return infer_main([f"model={name}", "device=cpu", f"project={tmp_path}", "name=s", *keys])


def _refused(capsys, monkeypatch, model, tmp_path, *keys: str) -> str:
    with pytest.raises(SystemExit):
        _infer(monkeypatch, model, tmp_path, *keys)
    assert not (tmp_path / "generation").exists(), "nothing is written for a refused command"
    return capsys.readouterr().err.strip()


# ---------------------------------------------------------------------------------------------------- the model
@pytest.mark.parametrize("value", [1.5, -1.0])
def test_cond_drop_prob_must_be_a_probability(value):
    with pytest.raises(ValueError, match=rf"cond_drop_prob={value} is not a probability: it must be in \[0, 1\]"):
        _ddpm(cond_drop_prob=value)


def test_model_without_label_dropout_refuses_guidance_and_the_null_label():
    model = _ddpm(cond_drop_prob=0.0)
    assert model.sample(2, labels=3, seed=0).shape == (2, 1, 32, 32)  # plain conditional sampling works
    for scale in (3.0, 0.0):
        with pytest.raises(ValueError, match=rf"guidance_scale={scale:g} needs .*cond_drop_prob > 0"):
            model.sample(2, labels=3, guidance_scale=scale)
    with pytest.raises(
        ValueError, match=r"^labels=-1 \(an unconditional sample\) does not apply to this model: .*cond_drop_prob=0"
    ):
        model.sample(2, labels=-1)
    with pytest.raises(ValueError, match=r"guidance_scale=2 needs .*cond_drop_prob > 0"):
        _ddpm(cond_drop_prob=0.0, guidance_scale=2.0)  # a default the model could never honour
    assert not model.guidable and _ddpm().guidable


def test_steps_above_the_schedule_are_refused_not_clamped():
    model = _ddpm()
    with pytest.raises(ValueError, match=r"steps=51 is out of range: this model has T=50 timesteps"):
        model.sample(1, labels=0, steps=51)
    with pytest.raises(ValueError, match=r"steps=60 is out of range"):
        _ddpm(steps=60)
    with pytest.raises(ValueError, match=r"eta=0.5 applies to sampler=ddim"):
        model.sample(1, labels=0, sampler="ddpm", eta=0.5)  # ddpm is eta=1; another eta was silently ignored
    sched = NoiseSchedule(timesteps=10, schedule="cosine")
    with pytest.raises(ValueError, match=r"steps=20 is out of range"):
        run_sampler(lambda x, t: x, torch.zeros(1, 1, 2, 2), schedule=sched, prediction="eps", steps=20)
    short = _ddpm(timesteps=20, steps=None)
    assert short.sampling_settings() == {"sampler": "ddim", "steps": 20, "eta": 0.0, "guidance_scale": 1.0}
    assert model.sampling_settings(sampler="ddpm")["steps"] == 50 and model.sampling_settings()["steps"] == 2


@pytest.mark.parametrize(
    ("name", "kwargs", "where"),
    [("ddpm_unet_s", TINY_DDPM, "DiffusionModel.__init__"), ("sngan_32", TINY_GAN, "GAN.__init__")],
)
def test_unknown_generator_keyword_is_one_clean_line(name, kwargs, where):
    with pytest.raises(ValueError, match="takes no argument 'bogus'") as info:
        vision.create_model(name, bogus=1, **kwargs)
    # the same shape as every other model ("resnet18 takes no argument ...: ResNet.__init__ has no such parameter")
    assert str(info.value) == f"{name} takes no argument 'bogus' (model_kwargs.bogus=): {where} has no such parameter"


# ---------------------------------------------------------------------------------------------------- tools/infer.py
def test_infer_refuses_out_of_range_labels(capsys, monkeypatch, tmp_path):
    model = _ddpm()
    err = _refused(capsys, monkeypatch, model, tmp_path, "n=2", "labels=10")
    assert err == "error: labels=10 is out of range: this model has 10 classes, so labels must be in [0, 9], or -1 " \
        "for an unconditional sample"  # fmt: skip
    assert "labels=-2 is out of range" in _refused(capsys, monkeypatch, model, tmp_path, "n=2", "labels=-2")
    assert "labels= lists 3 labels for n=2" in _refused(capsys, monkeypatch, model, tmp_path, "n=2", "labels=[1,2,3]")
    err = _refused(capsys, monkeypatch, _ddpm(cond_drop_prob=0.0), tmp_path, "n=2", "labels=-1")
    assert (
        "labels=-1 (an unconditional sample) does not apply to this model: it was trained with cond_drop_prob=0" in err
    )
    err = _refused(capsys, monkeypatch, _ddpm(cond_drop_prob=0.0), tmp_path, "n=2", "guidance_scale=3")
    assert err.startswith("error: guidance_scale=3 needs a model trained with label dropout")
    gan = vision.create_model("sngan_32", **TINY_GAN)
    assert "it has no null label" in _refused(capsys, monkeypatch, gan, tmp_path, "n=2", "labels=-1")
    assert "steps=51 is out of range" in _refused(capsys, monkeypatch, model, tmp_path, "n=2", "steps=51")


@pytest.mark.parametrize(
    ("which", "labels", "cli"),
    [
        ("ddpm", 10, "labels=10"),
        ("ddpm", [1, -2], "labels=1,-2"),
        ("ddpm", [1, 2, 3], "labels=[1,2,3]"),
        ("ddpm_no_dropout", -1, "labels=-1"),
        ("gan", -1, "labels=-1"),
        ("gan", [0, 10], "labels=0,10"),
    ],
)
def test_the_sampler_and_tools_infer_refuse_labels_with_the_same_line(
    capsys, monkeypatch, tmp_path, which, labels, cli
):
    model = {
        "ddpm": lambda: _ddpm(),
        "ddpm_no_dropout": lambda: _ddpm(cond_drop_prob=0.0),
        "gan": lambda: vision.create_model("sngan_32", **TINY_GAN),
    }[which]()
    with pytest.raises(ValueError, match=r"^labels=") as info:
        model.sample(2, labels=labels, seed=0)
    assert _refused(capsys, monkeypatch, model, tmp_path, "n=2", cli) == f"error: {info.value}"


def test_infer_records_the_null_label_as_unconditional_and_the_settings_that_ran(monkeypatch, tmp_path):
    assert _infer(monkeypatch, _ddpm(), tmp_path, "n=3", "labels=[1,-1,2]") == 0
    folder = tmp_path / "generation" / "s"
    summary = json.loads((folder / "samples.json").read_text())
    assert [(r["file"], r["label"], r["class"]) for r in summary["images"]] == [
        ("images/00000_c1.png", 1, "1"),
        ("images/00001.png", None, None),  # the null label: unconditional, not "class 10"
        ("images/00002_c2.png", 2, "2"),
    ]
    # the model's defaults that ran are recorded, not only the keys given
    assert {k: summary[k] for k in ("sampler", "steps", "eta", "guidance_scale")} == {
        "sampler": "ddim",
        "steps": 2,
        "eta": 0.0,
        "guidance_scale": 1.0,
    }
