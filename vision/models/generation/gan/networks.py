"""GAN networks and losses: ResNet (SN-GAN) and DCGAN generators/discriminators, the projected discriminator over a
frozen registry backbone, and the hinge / non-saturating losses. :mod:`.model` assembles them into a :class:`GAN`."""

from __future__ import annotations

import math
from collections.abc import Sequence

import torch
import torch.nn.functional as F
from torch import Tensor, nn

from vision.hub.cards import IMAGENET_MEAN, IMAGENET_STD
from vision.models.generation.common import spectral_norm as sn

__all__ = [
    "DCGANDiscriminator",
    "DCGANGenerator",
    "ProjectedDiscriminator",
    "ResNetDiscriminator",
    "ResNetGenerator",
    "discriminator_loss",
    "generator_loss",
]


# ---------------------------------------------------------------------------------------------------- losses
def discriminator_loss(kind: str, real: Tensor, fake: Tensor) -> Tensor:
    """``hinge``: ``mean(relu(1 - D(x))) + mean(relu(1 + D(G(z))))``; ``bce``: ``softplus(-D(x)) + softplus(D(G(z)))``
    (means over every logit)."""
    real, fake = real.float(), fake.float()
    if kind == "hinge":
        return F.relu(1.0 - real).mean() + F.relu(1.0 + fake).mean()
    if kind == "bce":
        return F.softplus(-real).mean() + F.softplus(fake).mean()
    raise ValueError(f"GAN loss {kind!r} is not one of hinge, bce")


def generator_loss(kind: str, fake: Tensor) -> Tensor:
    """``hinge``: ``-mean(D(G(z)))``; ``bce`` (non-saturating): ``softplus(-D(G(z)))``."""
    fake = fake.float()
    if kind == "hinge":
        return -fake.mean()
    if kind == "bce":
        return F.softplus(-fake).mean()
    raise ValueError(f"GAN loss {kind!r} is not one of hinge, bce")


# ---------------------------------------------------------------------------------------------------- SN-GAN blocks
class _CondBatchNorm(nn.Module):
    """Batch norm whose scale and shift come from the label (plain affine batch norm when unconditional)."""

    def __init__(self, channels: int, num_classes: int) -> None:
        super().__init__()
        self.num_classes = num_classes
        self.bn = nn.BatchNorm2d(channels, affine=num_classes == 0)
        if num_classes > 0:
            self.gain = nn.Embedding(num_classes, channels)
            self.bias = nn.Embedding(num_classes, channels)
            nn.init.ones_(self.gain.weight)
            nn.init.zeros_(self.bias.weight)

    def forward(self, x: Tensor, labels: Tensor | None) -> Tensor:
        h = self.bn(x)
        if self.num_classes == 0:
            return h
        return h * self.gain(labels)[:, :, None, None] + self.bias(labels)[:, :, None, None]


class _GBlock(nn.Module):
    def __init__(self, in_ch: int, out_ch: int, num_classes: int) -> None:
        super().__init__()
        self.bn1 = _CondBatchNorm(in_ch, num_classes)
        self.conv1 = nn.Conv2d(in_ch, out_ch, 3, padding=1)
        self.bn2 = _CondBatchNorm(out_ch, num_classes)
        self.conv2 = nn.Conv2d(out_ch, out_ch, 3, padding=1)
        self.skip = nn.Conv2d(in_ch, out_ch, 1)
        for conv in (self.conv1, self.conv2):
            nn.init.xavier_uniform_(conv.weight, math.sqrt(2.0))
        nn.init.xavier_uniform_(self.skip.weight)

    def forward(self, x: Tensor, labels: Tensor | None) -> Tensor:
        h = F.interpolate(F.relu(self.bn1(x, labels)), scale_factor=2.0, mode="nearest")
        h = self.conv2(F.relu(self.bn2(self.conv1(h), labels)))
        return h + self.skip(F.interpolate(x, scale_factor=2.0, mode="nearest"))


