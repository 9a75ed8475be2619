"""Pieces shared by the generative models: label requests, seeded CPU noise, image conversion, differentiable
augmentation (DiffAugment, https://arxiv.org/abs/2006.10738) and spectral normalisation computed in float32."""

from __future__ import annotations

import contextlib
from collections.abc import Sequence
from typing import Any

import torch
import torch.nn.functional as F
from torch import Tensor, nn
from torch.nn.utils import parametrize

__all__ = [
    "LabelsArg",
    "diff_augment",
    "images_to_uint8",
    "resolve_labels",
    "sampling_context",
    "spectral_norm",
]

LabelsArg = None | str | int | Sequence[int] | Tensor


def resolve_labels(
    labels: LabelsArg, n: int, num_classes: int, generator: torch.Generator | None, *, null: str | None = None
) -> Tensor | None:
    """The labels of ``n`` samples as int64 ``[n]`` on the CPU (``None`` for an unconditional model); the one place
    where generators' ``labels`` are checked (both samplers and ``tools/infer.py`` call it).

    ``None`` (or ``"random"``): drawn uniformly from ``generator``; ``"balanced"``: ``0, 1, ..., K-1, 0, 1, ...``;
    an int: every sample of that class; a sequence/array/tensor of ``n`` ints (or of one, repeated; digit strings
    count as ints). ``-1`` asks for the null label (an unconditional sample; returned as ``K``) of a model that
    learnt it.

    Args:
        null: ``None`` when the model learnt its null label; otherwise why it cannot make unconditional samples
            (``"it has no null label"``), which the error for ``-1`` gives.

    Raises:
        ValueError: one line naming ``labels=`` and the valid range: a label out of range, ``-1`` where ``null``
            says why not, a count that is neither 1 nor ``n``, labels for an unconditional model, an unknown word.
    """
    if num_classes <= 0:
        if labels is not None:
            raise ValueError(f"labels={_shown(labels)} does not apply: this model is unconditional (num_classes=0); "
                             "leave it out")  # fmt: skip
        return None
    if labels is None or (isinstance(labels, str) and labels == "random"):
        return torch.randint(0, num_classes, (n,), generator=generator)
    valid = f"[0, {num_classes - 1}]" + (", or -1 for an unconditional sample" if null is None else "")
    if isinstance(labels, str) and labels == "balanced":
        return torch.arange(n) % num_classes
    if not isinstance(labels, Tensor):
        raw = labels.tolist() if hasattr(labels, "tolist") else labels  # numpy arrays and scalars
        items = list(raw) if isinstance(raw, list | tuple | range) else [raw]
        for item in items:
            if isinstance(item, bool) or not (isinstance(item, int) or str(item).strip().lstrip("-").isdigit()):
                raise ValueError(f"labels={str(item).strip()} is not a class index: use balanced, random, an index in "
                                 f"{valid}, or a list of them")  # fmt: skip
        labels = [int(item) for item in items]
    out = torch.as_tensor(labels, dtype=torch.long).flatten().cpu()
    if out.numel() not in (1, n):
        raise ValueError(f"labels= lists {out.numel()} labels for n={n} images: give one label or n of them")
    if ((out < -1) | (out >= num_classes)).any():
        bad = int(out[(out < -1) | (out >= num_classes)][0])
        raise ValueError(
            f"labels={bad} is out of range: this model has {num_classes} classes, so labels must be in {valid}"
        )
    if null is not None and bool((out == -1).any()):
        raise ValueError(f"labels=-1 (an unconditional sample) does not apply to this model: {null}; use a class in "
                         f"{valid}")  # fmt: skip
    out = torch.where(out < 0, torch.full_like(out, num_classes), out)
    return out.expand(n).clone() if out.numel() == 1 else out


def _shown(labels: LabelsArg) -> str:
    if isinstance(labels, Tensor):
        return str(labels.tolist())
    return str(labels)


def images_to_uint8(x: Tensor) -> Tensor:
    """Float images in ``[-1, 1]`` -> ``uint8 [0, 255]`` on the CPU (rounded, clamped)."""
    return ((x.float().clamp(-1.0, 1.0) + 1.0) * 127.5).round().to(torch.uint8).cpu()


def sampling_context(device: torch.device, amp_dtype: torch.dtype | None) -> contextlib.AbstractContextManager[Any]:
    """``torch.autocast`` on CUDA when ``amp_dtype`` is given, else a no-op."""
    if amp_dtype is None or device.type != "cuda":
        return contextlib.nullcontext()
    return torch.autocast(device_type=device.type, dtype=amp_dtype)


