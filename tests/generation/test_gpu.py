"""On a CUDA device: the same seed gives the same images as on the CPU; bf16 training steps run."""

from __future__ import annotations

import pytest
import torch

import vision

pytestmark = pytest.mark.gpu


def test_seed_gives_the_same_images_on_cpu_and_gpu():
    torch.manual_seed(0)
    ddpm = vision.create_model("ddpm_unet_s", image_channels=1, base_channels=16, timesteps=100)
    kwargs = {"labels": "balanced", "seed": 7, "steps": 10}
    for sampler, eta in (("ddim", 0.0), ("ddpm", None)):
        cpu = ddpm.sample(8, sampler=sampler, eta=eta, **kwargs)
        gpu = ddpm.cuda().sample(8, sampler=sampler, eta=eta, **kwargs)
        ddpm.cpu()
        assert (cpu.int() - gpu.int()).abs().float().mean() < 0.5, "the noise must come from the CPU generator"
    torch.manual_seed(0)
    gan = vision.create_model("sngan_32", image_channels=1, g_channels=32, d_channels=32)
    cpu = gan.sample(8, seed=3)
    gpu = gan.cuda().sample(8, seed=3)
    assert (cpu.int() - gpu.int()).abs().max() <= 2


def test_bf16_training_steps():
    def autocast():
        return torch.autocast("cuda", dtype=torch.bfloat16)

    x = torch.rand(16, 1, 32, 32, device="cuda") * 2 - 1
    y = torch.randint(0, 10, (16,), device="cuda")
    ddpm = vision.create_model("ddpm_unet_s", image_channels=1).cuda()
    with autocast():
        loss = ddpm.loss({"images": x, "labels": y})["mse"]
    loss.backward()
    assert loss.dtype == torch.float32 and torch.isfinite(loss)
    for name in ("sngan_32", "dcgan_32", "projected_gan"):
        gan = vision.create_model(name, image_channels=1).cuda()
        logs = gan.train_step(
            {"images": x, "labels": y}, gan.configure_optimizers({"lr": 2e-4}), step=0, autocast=autocast
        )
        assert all(torch.isfinite(v) for v in logs.values()), (name, logs)
        images = gan.sample(4, seed=0, amp_dtype=torch.bfloat16)
        assert images.shape == (4, 1, 32, 32)
