"""The networks behind the generation metrics: the shipped digits feature network (and its training routine) and the
FID Inception v3 (pytorch-fid's port of the TensorFlow graph). See :mod:`vision.tasks.generation.metrics`."""

from __future__ import annotations

import math
import os
from functools import lru_cache
from pathlib import Path
from typing import Any

import numpy as np
import torch
import torch.nn.functional as F
from torch import Tensor, nn

from vision.hub.cards import Preprocess, WeightsCard

__all__ = [
    "DIGITS_FEATURES_CARD",
    "FID_WEIGHTS_SHA256",
    "FID_WEIGHTS_URL",
    "DigitsFeatureNet",
    "FIDInceptionV3",
    "digits_features",
    "digits_input",
    "fid_inception_v3",
    "inception_features",
    "load_digits_feature_net",
    "train_digits_feature_net",
]

FID_WEIGHTS_URL = (
    "https://github.com/mseitzer/pytorch-fid/releases/download/fid_weights/pt_inception-2015-12-05-6726825d.pth"
)
FID_WEIGHTS_SHA256 = "6726825d"  # the prefix the file name publishes

# The shipped digits feature network (tools/train_digits_features.py writes it and prints these numbers).
DIGITS_FEATURES_FILE = "digits_features.safetensors"
DIGITS_FEATURES_CARD = WeightsCard(
    url="",
    sha256="45c7c4e051e096971022bc93891ba91f1cac5504d7c94180986e3f4724f37176",
    num_params=105018,
    num_classes=10,
    categories=tuple(str(d) for d in range(10)),
    # grey input: the mean of the RGB channels, resized to 32x32, x / 127.5 - 1 (see digits_input)
    preprocess=Preprocess(input_size=(32, 32), resize_size=32, mean=(0.5, 0.5, 0.5), std=(0.5, 0.5, 0.5), crop=False),
    metrics={"digits val (359 images)": {"acc@1": 0.9972}},
    file_size=425528,
    license="Apache-2.0",
    source="vision-zoo tools/train_digits_features.py (seed 0) on scikit-learn digits, train split",
    filename=DIGITS_FEATURES_FILE,
    package_file=f"vision:assets/{DIGITS_FEATURES_FILE}",
)


# ---------------------------------------------------------------------------------------------------- digits net
def digits_input(images: Tensor, *, size: int = 32) -> Tensor:
    """``uint8 [N, C, H, W]`` (C = 1 or 3; 3 is averaged to grey) -> float ``[N, 1, size, size]`` in ``[-1, 1]``."""
    if images.dim() != 4 or images.shape[1] not in (1, 3):
        raise ValueError(f"expected images [N, 1 or 3, H, W], got {tuple(images.shape)}")
    x = images.float() / 255.0 if images.dtype == torch.uint8 else images.float()
    if x.shape[1] == 3:
        x = x.mean(dim=1, keepdim=True)
    if x.shape[-2:] != (size, size):
        x = F.interpolate(x, size=(size, size), mode="bilinear", align_corners=False, antialias=True)
    return x * 2.0 - 1.0


def _conv(cin: int, cout: int) -> list[nn.Module]:
    return [nn.Conv2d(cin, cout, 3, padding=1, bias=False), nn.BatchNorm2d(cout), nn.ReLU(inplace=True)]


class DigitsFeatureNet(nn.Module):
    """A small digits classifier whose 64-d penultimate features define ``fd_digits``.

    ``forward(x float [N, 1, 32, 32] in [-1, 1]) -> logits [N, 10]``; ``features(x) -> [N, 64]`` (global average pool
    of the last ReLU). Three stages of two 3x3 conv-BN-ReLU layers (16-32, 48-48, 64-64 channels) with 2x2 max pools.
    Use :func:`digits_input` to turn ``uint8`` images into its input.
    """

    def __init__(self, *, num_classes: int = 10) -> None:
        super().__init__()
        self.body = nn.Sequential(
            *_conv(1, 16),
            *_conv(16, 32),
            nn.MaxPool2d(2),
            *_conv(32, 48),
            *_conv(48, 48),
            nn.MaxPool2d(2),
            *_conv(48, 64),
            *_conv(64, 64),
        )
        self.fc = nn.Linear(64, num_classes)
        self.feature_dim = 64

    def features(self, x: Tensor) -> Tensor:
        return self.body(x).mean(dim=(2, 3))

    def forward(self, x: Tensor) -> Tensor:
        return self.fc(self.features(x))


