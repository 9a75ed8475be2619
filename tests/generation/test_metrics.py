"""Generation metrics: the Fréchet distance and KID, the shipped digits feature network, the evaluator's numbers on
real and blank images, and the FID Inception (architecture, download with hash check, features) on a loopback
server."""

from __future__ import annotations

import hashlib
import shutil

import numpy as np
import pytest
import torch

from vision.hub.download import ChecksumError, OfflineError, sha256_file
from vision.tasks.generation.metrics import (
    DIGITS_FEATURES_CARD,
    FIDInceptionV3,
    GenerationEvaluator,
    fid_inception_v3,
    frechet_distance,
    kernel_distance,
    load_digits_feature_net,
)
from vision.tasks.generation.networks import _asset_path


def test_frechet_distance_closed_forms():
    assert frechet_distance(np.zeros(3), np.eye(3), np.zeros(3), np.eye(3)) == pytest.approx(0.0, abs=1e-12)
    # 1-D: (m1 - m2)^2 + (s1 - s2)^2
    assert frechet_distance(np.array([1.0]), np.array([[4.0]]), np.array([-2.0]), np.array([[9.0]])) == pytest.approx(
        9.0 + 1.0
    )
    # commuting (diagonal) covariances: |dm|^2 + sum (sqrt(a) - sqrt(b))^2
    a, b = np.array([1.0, 4.0, 0.25]), np.array([9.0, 1.0, 0.25])
    want = 2.0 + ((np.sqrt(a) - np.sqrt(b)) ** 2).sum()
    got = frechet_distance(np.ones(3), np.diag(a), np.array([0.0, 2.0, 1.0]), np.diag(b))
    assert got == pytest.approx(want)


def test_frechet_distance_matches_scipy_sqrtm():
    scipy_linalg = pytest.importorskip("scipy.linalg")
    rng = np.random.default_rng(0)
    x, y = rng.normal(size=(200, 16)), rng.normal(size=(300, 16)) @ rng.normal(size=(16, 16)) * 0.3 + 0.5
    m1, s1, m2, s2 = x.mean(0), np.cov(x, rowvar=False), y.mean(0), np.cov(y, rowvar=False)
    covmean = scipy_linalg.sqrtm(s1 @ s2).real
    want = ((m1 - m2) ** 2).sum() + np.trace(s1 + s2 - 2 * covmean)
    assert frechet_distance(m1, s1, m2, s2) == pytest.approx(want, rel=1e-8)


def test_kernel_distance():
    rng = np.random.default_rng(0)
    a, b = rng.normal(size=(400, 8)), rng.normal(size=(400, 8))
    same, std = kernel_distance(a, b, subsets=20, subset_size=200)
    assert abs(same) < 3 * std + 1e-3
    far, _ = kernel_distance(a, b + 1.0, subsets=20, subset_size=200)
    assert far > 10 * max(abs(same), std)


# ---------------------------------------------------------------------------------------------------- digits
def test_shipped_digits_network_is_verified(tmp_path):
    path = _asset_path()
    assert path.is_file() and path.stat().st_size == DIGITS_FEATURES_CARD.file_size < 500_000
    assert sha256_file(path) == DIGITS_FEATURES_CARD.sha256
    net = load_digits_feature_net()
    assert sum(p.numel() for p in net.parameters()) == DIGITS_FEATURES_CARD.num_params
    assert not net.training
    bad = tmp_path / "digits_features.safetensors"
    shutil.copy(path, bad)
    with open(bad, "r+b") as f:
        f.seek(-10, 2)
        f.write(b"\x00" * 10)
    with pytest.raises(ChecksumError, match="SHA-256 mismatch"):
        load_digits_feature_net(bad, card=DIGITS_FEATURES_CARD)


@pytest.fixture(scope="module")
def digits():
    from vision.data import Digits

    train, val = Digits("train", size=32), Digits("val", size=32)
    return (
        torch.stack([train[i][0][:1] for i in range(len(train))]),
        torch.tensor(train.targets),
        torch.stack([val[i][0][:1] for i in range(len(val))]),
        torch.tensor(val.targets),
    )


@pytest.fixture(scope="module")
def evaluator(digits):
    return GenerationEvaluator(digits[0], digits[2])


