"""Quality metrics of generated images: FID/KID with the standard Inception weights, and a Fréchet distance in the
features of a small digits classifier that ships with the package (always available).

**FID / KID** (https://arxiv.org/abs/1706.08500, https://arxiv.org/abs/1801.01401). The reference numbers of the field
use the TensorFlow Inception graph of 2015-12-05, whose PyTorch port is pytorch-fid's
``pt_inception-2015-12-05-6726825d.pth`` (:data:`FID_WEIGHTS_URL`; the ``6726825d`` in its name is the prefix of its
SHA-256, checked by :func:`vision.hub.download.download` like every weight file). That network is *not* torchvision's
Inception v3: :class:`FIDInceptionV3` rebuilds it from torchvision's Inception blocks with its differences (average
pools that do not count padding in the A, C and first E blocks, a max pool in the last E block, a 1008-way ``fc``),
and takes images resized to 299x299 (bilinear) and scaled to ``[-1, 1]``; features are the 2048-d global average pool.
Nothing is downloaded unless asked for (``fid=true`` in training, ``--fid`` in the benchmark), and
``VISION_OFFLINE=1`` turns a cache miss into an error.

**fd_digits** — *not FID*: the Fréchet distance between the 64-d penultimate features of :class:`DigitsFeatureNet`,
a 0.1M-parameter CNN trained on the digits ``train`` split (``tools/train_digits_features.py``; the weights are
``vision/assets/digits_features.safetensors``, SHA-256-verified on load), of generated and real 32x32 grey images.
It is only meaningful for digit-like images. :class:`GenerationEvaluator` reports it next to:

- ``fd_digits_floor``: the same distance for held-out *real* images (the ``val`` split) at the same sample count —
  the best a generator can be expected to do; ``fd_digits_ratio = fd_digits / fd_digits_floor``;
- ``class_acc``: how often the classifier recognises the requested class in class-conditional samples;
- ``class_coverage``: fraction of the classes that receive at least 5% of the samples (by the classifier's
  prediction), with the per-class fractions ``class_fractions``;
- ``nn_median`` / ``nn_median_heldout``: median distance (RMS over pixels of 32x32 grey images in ``[0, 1]``) from each
  generated / held-out real image to its nearest training image; ``nn_ratio`` well below 1 means memorisation.
"""

from __future__ import annotations

import math
from collections.abc import Sequence
from typing import Any

import numpy as np
import torch
from torch import Tensor

from vision.tasks.generation.networks import (
    DIGITS_FEATURES_CARD,
    FID_WEIGHTS_SHA256,
    FID_WEIGHTS_URL,
    DigitsFeatureNet,
    FIDInceptionV3,
    digits_features,
    digits_input,
    fid_inception_v3,
    inception_features,
    load_digits_feature_net,
    train_digits_feature_net,
)

__all__ = [
    "DIGITS_FEATURES_CARD",
    "FID_WEIGHTS_SHA256",
    "FID_WEIGHTS_URL",
    "DigitsFeatureNet",
    "FIDInceptionV3",
    "GenerationEvaluator",
    "digits_features",
    "digits_input",
    "feature_stats",
    "fid_inception_v3",
    "frechet_distance",
    "inception_features",
    "kernel_distance",
    "load_digits_feature_net",
    "nearest_neighbour_distances",
    "train_digits_feature_net",
]


# ---------------------------------------------------------------------------------------------------- statistics
def feature_stats(features: np.ndarray | Tensor) -> tuple[np.ndarray, np.ndarray]:
    """Mean ``[D]`` and covariance ``[D, D]`` (float64, unbiased) of features ``[N, D]``."""
    f = np.asarray(features.detach().cpu() if isinstance(features, Tensor) else features, dtype=np.float64)
    if f.ndim != 2 or len(f) < 2:
        raise ValueError(f"need features [N >= 2, D], got shape {f.shape}")
    return f.mean(axis=0), np.cov(f, rowvar=False)


def _psd_sqrt(a: np.ndarray) -> np.ndarray:
    w, v = np.linalg.eigh((a + a.T) / 2.0)
    return (v * np.sqrt(np.clip(w, 0.0, None))) @ v.T


