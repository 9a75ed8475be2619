"""CSP-Darknet with C2f blocks and SPPF: the backbone of the YOLO detectors, sizes n / s / m / l.

Papers: CSPNet https://arxiv.org/abs/1911.11929 (cross-stage partial connections), YOLOv4
https://arxiv.org/abs/2004.10934 (CSP-Darknet, spatial pyramid pooling), YOLOX https://arxiv.org/abs/2107.08430.
The C2f block (a CSP block whose every bottleneck output also feeds the final 1x1 fusion) and the sequential
max-pool SPP ("SPPF") follow the publicly described YOLOv8 layout; the code is our own.

Layout (base widths, scaled by ``width`` and capped at ``max_channels``; block counts scaled by ``depth``)::

    stem    ConvBNAct(3 -> 64, 3x3, s2)                                  C1  stride 2
    stage1  ConvBNAct(64 -> 128, s2)   C2f(128, n=3, shortcut)          C2  stride 4
    stage2  ConvBNAct(128 -> 256, s2)  C2f(256, n=6, shortcut)          C3  stride 8
    stage3  ConvBNAct(256 -> 512, s2)  C2f(512, n=6, shortcut)          C4  stride 16
    stage4  ConvBNAct(512 -> 1024, s2) C2f(1024, n=3, shortcut) SPPF    C5  stride 32

Sizes (``depth``, ``width``, ``max_channels``): n (0.33, 0.25, 1024), s (0.33, 0.50, 1024), m (0.67, 0.75, 768),
l (1.00, 1.00, 512). Norms are BatchNorm (eps 1e-3, momentum 0.03), activations SiLU.

Registered in ``BACKBONES`` as ``csp_darknet_n`` ... ``csp_darknet_l``: ``create_backbone("csp_darknet_s",
out_indices=(2, 3, 4))`` gives ``C3``-``C5``; ``create_model("csp_darknet_s", num_classes=10)`` a classifier (global
average pool + linear on ``C5``). No pretrained weights are published for these networks.

Example:
    >>> backbone = vision.create_backbone("csp_darknet_n", out_indices=(2, 3, 4))
    >>> {k: tuple(v.shape) for k, v in backbone(torch.randn(1, 3, 256, 256)).items()}
    {'C3': (1, 64, 32, 32), 'C4': (1, 128, 16, 16), 'C5': (1, 256, 8, 8)}
"""

from __future__ import annotations

import math
from dataclasses import dataclass

import torch
import torch.nn.functional as F
from torch import Tensor, nn

from vision.backbones._base import Family, stages_from
from vision.backbones._factory import register_variant

__all__ = ["SIZES", "SPPF", "Bottleneck", "C2f", "CSPDarknet", "ConvBNAct", "DarknetSize", "SiLU", "scale_channels"]


# --------------------------------------------------------------------------------------------------------- blocks
class SiLU(nn.SiLU):
    """``x * sigmoid(x)``, in place wherever autograd does not record it (inference, frozen layers).

    Where autograd records it, an in-place SiLU makes autograd keep a copy of its input for the backward pass (the
    derivative needs the input it overwrites): one more full copy of every activation of a training step than the
    out-of-place function, which keeps the input it already has. Shape-preserving: ``[*] -> [*]``.
    """

    def forward(self, x: Tensor) -> Tensor:
        return F.silu(x, inplace=not (torch.is_grad_enabled() and x.requires_grad))


