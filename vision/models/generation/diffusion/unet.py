"""The class-conditional UNet denoiser of :mod:`vision.models.generation.diffusion.model`.

Papers: DDPM's UNet https://arxiv.org/abs/2006.11239, with the refinements of "Diffusion Models Beat GANs"
https://arxiv.org/abs/2105.05233 (scale-shift conditioning of the residual blocks, zero-initialised output layers,
multi-head self-attention at low resolution) and classifier-free guidance https://arxiv.org/abs/2207.12598 (a null
label learnt alongside the classes).

Layout: a 3x3 stem, then per resolution level ``num_res_blocks`` residual blocks (plus self-attention at the levels
in ``attention_levels``) and a strided 3x3 downsampling convolution; a middle of two residual blocks around an
attention block; the mirror path upsamples (nearest + 3x3 conv) and concatenates the skip of every block of the down
path. Timestep (sinusoidal, then an MLP) and label embeddings are summed into one vector that modulates every
residual block (``GroupNorm(h) * (1 + scale) + shift``).
"""

from __future__ import annotations

import math
from collections.abc import Sequence

import torch
import torch.nn.functional as F
from torch import Tensor, nn

__all__ = ["UNet", "timestep_embedding"]


def timestep_embedding(t: Tensor, dim: int, *, max_period: float = 10000.0) -> Tensor:
    """Sinusoidal embedding of (possibly fractional) timesteps ``t [B]`` -> float32 ``[B, dim]``."""
    half = dim // 2
    freqs = torch.exp(-math.log(max_period) * torch.arange(half, device=t.device, dtype=torch.float32) / half)
    args = t.float()[:, None] * freqs[None]
    emb = torch.cat([torch.cos(args), torch.sin(args)], dim=-1)
    if dim % 2:
        emb = F.pad(emb, (0, 1))
    return emb


def _groups(channels: int) -> int:
    """GroupNorm groups: 32 when they divide the channels, else the largest power of two that does."""
    return math.gcd(channels, 32)


def _zero(module: nn.Module) -> nn.Module:
    for p in module.parameters():
        nn.init.zeros_(p)
    return module


class _ResBlock(nn.Module):
    def __init__(self, in_ch: int, out_ch: int, emb_dim: int, dropout: float) -> None:
        super().__init__()
        self.norm1 = nn.GroupNorm(_groups(in_ch), in_ch)
        self.conv1 = nn.Conv2d(in_ch, out_ch, 3, padding=1)
        self.emb = nn.Linear(emb_dim, 2 * out_ch)
        self.norm2 = nn.GroupNorm(_groups(out_ch), out_ch)
        self.dropout = nn.Dropout(dropout)
        self.conv2 = _zero(nn.Conv2d(out_ch, out_ch, 3, padding=1))
        self.skip = nn.Conv2d(in_ch, out_ch, 1) if in_ch != out_ch else nn.Identity()

    def forward(self, x: Tensor, emb: Tensor) -> Tensor:
        h = self.conv1(F.silu(self.norm1(x)))
        scale, shift = self.emb(F.silu(emb))[:, :, None, None].chunk(2, dim=1)
        h = self.norm2(h) * (1.0 + scale) + shift
        h = self.conv2(self.dropout(F.silu(h)))
        return self.skip(x) + h