def frechet_distance(mu1: np.ndarray, sigma1: np.ndarray, mu2: np.ndarray, sigma2: np.ndarray) -> float:
    """``|mu1 - mu2|^2 + tr(S1 + S2 - 2 (S1 S2)^(1/2))`` between two Gaussians.

    The trace of ``(S1 S2)^(1/2)`` is computed as ``sum(sqrt(eig(S1^(1/2) S2 S1^(1/2))))`` — a symmetric positive
    semi-definite matrix with the same eigenvalues — so there are no complex parts to drop; negative round-off
    eigenvalues are clipped to 0. The result is clipped at 0.
    """
    mu1, mu2 = np.asarray(mu1, np.float64), np.asarray(mu2, np.float64)
    s1, s2 = np.atleast_2d(np.asarray(sigma1, np.float64)), np.atleast_2d(np.asarray(sigma2, np.float64))
    root = _psd_sqrt(s1)
    eig = np.linalg.eigvalsh(root @ s2 @ root)
    tr_covmean = float(np.sqrt(np.clip(eig, 0.0, None)).sum())
    diff = mu1 - mu2
    return max(0.0, float(diff @ diff + np.trace(s1) + np.trace(s2) - 2.0 * tr_covmean))


def kernel_distance(
    f1: np.ndarray | Tensor, f2: np.ndarray | Tensor, *, subsets: int = 100, subset_size: int = 1000, seed: int = 0
) -> tuple[float, float]:
    """KID: unbiased MMD^2 with the cubic polynomial kernel ``(x.y / D + 1)^3``, mean and std over ``subsets``
    random subsets of ``min(subset_size, N1, N2)`` features from each set."""
    a = np.asarray(f1.cpu() if isinstance(f1, Tensor) else f1, np.float64)
    b = np.asarray(f2.cpu() if isinstance(f2, Tensor) else f2, np.float64)
    d = a.shape[1]
    m = min(subset_size, len(a), len(b))
    if m < 2:
        raise ValueError("KID needs at least 2 samples in each set")
    rng = np.random.default_rng(seed)
    values = []
    for _ in range(subsets):
        x = a[rng.choice(len(a), m, replace=False)]
        y = b[rng.choice(len(b), m, replace=False)]
        kxx = (x @ x.T / d + 1.0) ** 3
        kyy = (y @ y.T / d + 1.0) ** 3
        kxy = (x @ y.T / d + 1.0) ** 3
        off = m * (m - 1)
        values.append((kxx.sum() - np.trace(kxx)) / off + (kyy.sum() - np.trace(kyy)) / off - 2.0 * kxy.sum() / (m * m))
    return float(np.mean(values)), float(np.std(values))


# ---------------------------------------------------------------------------------------------------- evaluator
def _grey32(images: Tensor) -> Tensor:
    return ((digits_input(images) + 1.0) * 0.5).flatten(1)


def nearest_neighbour_distances(queries: Tensor, reference: Tensor, *, chunk: int = 1024) -> np.ndarray:
    """For each ``uint8`` query image, the RMS pixel distance (32x32 grey, ``[0, 1]``) to its nearest reference."""
    q, r = _grey32(queries), _grey32(reference)
    out = []
    for start in range(0, len(q), chunk):
        d = torch.cdist(q[start : start + chunk].double(), r.double())
        out.append(d.min(dim=1).values / math.sqrt(q.shape[1]))
    return torch.cat(out).numpy() if out else np.zeros((0,))