class ResNetGenerator(nn.Module):
    """SN-GAN's ResNet generator: ``z -> linear -> 4x4 -> (upsampling residual block) x log2(size / 4) -> BN, ReLU,
    3x3 conv, tanh``. Labels enter through class-conditional batch norm.

    ``forward(z float [B, z_dim], labels int64 [B] | None) -> float [B, image_channels, image_size, image_size]`` in
    ``[-1, 1]``.
    """

    def __init__(
        self,
        *,
        z_dim: int = 128,
        channels: int = 256,
        image_channels: int = 3,
        image_size: int = 32,
        num_classes: int = 0,
    ) -> None:
        super().__init__()
        ups = round(math.log2(image_size / 4))
        if ups < 1 or 4 * 2**ups != image_size:
            raise ValueError(f"image_size={image_size} must be 4 * 2^k (8, 16, 32, 64 ...)")
        self.z_dim, self.channels, self.num_classes = z_dim, channels, num_classes
        self.linear = nn.Linear(z_dim, 16 * channels)
        self.blocks = nn.ModuleList(_GBlock(channels, channels, num_classes) for _ in range(ups))
        self.bn = nn.BatchNorm2d(channels)
        self.out = nn.Conv2d(channels, image_channels, 3, padding=1)
        nn.init.xavier_uniform_(self.linear.weight)
        nn.init.xavier_uniform_(self.out.weight)

    def forward(self, z: Tensor, labels: Tensor | None = None) -> Tensor:
        h = self.linear(z).view(z.shape[0], self.channels, 4, 4)
        for block in self.blocks:
            h = block(h, labels)
        return torch.tanh(self.out(F.relu(self.bn(h))))


class _DBlock(nn.Module):
    def __init__(self, in_ch: int, out_ch: int, *, down: bool, first: bool) -> None:
        super().__init__()
        self.first, self.down = first, down
        self.conv1 = sn(nn.Conv2d(in_ch, out_ch, 3, padding=1))
        self.conv2 = sn(nn.Conv2d(out_ch, out_ch, 3, padding=1))
        self.skip = sn(nn.Conv2d(in_ch, out_ch, 1)) if (in_ch != out_ch or down) else None

    def forward(self, x: Tensor) -> Tensor:
        h = x if self.first else F.relu(x)
        h = self.conv2(F.relu(self.conv1(h)))
        if self.down:
            h = F.avg_pool2d(h, 2)
        s = x
        if self.first:  # "optimised" first block: pool, then project
            s = self.skip(F.avg_pool2d(s, 2)) if self.down else self.skip(s)
        elif self.skip is not None:
            s = self.skip(s)
            s = F.avg_pool2d(s, 2) if self.down else s
        return h + s


class ResNetDiscriminator(nn.Module):
    """SN-GAN's ResNet discriminator with a projection head.

    ``forward(x float [B, C, H, W] in [-1, 1], labels int64 [B] | None) -> logits float [B, 1]``:
    ``linear(h) + <embed(y), h>`` with ``h`` the ReLU'd, spatially summed features; spectral norm everywhere.
    """

    def __init__(self, *, channels: int = 128, image_channels: int = 3, num_classes: int = 0) -> None:
        super().__init__()
        self.blocks = nn.Sequential(
            _DBlock(image_channels, channels, down=True, first=True),
            _DBlock(channels, channels, down=True, first=False),
            _DBlock(channels, channels, down=False, first=False),
            _DBlock(channels, channels, down=False, first=False),
        )
        self.linear = sn(nn.Linear(channels, 1))
        self.embed = sn(nn.Embedding(num_classes, channels)) if num_classes > 0 else None

    def forward(self, x: Tensor, labels: Tensor | None = None) -> Tensor:
        h = F.relu(self.blocks(x)).sum(dim=(2, 3))
        out = self.linear(h)
        if self.embed is not None and labels is not None:
            out = out + (self.embed(labels) * h).sum(dim=1, keepdim=True)
        return out


# ---------------------------------------------------------------------------------------------------- DCGAN
def _dcgan_init(module: nn.Module) -> None:
    for m in module.modules():
        if isinstance(m, nn.Conv2d | nn.ConvTranspose2d | nn.Linear | nn.Embedding):
            nn.init.normal_(m.weight, 0.0, 0.02)
            if getattr(m, "bias", None) is not None:
                nn.init.zeros_(m.bias)
        elif isinstance(m, nn.BatchNorm2d) and m.affine:
            nn.init.normal_(m.weight, 1.0, 0.02)
            nn.init.zeros_(m.bias)