def test_real_images_score_at_the_floor(evaluator, digits):
    x, y, v, vy = digits
    held = evaluator(v, vy)
    assert held["fd_digits"] == pytest.approx(evaluator.floor) and held["fd_digits_ratio"] == pytest.approx(1.0)
    assert 0 < evaluator.floor < 0.2
    assert held["class_acc"] > 0.99 and held["class_coverage"] == 1.0
    assert sum(held["class_fractions"]) == pytest.approx(1.0, abs=1e-3)
    # real training images of a class-stratified subset (as class-balanced sampling makes) score near the floor
    rng = np.random.default_rng(0)
    pick = np.concatenate([rng.choice(np.flatnonzero(y.numpy() == c), 36, replace=False) for c in range(10)])
    sub = evaluator(x[pick], y[pick])
    assert sub["fd_digits_ratio"] < 1.5, sub
    # ... but they are copies: the nearest-neighbour distance exposes memorisation
    assert sub["nn_median"] == pytest.approx(0.0, abs=1e-6) and sub["nn_ratio"] < 0.01
    assert held["nn_ratio"] == pytest.approx(1.0)


def test_blank_and_noise_images_score_far_away(evaluator):
    blank = evaluator(torch.zeros(400, 1, 32, 32, dtype=torch.uint8))
    noise = evaluator(torch.randint(0, 256, (400, 3, 32, 32), dtype=torch.uint8, generator=torch.Generator()))
    for out in (blank, noise):
        assert out["fd_digits_ratio"] > 100, out
        assert out["class_coverage"] <= 0.2 and out["nn_ratio"] > 2
        assert "class_acc" not in out  # no labels asked for


def test_small_sample_counts_use_a_matching_floor(evaluator, digits):
    v, vy = digits[2], digits[3]
    small = evaluator(v[:100], vy[:100])
    assert small["fd_digits_floor"] > evaluator.floor  # fewer samples: a larger distance for real images too
    assert small["fd_digits_ratio"] < 2.0


# ---------------------------------------------------------------------------------------------------- FID Inception
def test_fid_inception_matches_the_published_layout():
    from torchvision.models import Inception3

    ours = FIDInceptionV3().state_dict()
    tv = Inception3(num_classes=1008, aux_logits=False, init_weights=False).state_dict()
    assert {k: tuple(v.shape) for k, v in ours.items()} == {k: tuple(v.shape) for k, v in tv.items()}


def test_fid_blocks_differ_from_torchvision_only_where_they_should():
    from torchvision.models.inception import InceptionA

    torch.manual_seed(0)
    ours = FIDInceptionV3().Mixed_5b.eval()
    theirs = InceptionA(192, pool_features=32).eval()
    theirs.load_state_dict(ours.state_dict())
    x = torch.rand(1, 192, 9, 9)
    a, b = ours(x), theirs(x)
    torch.testing.assert_close(a[..., 1:-1, 1:-1], b[..., 1:-1, 1:-1])  # padding only matters at the border
    assert not torch.allclose(a[..., 0, 0], b[..., 0, 0])
    assert FIDInceptionV3().Mixed_7c.pool == "max" and FIDInceptionV3().Mixed_7b.pool == "avg"


@pytest.mark.slow
def test_fid_weights_download_hash_check_and_features(file_server, vision_home, monkeypatch):
    torch.manual_seed(0)
    state = {k: v for k, v in FIDInceptionV3().state_dict().items() if not k.endswith("num_batches_tracked")}
    name = "pt_inception-2015-12-05-test.pth"
    torch.save(state, file_server.root / name)
    digest = hashlib.sha256((file_server.root / name).read_bytes()).hexdigest()
    url = file_server.url(name)
    monkeypatch.setenv("VISION_OFFLINE", "1")
    with pytest.raises(OfflineError, match="not in the cache"):
        fid_inception_v3(url=url, sha256=digest)
    monkeypatch.delenv("VISION_OFFLINE")
    with pytest.raises(ChecksumError, match="SHA-256 mismatch"):
        fid_inception_v3(url=url, sha256="6726825d")
    net = fid_inception_v3(url=url, sha256=digest, progress=False)
    torch.testing.assert_close(net.fc.weight, state["fc.weight"])
    from vision.tasks.generation.metrics import inception_features

    images = torch.randint(0, 256, (2, 1, 32, 32), dtype=torch.uint8)
    feats = inception_features(images, net=net)
    assert feats.shape == (2, 2048) and np.isfinite(feats).all()
    requests = len(file_server.requests)
    fid_inception_v3(url=url, sha256=digest)  # cached: verified again, not fetched again
    assert len(file_server.requests) == requests