class GenerationEvaluator:
    """Scores generated images against a training set and a held-out real set (see the module docstring).

    Args:
        train_images: ``uint8 [N, C, H, W]`` the model was trained on (the Fréchet reference).
        heldout_images: ``uint8 [M, C, H, W]`` real images not trained on (the floor, the nearest-neighbour baseline).
        classify: report class accuracy and coverage (digits data only).
        fid_net: an :class:`FIDInceptionV3` to also report ``fid`` and ``kid`` (against ``train_images``).
        device: where the feature networks run.
        seed: seed of the subsets drawn for small sample counts.

    ``evaluator(images uint8 [n, C, H, W], labels int64 [n] | None) -> dict`` of metrics.

    Example:
        >>> ev = GenerationEvaluator(train_uint8, val_uint8)
        >>> images, labels = model.sample(1000, labels="balanced", return_labels=True)
        >>> ev(images, labels)["fd_digits"], ev.floor
    """

    def __init__(
        self,
        train_images: Tensor,
        heldout_images: Tensor,
        *,
        classify: bool = True,
        fid_net: FIDInceptionV3 | None = None,
        device: torch.device | str | None = None,
        seed: int = 0,
    ) -> None:
        if len(heldout_images) < 2 or len(train_images) < 2:
            raise ValueError("GenerationEvaluator needs at least 2 training and 2 held-out images")
        self.device = torch.device(device) if device is not None else torch.device("cpu")
        self.classify = classify
        self.seed = seed
        self.train_images = train_images
        self.heldout_images = heldout_images
        train_f, _ = digits_features(train_images, device=self.device)
        self.heldout_features, _ = digits_features(heldout_images, device=self.device)
        self.train_stats = feature_stats(train_f)
        self.floor = frechet_distance(*feature_stats(self.heldout_features), *self.train_stats)
        self.nn_heldout = float(np.median(nearest_neighbour_distances(heldout_images, train_images)))
        self.fid_net = fid_net
        self.fid_train = self.fid_stats = None
        if fid_net is not None:
            self.fid_train = inception_features(train_images, net=fid_net, device=self.device)
            self.fid_stats = feature_stats(self.fid_train)

    def fd_at_heldout_count(self, features: np.ndarray) -> tuple[float, float]:
        """``(fd, floor)`` at the same sample count: with ``n >= M`` generated features, the mean distance over the
        ``n // M`` disjoint chunks of ``M``, against the full held-out floor; with ``n < M``, all ``n`` against the
        mean floor of 5 random held-out subsets of ``n``."""
        m, n = len(self.heldout_features), len(features)
        if n < 2:
            raise ValueError("need at least 2 generated images")
        if n >= m:
            chunks = [features[i * m : (i + 1) * m] for i in range(n // m)]
            fd = float(np.mean([frechet_distance(*feature_stats(c), *self.train_stats) for c in chunks]))
            return fd, self.floor
        rng = np.random.default_rng(self.seed)
        floors = [
            frechet_distance(*feature_stats(self.heldout_features[rng.choice(m, n, replace=False)]), *self.train_stats)
            for _ in range(5)
        ]
        return frechet_distance(*feature_stats(features), *self.train_stats), float(np.mean(floors))

    def __call__(self, images: Tensor, labels: Tensor | Sequence[int] | None = None) -> dict[str, Any]:
        feats, logits = digits_features(images, device=self.device)
        fd, floor = self.fd_at_heldout_count(feats)
        nn_gen = float(np.median(nearest_neighbour_distances(images, self.train_images)))
        out: dict[str, Any] = {
            "fd_digits": fd,
            "fd_digits_floor": floor,
            "fd_digits_ratio": fd / max(floor, 1e-12),
            "nn_median": nn_gen,
            "nn_median_heldout": self.nn_heldout,
            "nn_ratio": nn_gen / max(self.nn_heldout, 1e-12),
            "samples": len(images),
        }
        if self.classify:
            pred = logits.argmax(axis=1)
            fractions = np.bincount(pred, minlength=logits.shape[1]) / max(1, len(pred))
            out["class_coverage"] = float((fractions >= 0.05).mean())
            out["class_fractions"] = [round(float(f), 4) for f in fractions]
            if labels is not None:
                lab = np.asarray(torch.as_tensor(labels).cpu())
                out["class_acc"] = float((pred == lab).mean())
        if self.fid_net is not None:
            f = inception_features(images, net=self.fid_net, device=self.device)
            out["fid"] = frechet_distance(*feature_stats(f), *self.fid_stats)
            out["kid"], out["kid_std"] = kernel_distance(f, self.fid_train)
        return out