# ---------------------------------------------------------------------------------------------------- DiffAugment
def _translate(x: Tensor, ratio: float) -> Tensor:
    B, _, H, W = x.shape
    sy, sx = int(H * ratio + 0.5), int(W * ratio + 0.5)
    dy = torch.randint(-sy, sy + 1, (B, 1, 1), device=x.device)
    dx = torch.randint(-sx, sx + 1, (B, 1, 1), device=x.device)
    gy = torch.arange(H, device=x.device).view(1, H, 1) + dy  # source row of each output row
    gx = torch.arange(W, device=x.device).view(1, 1, W) + dx
    padded = F.pad(x, (1, 1, 1, 1))  # out-of-range sources read the zero border
    gy = (gy + 1).clamp(0, H + 1).expand(B, H, W)
    gx = (gx + 1).clamp(0, W + 1).expand(B, H, W)
    index = (gy * (W + 2) + gx).reshape(B, 1, H * W).expand(-1, x.shape[1], -1)
    return padded.flatten(2).gather(2, index).reshape_as(x)


def _cutout(x: Tensor, ratio: float) -> Tensor:
    B, _, H, W = x.shape
    ch, cw = int(H * ratio + 0.5), int(W * ratio + 0.5)
    cy = torch.randint(0, H + (1 - ch % 2), (B, 1, 1), device=x.device)
    cx = torch.randint(0, W + (1 - cw % 2), (B, 1, 1), device=x.device)
    ys = torch.arange(H, device=x.device).view(1, H, 1)
    xs = torch.arange(W, device=x.device).view(1, 1, W)
    inside = ((ys - cy).abs() <= ch // 2) & ((xs - cx).abs() <= cw // 2)
    return x * (~inside).unsqueeze(1).to(x.dtype)


def _color(x: Tensor) -> Tensor:
    B = x.shape[0]
    r = lambda: torch.rand(B, 1, 1, 1, device=x.device, dtype=x.dtype)  # noqa: E731
    x = x + (r() - 0.5)  # brightness
    mean = x.mean(dim=(1, 2, 3), keepdim=True)
    return (x - mean) * (r() + 0.5) + mean  # contrast


def diff_augment(x: Tensor, policy: str) -> Tensor:
    """Differentiable augmentation of ``x [B, C, H, W]`` in ``[-1, 1]``: ``policy`` is a comma list of
    ``translation`` (up to 1/8 of the side, zero fill), ``cutout`` (a square of half the side set to 0) and
    ``color`` (brightness, contrast). The same random ops go through real and fake images alike, so the
    discriminator cannot memorise the few real images while the generator still gets gradients."""
    for op in (p.strip() for p in policy.split(",") if p.strip()):
        if op == "translation":
            x = _translate(x, 0.125)
        elif op == "cutout":
            x = _cutout(x, 0.5)
        elif op == "color":
            x = _color(x)
        else:
            raise ValueError(f"unknown DiffAugment op {op!r} (use translation, cutout, color)")
    return x


# ---------------------------------------------------------------------------------------------------- spectral norm
class _SpectralNorm(nn.Module):
    """``W / sigma(W)`` with ``sigma`` estimated by one power iteration per training forward, in float32 (under bf16
    autocast too), the ``u`` vector persisting in a buffer (https://arxiv.org/abs/1802.05957)."""

    def __init__(self, weight: Tensor, *, eps: float = 1e-12) -> None:
        super().__init__()
        rows = weight.shape[0]
        generator = torch.Generator().manual_seed(rows * 7919 + weight.numel())
        u = torch.randn(rows, generator=generator)
        self.register_buffer("u", F.normalize(u, dim=0, eps=eps).to(weight.device))
        self.eps = eps

    def forward(self, weight: Tensor) -> Tensor:
        with torch.autocast(device_type=weight.device.type, enabled=False):
            w = weight.float().flatten(1)
            if self.training:
                with torch.no_grad():
                    v = F.normalize(w.t() @ self.u, dim=0, eps=self.eps)
                    self.u.copy_(F.normalize(w @ v, dim=0, eps=self.eps))
            u = self.u.clone()  # the graph keeps this copy; later forwards update the buffer in place
            v = F.normalize(w.t() @ u, dim=0, eps=self.eps).detach()
            sigma = torch.dot(u, w @ v)
            return (weight.float() / sigma).to(weight.dtype)


def spectral_norm(module: nn.Module, name: str = "weight") -> nn.Module:
    """Register spectral normalisation on ``module.<name>`` (a parametrisation: the trainable tensor is
    ``parametrizations.<name>.original``); returns the module."""
    parametrize.register_parametrization(module, name, _SpectralNorm(getattr(module, name).detach()))
    return module