class _Attention(nn.Module):
    def __init__(self, channels: int, heads: int) -> None:
        super().__init__()
        if channels % heads:
            raise ValueError(f"attention over {channels} channels cannot be split into {heads} heads")
        self.heads = heads
        self.norm = nn.GroupNorm(_groups(channels), channels)
        self.qkv = nn.Conv2d(channels, 3 * channels, 1)
        self.proj = _zero(nn.Conv2d(channels, channels, 1))

    def forward(self, x: Tensor, emb: Tensor | None = None) -> Tensor:
        B, C, H, W = x.shape
        qkv = self.qkv(self.norm(x)).reshape(B, 3, self.heads, C // self.heads, H * W)
        q, k, v = (qkv[:, i].transpose(-1, -2) for i in range(3))  # [B, heads, HW, C/heads]
        out = F.scaled_dot_product_attention(q, k, v)
        return x + self.proj(out.transpose(-1, -2).reshape(B, C, H, W))


class _Down(nn.Module):
    def __init__(self, channels: int) -> None:
        super().__init__()
        self.conv = nn.Conv2d(channels, channels, 3, stride=2, padding=1)

    def forward(self, x: Tensor, emb: Tensor | None = None) -> Tensor:
        return self.conv(x)


class _Up(nn.Module):
    def __init__(self, channels: int) -> None:
        super().__init__()
        self.conv = nn.Conv2d(channels, channels, 3, padding=1)

    def forward(self, x: Tensor, emb: Tensor | None = None) -> Tensor:
        return self.conv(F.interpolate(x, scale_factor=2.0, mode="nearest"))


class _Step(nn.ModuleList):
    """A residual block optionally followed by attention (one skip connection of the UNet)."""

    def forward(self, x: Tensor, emb: Tensor) -> Tensor:  # type: ignore[override]
        for layer in self:
            x = layer(x, emb)
        return x


class UNet(nn.Module):
    """A class-conditional UNet: ``forward(x [B, C, H, W], t int64 [B], labels int64 [B] | None) -> [B, C_out, H, W]``.

    Args:
        in_channels, out_channels: image channels in and out (``out_channels`` defaults to ``in_channels``).
        base_channels: channels of the first level; level ``i`` has ``base_channels * channel_mult[i]``.
        channel_mult: one multiplier per resolution level (``len - 1`` downsamplings); ``H`` and ``W`` must be
            divisible by ``2 ** (len(channel_mult) - 1)``.
        num_res_blocks: residual blocks per level on the way down (one more on the way up).
        attention_levels: levels (0 = full resolution) with self-attention after each residual block; the middle
            always has one.
        num_heads: attention heads.
        dropout: dropout inside the residual blocks.
        num_classes: number of classes; label ``num_classes`` is the learnt *null* label (unconditional). ``0``:
            an unconditional network (``labels`` must be ``None``).

    Example:
        >>> net = UNet(in_channels=1, base_channels=32, num_classes=10)
        >>> out = net(torch.randn(4, 1, 32, 32), torch.randint(0, 1000, (4,)), torch.tensor([0, 1, 2, 10]))
    """

    def __init__(
        self,
        *,
        in_channels: int = 3,
        out_channels: int | None = None,
        base_channels: int = 64,
        channel_mult: Sequence[int] = (1, 2, 2),
        num_res_blocks: int = 2,
        attention_levels: Sequence[int] = (2,),
        num_heads: int = 4,
        dropout: float = 0.1,
        num_classes: int = 0,
    ) -> None:
        super().__init__()
        out_channels = out_channels or in_channels
        self.in_channels, self.out_channels = int(in_channels), int(out_channels)
        self.num_classes = int(num_classes)
        self.base_channels = int(base_channels)
        self.size_divisibility = 2 ** (len(channel_mult) - 1)
        emb_dim = 4 * base_channels
        self.time_mlp = nn.Sequential(nn.Linear(base_channels, emb_dim), nn.SiLU(), nn.Linear(emb_dim, emb_dim))
        self.label_emb = nn.Embedding(self.num_classes + 1, emb_dim) if self.num_classes > 0 else None
        self.stem = nn.Conv2d(in_channels, base_channels, 3, padding=1)
        attention = set(attention_levels)

        def heads_for(ch: int) -> int:
            return num_heads if ch % num_heads == 0 else 1

        self.down = nn.ModuleList()
        skips = [base_channels]
        ch = base_channels
        for level, mult in enumerate(channel_mult):
            out = base_channels * mult
            for _ in range(num_res_blocks):
                step = _Step([_ResBlock(ch, out, emb_dim, dropout)])
                if level in attention:
                    step.append(_Attention(out, heads_for(out)))
                self.down.append(step)
                ch = out
                skips.append(ch)
            if level + 1 < len(channel_mult):
                self.down.append(_Step([_Down(ch)]))
                skips.append(ch)
        self.middle = _Step(
            [_ResBlock(ch, ch, emb_dim, dropout), _Attention(ch, heads_for(ch)), _ResBlock(ch, ch, emb_dim, dropout)]
        )
        self.up = nn.ModuleList()
        for level, mult in reversed(list(enumerate(channel_mult))):
            out = base_channels * mult
            for i in range(num_res_blocks + 1):
                step = _Step([_ResBlock(ch + skips.pop(), out, emb_dim, dropout)])
                if level in attention:
                    step.append(_Attention(out, heads_for(out)))
                if level > 0 and i == num_res_blocks:
                    step.append(_Up(out))
                self.up.append(step)
                ch = out
        self.out_norm = nn.GroupNorm(_groups(ch), ch)
        self.out_conv = _zero(nn.Conv2d(ch, out_channels, 3, padding=1))

    def embed(self, t: Tensor, labels: Tensor | None) -> Tensor:
        """The conditioning vector ``[B, 4 * base_channels]`` of timesteps ``t`` and ``labels``."""
        emb = self.time_mlp(timestep_embedding(t, self.base_channels))
        if self.label_emb is not None:
            if labels is None:
                labels = torch.full_like(t, self.num_classes, dtype=torch.long)
            emb = emb + self.label_emb(labels)
        elif labels is not None:
            raise ValueError("this UNet is unconditional (num_classes=0); pass labels=None")
        return emb

    def forward(self, x: Tensor, t: Tensor, labels: Tensor | None = None) -> Tensor:
        if x.dim() != 4 or x.shape[1] != self.in_channels:
            raise ValueError(f"UNet expects [B, {self.in_channels}, H, W], got {tuple(x.shape)}")
        if x.shape[-1] % self.size_divisibility or x.shape[-2] % self.size_divisibility:
            raise ValueError(f"UNet input sides must be divisible by {self.size_divisibility}, got {tuple(x.shape)}")
        emb = self.embed(t, labels)
        h = self.stem(x)
        hs = [h]
        for step in self.down:
            h = step(h, emb)
            hs.append(h)
        h = self.middle(h, emb)
        for step in self.up:
            h = step(torch.cat([h, hs.pop()], dim=1), emb)
        return self.out_conv(F.silu(self.out_norm(h)))