def _asset_path() -> Path:
    from importlib import resources

    return Path(str(resources.files("vision").joinpath(f"assets/{DIGITS_FEATURES_FILE}")))


def load_digits_feature_net(
    path: str | os.PathLike[str] | None = None, *, card: WeightsCard | None = None, device: torch.device | str = "cpu"
) -> DigitsFeatureNet:
    """The shipped :class:`DigitsFeatureNet` (or the one at ``path``), in eval mode on ``device``.

    The file's SHA-256 must match ``card`` (default :data:`DIGITS_FEATURES_CARD`; pass ``card=None`` with a ``path``
    to load an unverified file, e.g. one just trained).

    Raises:
        vision.hub.download.ChecksumError: the file does not match the card (the file is left in place).
    """
    from vision.hub.download import ChecksumError, load_state_dict_file, sha256_file

    if path is None:
        path, card = _asset_path(), card or DIGITS_FEATURES_CARD
    path = Path(path)
    if card is not None and card.sha256:
        actual = sha256_file(path)
        if not actual.startswith(card.sha256):
            raise ChecksumError(
                f"SHA-256 mismatch for {path}: expected {card.sha256}, got {actual} (re-run "
                f"tools/train_digits_features.py and update DIGITS_FEATURES_CARD, or reinstall vision-zoo)"
            )
    net = DigitsFeatureNet()
    net.load_state_dict(load_state_dict_file(path))
    return net.to(device).eval()


@lru_cache(maxsize=4)
def _shipped_net(device: str) -> DigitsFeatureNet:
    return load_digits_feature_net(device=device)


@torch.no_grad()
def digits_features(
    images: Tensor,
    *,
    net: DigitsFeatureNet | None = None,
    batch_size: int = 500,
    device: torch.device | str | None = None,
) -> tuple[np.ndarray, np.ndarray]:
    """``(features float64 [N, 64], logits float64 [N, 10])`` of ``uint8 [N, C, H, W]`` images."""
    device = torch.device(device) if device is not None else torch.device("cpu")
    net = net if net is not None else _shipped_net(str(device))
    feats, logits = [], []
    for start in range(0, len(images), batch_size):
        x = digits_input(images[start : start + batch_size]).to(device)
        f = net.features(x)
        feats.append(f.double().cpu())
        logits.append(net.fc(f).double().cpu())
    if not feats:
        return np.zeros((0, 64)), np.zeros((0, 10))
    return torch.cat(feats).numpy(), torch.cat(logits).numpy()


def _random_affine(x: Tensor, generator: torch.Generator) -> Tensor:
    """Small random rotations (+-12 deg), scales (0.9-1.1) and shifts (+-2 px) of a batch, for training."""
    B = x.shape[0]
    u = lambda lo, hi: lo + (hi - lo) * torch.rand(B, generator=generator)  # noqa: E731
    angle, scale = u(-12.0, 12.0) * math.pi / 180.0, u(0.9, 1.1)
    tx, ty = u(-2.0, 2.0) * 2.0 / x.shape[-1], u(-2.0, 2.0) * 2.0 / x.shape[-2]
    cos, sin = torch.cos(angle) / scale, torch.sin(angle) / scale
    theta = torch.stack([torch.stack([cos, -sin, tx], 1), torch.stack([sin, cos, ty], 1)], 1)
    grid = F.affine_grid(theta, list(x.shape), align_corners=False)
    return F.grid_sample(x + 1.0, grid, align_corners=False, padding_mode="zeros") - 1.0  # pad with black (-1)