class DCGANGenerator(nn.Module):
    """DCGAN's generator for 32 px: ``[z, embed(y)] -> 4x4 -> 8 -> 16 -> 32`` with stride-2 transposed convolutions,
    batch norm and ReLU, tanh output in ``[-1, 1]``."""

    def __init__(
        self,
        *,
        z_dim: int = 100,
        channels: int = 64,
        image_channels: int = 3,
        image_size: int = 32,
        num_classes: int = 0,
    ) -> None:
        super().__init__()
        if image_size != 32:
            raise ValueError(f"DCGANGenerator makes 32 px images, got image_size={image_size}")
        self.z_dim, self.num_classes = z_dim, num_classes
        self.embed = nn.Embedding(num_classes, z_dim) if num_classes > 0 else None
        z_in = 2 * z_dim if num_classes > 0 else z_dim
        c = channels
        self.net = nn.Sequential(
            nn.ConvTranspose2d(z_in, 4 * c, 4, 1, 0, bias=False),
            nn.BatchNorm2d(4 * c),
            nn.ReLU(True),
            nn.ConvTranspose2d(4 * c, 2 * c, 4, 2, 1, bias=False),
            nn.BatchNorm2d(2 * c),
            nn.ReLU(True),
            nn.ConvTranspose2d(2 * c, c, 4, 2, 1, bias=False),
            nn.BatchNorm2d(c),
            nn.ReLU(True),
            nn.ConvTranspose2d(c, image_channels, 4, 2, 1),
            nn.Tanh(),
        )
        _dcgan_init(self)

    def forward(self, z: Tensor, labels: Tensor | None = None) -> Tensor:
        if self.embed is not None:
            z = torch.cat([z, self.embed(labels)], dim=1)
        return self.net(z[:, :, None, None])


class DCGANDiscriminator(nn.Module):
    """DCGAN's discriminator for 32 px: stride-2 4x4 convolutions with LeakyReLU(0.2) and batch norm (not on the
    first layer), a 4x4 convolution to one logit, plus a projection term ``<embed(y), sum h>`` when conditional.
    ``forward(x, labels) -> logits [B, 1]``."""

    def __init__(self, *, channels: int = 64, image_channels: int = 3, num_classes: int = 0) -> None:
        super().__init__()
        c = channels
        self.features = nn.Sequential(
            nn.Conv2d(image_channels, c, 4, 2, 1),
            nn.LeakyReLU(0.2, True),
            nn.Conv2d(c, 2 * c, 4, 2, 1, bias=False),
            nn.BatchNorm2d(2 * c),
            nn.LeakyReLU(0.2, True),
            nn.Conv2d(2 * c, 4 * c, 4, 2, 1, bias=False),
            nn.BatchNorm2d(4 * c),
            nn.LeakyReLU(0.2, True),
        )
        self.out = nn.Conv2d(4 * c, 1, 4, 1, 0)
        self.embed = nn.Embedding(num_classes, 4 * c) if num_classes > 0 else None
        _dcgan_init(self)

    def forward(self, x: Tensor, labels: Tensor | None = None) -> Tensor:
        h = self.features(x)
        out = self.out(h).flatten(1)
        if self.embed is not None and labels is not None:
            out = out + (self.embed(labels) * h.mean(dim=(2, 3))).sum(dim=1, keepdim=True)
        return out


# ---------------------------------------------------------------------------------------------------- projected D
class _ScaleDiscriminator(nn.Module):
    """A small spectral-norm discriminator on one projected feature map: stride-2 4x4 convolutions until the map is
    at most 4x4, then a 1x1 logit map plus a projection ``<embed(y), h>`` per position."""

    def __init__(self, in_ch: int, resolution: int, num_classes: int) -> None:
        super().__init__()
        layers: list[nn.Module] = []
        ch, res = in_ch, resolution
        while res > 4:
            out = min(2 * ch, 512)
            layers += [sn(nn.Conv2d(ch, out, 4, 2, 1)), nn.LeakyReLU(0.2, True)]
            ch, res = out, res // 2
        layers += [sn(nn.Conv2d(ch, ch, 3, 1, 1)), nn.LeakyReLU(0.2, True)]
        self.body = nn.Sequential(*layers)
        self.logit = sn(nn.Conv2d(ch, 1, 1))
        self.embed = sn(nn.Embedding(num_classes, ch)) if num_classes > 0 else None
        self.scale = 1.0 / math.sqrt(ch)

    def forward(self, x: Tensor, labels: Tensor | None) -> Tensor:
        h = self.body(x)
        out = self.logit(h)
        if self.embed is not None and labels is not None:
            out = out + self.scale * (self.embed(labels)[:, :, None, None] * h).sum(dim=1, keepdim=True)
        return out.flatten(1)