class ConvBNAct(nn.Sequential):
    """``Conv2d (no bias, 'same' padding) -> BatchNorm2d -> SiLU``: ``[B, c_in, H, W] -> [B, c_out, H/s, W/s]``."""

    def __init__(self, c_in: int, c_out: int, kernel: int = 1, stride: int = 1, *, groups: int = 1) -> None:
        super().__init__(
            nn.Conv2d(c_in, c_out, kernel, stride, kernel // 2, groups=groups, bias=False),
            nn.BatchNorm2d(c_out, eps=1e-3, momentum=0.03),
            SiLU(),
        )
        self.out_channels = c_out


class Bottleneck(nn.Module):
    """Residual pair of 3x3 ``ConvBNAct`` keeping the width: ``[B, c, H, W] -> [B, c, H, W]``.

    ``y = body(x) + x`` with ``shortcut=True``, else ``y = body(x)``; ``body`` is two 3x3 ``ConvBNAct`` ``c -> c``.
    """

    def __init__(self, channels: int, *, shortcut: bool = True) -> None:
        super().__init__()
        self.body = nn.Sequential(ConvBNAct(channels, channels, 3), ConvBNAct(channels, channels, 3))
        self.residual = bool(shortcut)

    def forward(self, x: Tensor) -> Tensor:
        out = self.body(x)
        if self.residual:
            out = out + x
        return out


class C2f(nn.Module):
    """Cross-stage partial block that keeps every intermediate map: ``[B, c_in, H, W] -> [B, c_out, H, W]``.

    Split-transform-merge (CSPNet) with ``h = int(c_out * expansion)``:

    1. ``expand`` (1x1 ``ConvBNAct``) maps the input to ``2h`` channels, read as two parts of ``h``;
    2. the second part runs through a chain of ``n`` :class:`Bottleneck` (width ``h``), each reading the previous
       one's output;
    3. ``merge`` (1x1 ``ConvBNAct``) fuses the ``2h`` expanded channels and the ``n`` chain outputs (``(2 + n) h``
       channels, concatenated in that order) to ``c_out``.
    """

    def __init__(self, c_in: int, c_out: int, *, n: int = 1, shortcut: bool = False, expansion: float = 0.5) -> None:
        super().__init__()
        self.hidden = int(c_out * expansion)
        self.expand = ConvBNAct(c_in, 2 * self.hidden, 1)
        self.chain = nn.ModuleList(Bottleneck(self.hidden, shortcut=shortcut) for _ in range(n))
        self.merge = ConvBNAct((2 + len(self.chain)) * self.hidden, c_out, 1)
        self.out_channels = c_out

    def forward(self, x: Tensor) -> Tensor:
        expanded = self.expand(x)
        kept = [expanded]  # both parts, in channel order
        stream = expanded[:, self.hidden :]
        for block in self.chain:
            stream = block(stream)
            kept.append(stream)
        return self.merge(torch.cat(kept, dim=1))


class SPPF(nn.Module):
    """Fast spatial pyramid pooling: one ``k x k`` stride-1 max-pool applied three times in a row, so the three
    pooled maps see windows of ``k``, ``2k - 1`` and ``3k - 2`` pixels: ``[B, c_in, H, W] -> [B, c_out, H, W]``.

    ``reduce`` (1x1 ``ConvBNAct``) to ``h = c_in // 2`` channels, the three pooled maps concatenated after the reduced
    map (``4h`` channels), ``merge`` (1x1 ``ConvBNAct``) to ``c_out``.
    """

    def __init__(self, c_in: int, c_out: int, *, kernel: int = 5) -> None:
        super().__init__()
        hidden = c_in // 2
        self.reduce = ConvBNAct(c_in, hidden, 1)
        self.pool = nn.MaxPool2d(kernel_size=kernel, stride=1, padding=kernel // 2)
        self.merge = ConvBNAct(4 * hidden, c_out, 1)
        self.out_channels = c_out

    def forward(self, x: Tensor) -> Tensor:
        reduced = self.reduce(x)
        small = self.pool(reduced)
        medium = self.pool(small)
        large = self.pool(medium)
        return self.merge(torch.cat((reduced, small, medium, large), dim=1))


# --------------------------------------------------------------------------------------------------------- model
@dataclass(frozen=True)
class DarknetSize:
    """Scaling of one size: block counts times ``depth``, widths times ``width`` capped at ``max_channels``."""

    depth: float
    width: float
    max_channels: int

    def channels(self, base: int) -> int:
        return scale_channels(base, self.width, self.max_channels)

    def blocks(self, base: int) -> int:
        return max(round(base * self.depth), 1)


#: the sizes of the YOLO family
SIZES: dict[str, DarknetSize] = {
    "n": DarknetSize(0.33, 0.25, 1024),
    "s": DarknetSize(0.33, 0.50, 1024),
    "m": DarknetSize(0.67, 0.75, 768),
    "l": DarknetSize(1.00, 1.00, 512),
}

_BASE_CHANNELS = (64, 128, 256, 512, 1024)
_BASE_BLOCKS = (3, 6, 6, 3)


def scale_channels(base: int, width: float, max_channels: int = 1 << 30, *, divisor: int = 8) -> int:
    """``min(base, max_channels) * width`` rounded up to a multiple of ``divisor``."""
    return int(math.ceil(min(base, max_channels) * width / divisor) * divisor)


class CSPDarknet(nn.Module):
    """The CSP-Darknet network with a classification head (``pool``, ``fc``); see the module docstring.

    ``forward(x [B, 3, H, W]) -> logits [B, num_classes]``. As a backbone (``create_backbone``) the head is removed and
    the stages return ``C1``-``C5`` (strides 2-32, channels :attr:`stage_channels`).
    """

    def __init__(self, *, size: str | DarknetSize = "n", num_classes: int = 1000, in_channels: int = 3) -> None:
        super().__init__()
        cfg = SIZES[size] if isinstance(size, str) else size
        c = [cfg.channels(b) for b in _BASE_CHANNELS]
        n = [cfg.blocks(b) for b in _BASE_BLOCKS]
        self.stage_channels: tuple[int, ...] = tuple(c)
        self.stem = ConvBNAct(in_channels, c[0], 3, 2)
        stages = []
        for i in range(4):
            layers: list[nn.Module] = [ConvBNAct(c[i], c[i + 1], 3, 2), C2f(c[i + 1], c[i + 1], n=n[i], shortcut=True)]
            if i == 3:
                layers.append(SPPF(c[4], c[4]))
            stages.append(nn.Sequential(*layers))
        self.stage1, self.stage2, self.stage3, self.stage4 = stages
        self.pool = nn.AdaptiveAvgPool2d(1)
        self.fc = nn.Linear(c[4], num_classes)

    def forward(self, x: Tensor) -> Tensor:
        for name in ("stem", "stage1", "stage2", "stage3", "stage4"):
            x = getattr(self, name)(x)
        return self.fc(torch.flatten(self.pool(x), 1))


def _family(size: str) -> Family:
    channels = tuple(SIZES[size].channels(b) for b in _BASE_CHANNELS)
    groups = [("stem",), ("stage1",), ("stage2",), ("stage3",), ("stage4",)]
    return Family(
        stages=lambda net: stages_from(groups, channels, (2, 4, 8, 16, 32)),
        head_modules=("pool", "fc"),
        head=lambda m, outs: m.fc(torch.flatten(m.pool(outs[-1]), 1)),
        classifier=("fc.",),
    )


def _maker(size: str):
    def make(*, num_classes: int, **kwargs: object) -> nn.Module:
        return CSPDarknet(size=size, num_classes=num_classes, **kwargs)  # type: ignore[arg-type]

    make.__module__ = __name__
    return make


for _size in SIZES:
    register_variant(f"csp_darknet_{_size}", _maker(_size), _family(_size), tags=("yolo",))