def train_digits_feature_net(
    *, epochs: int = 30, batch_size: int = 64, lr: float = 3e-3, seed: int = 0, log: Any = None
) -> tuple[DigitsFeatureNet, float]:
    """Train :class:`DigitsFeatureNet` deterministically on the digits ``train`` split (32 px, val_fraction 0.2,
    split seed 0) with random affine augmentation, AdamW and a cosine schedule, on the CPU with one thread.

    Returns:
        ``(net in eval mode, top-1 accuracy on the val split)``.
    """
    from vision.data import Digits

    threads = torch.get_num_threads()
    torch.set_num_threads(1)
    deterministic = torch.are_deterministic_algorithms_enabled()
    torch.use_deterministic_algorithms(True)
    try:
        torch.manual_seed(seed)
        generator = torch.Generator().manual_seed(seed)
        train, val = Digits("train", size=32), Digits("val", size=32)
        x = digits_input(torch.stack([train[i][0] for i in range(len(train))]))
        y = torch.tensor(train.targets)
        xv = digits_input(torch.stack([val[i][0] for i in range(len(val))]))
        yv = torch.tensor(val.targets)
        net = DigitsFeatureNet()
        opt = torch.optim.AdamW(net.parameters(), lr=lr, weight_decay=5e-4)
        steps = epochs * (len(x) // batch_size)
        sched = torch.optim.lr_scheduler.OneCycleLR(opt, max_lr=lr, total_steps=steps, pct_start=0.15)
        for epoch in range(epochs):
            net.train()
            order = torch.randperm(len(x), generator=generator)
            for i in range(len(x) // batch_size):
                idx = order[i * batch_size : (i + 1) * batch_size]
                loss = F.cross_entropy(net(_random_affine(x[idx], generator)), y[idx], label_smoothing=0.05)
                opt.zero_grad(set_to_none=True)
                loss.backward()
                opt.step()
                sched.step()
            if log is not None:
                net.eval()
                with torch.no_grad():
                    acc = float((net(xv).argmax(1) == yv).float().mean())
                log(f"epoch {epoch + 1}/{epochs}: loss {loss.item():.4f}, val top-1 {acc:.4f}")
        net.eval()
        with torch.no_grad():
            acc = float((net(xv).argmax(1) == yv).float().mean())
        return net, acc
    finally:
        torch.set_num_threads(threads)
        torch.use_deterministic_algorithms(deterministic)


# ---------------------------------------------------------------------------------------------------- FID Inception
def _fid_blocks() -> dict[str, type[nn.Module]]:
    from torchvision.models import inception as tvi

    class FIDInceptionA(tvi.InceptionA):
        """InceptionA whose pool branch averages without counting the zero padding (TF's behaviour)."""

        def forward(self, x: Tensor) -> Tensor:
            b1 = self.branch1x1(x)
            b5 = self.branch5x5_2(self.branch5x5_1(x))
            b3 = self.branch3x3dbl_3(self.branch3x3dbl_2(self.branch3x3dbl_1(x)))
            bp = self.branch_pool(F.avg_pool2d(x, 3, stride=1, padding=1, count_include_pad=False))
            return torch.cat([b1, b5, b3, bp], 1)

    class FIDInceptionC(tvi.InceptionC):
        """InceptionC with the padding-excluding average pool."""

        def forward(self, x: Tensor) -> Tensor:
            b1 = self.branch1x1(x)
            b7 = self.branch7x7_3(self.branch7x7_2(self.branch7x7_1(x)))
            bd = x
            for layer in (self.branch7x7dbl_1, self.branch7x7dbl_2, self.branch7x7dbl_3, self.branch7x7dbl_4):
                bd = layer(bd)
            bd = self.branch7x7dbl_5(bd)
            bp = self.branch_pool(F.avg_pool2d(x, 3, stride=1, padding=1, count_include_pad=False))
            return torch.cat([b1, b7, bd, bp], 1)

    class FIDInceptionE(tvi.InceptionE):
        """InceptionE with ``pool="avg"`` (padding-excluding average: Mixed_7b) or ``"max"`` (Mixed_7c) pooling."""

        def __init__(self, in_channels: int, *, pool: str) -> None:
            super().__init__(in_channels)
            self.pool = pool

        def forward(self, x: Tensor) -> Tensor:
            b1 = self.branch1x1(x)
            b3 = self.branch3x3_1(x)
            b3 = torch.cat([self.branch3x3_2a(b3), self.branch3x3_2b(b3)], 1)
            bd = self.branch3x3dbl_2(self.branch3x3dbl_1(x))
            bd = torch.cat([self.branch3x3dbl_3a(bd), self.branch3x3dbl_3b(bd)], 1)
            if self.pool == "max":
                pooled = F.max_pool2d(x, 3, stride=1, padding=1)
            else:
                pooled = F.avg_pool2d(x, 3, stride=1, padding=1, count_include_pad=False)
            return torch.cat([b1, b3, bd, self.branch_pool(pooled)], 1)

    return {"A": FIDInceptionA, "C": FIDInceptionC, "E": FIDInceptionE}


class FIDInceptionV3(nn.Module):
    """The Inception v3 of the TF FID graph (pytorch-fid's port), built from torchvision's blocks.

    ``forward(x float [N, 3, H, W] in [0, 1]) -> pool3 features float [N, 2048]``: the input is resized to 299x299
    (bilinear, no antialiasing) and scaled to ``[-1, 1]``; ``logits(x) -> [N, 1008]``. Parameter names match the
    published file (``Conv2d_1a_3x3.conv.weight`` ... ``Mixed_7c.branch_pool.bn.running_var``, ``fc.weight``).
    """

    def __init__(self) -> None:
        super().__init__()
        from torchvision.models import inception as tvi

        blocks = _fid_blocks()
        conv = tvi.BasicConv2d
        self.Conv2d_1a_3x3 = conv(3, 32, kernel_size=3, stride=2)
        self.Conv2d_2a_3x3 = conv(32, 32, kernel_size=3)
        self.Conv2d_2b_3x3 = conv(32, 64, kernel_size=3, padding=1)
        self.Conv2d_3b_1x1 = conv(64, 80, kernel_size=1)
        self.Conv2d_4a_3x3 = conv(80, 192, kernel_size=3)
        self.Mixed_5b = blocks["A"](192, pool_features=32)
        self.Mixed_5c = blocks["A"](256, pool_features=64)
        self.Mixed_5d = blocks["A"](288, pool_features=64)
        self.Mixed_6a = tvi.InceptionB(288)
        self.Mixed_6b = blocks["C"](768, channels_7x7=128)
        self.Mixed_6c = blocks["C"](768, channels_7x7=160)
        self.Mixed_6d = blocks["C"](768, channels_7x7=160)
        self.Mixed_6e = blocks["C"](768, channels_7x7=192)
        self.Mixed_7a = tvi.InceptionD(768)
        self.Mixed_7b = blocks["E"](1280, pool="avg")
        self.Mixed_7c = blocks["E"](2048, pool="max")
        self.fc = nn.Linear(2048, 1008)

    def forward(self, x: Tensor) -> Tensor:
        x = F.interpolate(x, size=(299, 299), mode="bilinear", align_corners=False)
        x = 2.0 * x - 1.0
        x = self.Conv2d_2b_3x3(self.Conv2d_2a_3x3(self.Conv2d_1a_3x3(x)))
        x = F.max_pool2d(x, 3, stride=2)
        x = self.Conv2d_4a_3x3(self.Conv2d_3b_1x1(x))
        x = F.max_pool2d(x, 3, stride=2)
        for name in ("5b", "5c", "5d", "6a", "6b", "6c", "6d", "6e", "7a", "7b", "7c"):
            x = getattr(self, f"Mixed_{name}")(x)
        return x.mean(dim=(2, 3))

    def logits(self, x: Tensor) -> Tensor:
        return self.fc(self.forward(x))


def fid_inception_v3(
    *,
    url: str = FID_WEIGHTS_URL,
    sha256: str | None = FID_WEIGHTS_SHA256,
    path: str | os.PathLike[str] | None = None,
    device: torch.device | str = "cpu",
    progress: bool | None = None,
) -> FIDInceptionV3:
    """The FID network with pytorch-fid's weights, downloaded into the cache on first use (SHA-256 checked) or read
    from ``path``; in eval mode on ``device``.

    Raises:
        vision.hub.download.OfflineError: ``VISION_OFFLINE=1`` and the file is not cached.
        vision.hub.download.ChecksumError: the file does not match ``sha256``.
        RuntimeError: the file's tensors do not fit the network (names the missing/unexpected keys).
    """
    from vision.hub.download import download, load_state_dict_file

    file = Path(path) if path is not None else download(url, sha256=sha256, progress=progress)
    state = load_state_dict_file(file)
    net = FIDInceptionV3()
    missing, unexpected = net.load_state_dict(state, strict=False)
    missing = [k for k in missing if not k.endswith("num_batches_tracked")]
    if missing or unexpected:
        raise RuntimeError(f"{file} does not fit the FID Inception: missing {missing[:5]}, unexpected {unexpected[:5]}")
    return net.to(device).eval()


@torch.no_grad()
def inception_features(
    images: Tensor, *, net: FIDInceptionV3, batch_size: int = 100, device: torch.device | str | None = None
) -> np.ndarray:
    """pool3 features ``float64 [N, 2048]`` of ``uint8 [N, C, H, W]`` images (grey replicated to RGB)."""
    device = torch.device(device) if device is not None else next(net.parameters()).device
    out = []
    for start in range(0, len(images), batch_size):
        x = images[start : start + batch_size].to(device).float() / 255.0
        if x.shape[1] == 1:
            x = x.expand(-1, 3, -1, -1)
        out.append(net(x).double().cpu())
    return torch.cat(out).numpy() if out else np.zeros((0, 2048))