class ProjectedDiscriminator(nn.Module):
    """A discriminator on a frozen feature extractor's multi-scale features.

    ``images [-1, 1] -> 3 channels, mean/std normalised, resized to input_size -> frozen backbone -> fixed random 1x1
    convolutions per scale (cross-channel mixing) -> top-down sum of upsampled coarser maps through fixed random 1x1
    convolutions (cross-scale mixing) -> one trainable spectral-norm discriminator per scale``. The logits of every
    scale are concatenated: ``forward(x, labels) -> float [B, N]``.

    Args:
        backbone: a :class:`~vision.backbones._base.FeatureExtractor` (``.specs`` declares its maps); it is frozen
            here (no gradients to its weights, norms in eval mode), but gradients flow through it to the images.
        proj_channels: output channels of the random projection of each selected scale (shallow to deep).
        input_size: side the images are resized to before the backbone.
        mean, std: the backbone's input normalisation.
        seed: seed of the random projections (they are also saved in the state dict).
    """

    def __init__(
        self,
        backbone: nn.Module,
        *,
        num_classes: int = 0,
        proj_channels: Sequence[int] = (64, 128, 256, 256),
        input_size: int = 64,
        mean: Sequence[float] = IMAGENET_MEAN,
        std: Sequence[float] = IMAGENET_STD,
        seed: int = 0,
    ) -> None:
        super().__init__()
        specs = list(backbone.specs)
        if len(proj_channels) != len(specs):
            raise ValueError(f"proj_channels has {len(proj_channels)} entries for {len(specs)} backbone scales")
        self.backbone = backbone.eval().requires_grad_(False)
        self.names = [s.name for s in specs]
        self.input_size = int(input_size)
        self.register_buffer("mean", torch.tensor(mean, dtype=torch.float32).view(1, 3, 1, 1))
        self.register_buffer("std", torch.tensor(std, dtype=torch.float32).view(1, 3, 1, 1))
        generator = torch.Generator().manual_seed(seed)

        def frozen_conv(cin: int, cout: int) -> nn.Conv2d:
            conv = nn.Conv2d(cin, cout, 1, bias=False)
            bound = math.sqrt(6.0 / cin)  # kaiming-uniform: keeps the activation scale
            with torch.no_grad():
                conv.weight.copy_(torch.rand(conv.weight.shape, generator=generator) * 2 * bound - bound)
            return conv.requires_grad_(False)

        self.ccm = nn.ModuleList(frozen_conv(s.channels, p) for s, p in zip(specs, proj_channels))
        self.csm = nn.ModuleList(frozen_conv(proj_channels[i + 1], proj_channels[i]) for i in range(len(specs) - 1))
        self.heads = nn.ModuleList(
            _ScaleDiscriminator(p, max(1, self.input_size // s.stride), num_classes)
            for s, p in zip(specs, proj_channels)
        )

    def train(self, mode: bool = True) -> ProjectedDiscriminator:
        super().train(mode)
        self.backbone.eval()  # frozen: norms keep their statistics
        return self

    def features(self, x: Tensor) -> list[Tensor]:
        """The mixed multi-scale features of images ``x [B, C, H, W]`` in ``[-1, 1]`` (shallow to deep)."""
        if x.shape[1] == 1:
            x = x.expand(-1, 3, -1, -1)
        x = ((x + 1.0) * 0.5 - self.mean.to(x.dtype)) / self.std.to(x.dtype)
        if x.shape[-1] != self.input_size or x.shape[-2] != self.input_size:
            x = F.interpolate(x, size=(self.input_size, self.input_size), mode="bilinear", align_corners=False)
        feats = self.backbone(x)
        mixed = [conv(feats[name]) for conv, name in zip(self.ccm, self.names)]
        for i in range(len(mixed) - 2, -1, -1):
            up = F.interpolate(
                self.csm[i](mixed[i + 1]), size=mixed[i].shape[-2:], mode="bilinear", align_corners=False
            )
            mixed[i] = mixed[i] + up
        return mixed

    def forward(self, x: Tensor, labels: Tensor | None = None) -> Tensor:
        with torch.set_grad_enabled(torch.is_grad_enabled() and x.requires_grad):
            mixed = self.features(x)  # no graph through the frozen part when the images need no gradient
        return torch.cat([head(m, labels) for head, m in zip(self.heads, mixed)], dim=1)
