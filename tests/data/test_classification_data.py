"""ImageFolder and Digits: contents, labels, splits, determinism, the corrupt-file rule."""

from __future__ import annotations

import warnings
from pathlib import Path

import numpy as np
import pytest
import torch
from torch.utils.data import DataLoader

from vision.data import BadSampleWarning, Digits, ImageFolder, build_transform
from vision.registry import DATASETS


def test_image_folder_contents(image_folder: Path) -> None:
    ds = ImageFolder(image_folder)
    assert ds.classes == ["cat", "dog", "fish"]
    assert ds.class_to_idx == {"cat": 0, "dog": 1, "fish": 2}
    assert len(ds) == 6  # the .txt is ignored, the nested and upper-case-suffix images are found
    assert ds.targets == [0, 0, 1, 1, 1, 2]
    image, label = ds[0]
    assert image.dtype == torch.uint8 and image.shape == (3, 20, 24) and label == 0


def test_image_folder_corrupt_file_is_reported_once_and_replaced(image_folder: Path) -> None:
    ds = ImageFolder(image_folder)
    bad = ds.samples.index((str(image_folder / "dog" / "b.png"), 1))
    with pytest.warns(BadSampleWarning, match=r"dog/b\.png.*cannot be decoded"):
        image, label = ds[bad]
    assert (image.shape, label) == ((3, 10, 12), 1)  # the next sample (dog/c.png) stands in
    with warnings.catch_warnings():
        warnings.simplefilter("error", BadSampleWarning)  # a second access does not warn again
        ds[bad]
    entries = ds.bad_samples
    assert list(entries) == ["unreadable"] and entries["unreadable"][0].file.endswith("b.png")
    assert "dog/b.png" in ds.report() and "unreadable: 1" in ds.report()


def test_image_folder_loader_with_workers_reports_in_main_process(image_folder: Path) -> None:
    ds = ImageFolder(image_folder, transform=build_transform("classification_eval", size=16, crop_pct=1.0))
    loader = DataLoader(ds, batch_size=3, num_workers=2)
    with warnings.catch_warnings():
        warnings.simplefilter("ignore", BadSampleWarning)
        batches = list(loader)
    assert [b[0].shape for b in batches] == [(3, 3, 16, 16)] * 2  # batches stay full
    assert torch.cat([b[1] for b in batches]).tolist() == [0, 0, 1, 1, 1, 2]
    assert [e.file for e in ds.bad_samples["unreadable"]] == [str(image_folder / "dog" / "b.png")]


def test_image_folder_transform_receives_hwc_numpy(image_folder: Path) -> None:
    seen = []
    ds = ImageFolder(image_folder, transform=lambda im: seen.append((type(im), im.shape, im.dtype)) or im)
    ds[0]
    assert seen == [(np.ndarray, (20, 24, 3), np.uint8)]


def test_image_folder_errors(tmp_path: Path) -> None:
    with pytest.raises(FileNotFoundError, match="not a folder"):
        ImageFolder(tmp_path / "nope")
    (tmp_path / "empty").mkdir()
    with pytest.raises(FileNotFoundError, match="no class sub-folders"):
        ImageFolder(tmp_path / "empty")


def test_digits_shapes_labels_and_splits() -> None:
    train, val, everything = Digits("train"), Digits("val"), Digits("all")
    assert (len(train), len(val), len(everything)) == (1438, 359, 1797)
    assert Digits.classes == [str(d) for d in range(10)]
    image, label = train[0]
    assert image.dtype == torch.uint8 and image.shape == (3, 32, 32) and isinstance(label, int)
    assert torch.equal(image[0], image[1]) and torch.equal(image[0], image[2])  # grey replicated
    assert set(train.indices.tolist()).isdisjoint(val.indices.tolist())
    counts_all = np.bincount(everything.targets, minlength=10)
    counts_val = np.bincount(val.targets, minlength=10)
    assert np.all(np.abs(counts_val - counts_all * 0.2) <= 0.5 + 1e-9)  # stratified: round(n_c * 0.2) per class
    assert Digits("train", size=8)[0][0].shape == (3, 8, 8)
    assert Digits("val", size=64)[3][0].shape == (3, 64, 64)


def test_digits_is_deterministic_and_seeded() -> None:
    a, b = Digits("val", seed=0), Digits("val", seed=0)
    assert np.array_equal(a.indices, b.indices) and torch.equal(a[5][0], b[5][0])
    assert not np.array_equal(Digits("val", seed=1).indices, a.indices)
    raw = Digits("all", size=8)
    from sklearn.datasets import load_digits

    digits = load_digits()
    assert np.array_equal(raw[10][0][0].numpy(), np.rint(digits.images[10] * 255 / 16).astype(np.uint8))
    assert raw[10][1] == int(digits.target[10])


def test_digits_with_recipe_and_registry() -> None:
    ds = DATASETS.build("digits", split="train", size=32, transform=build_transform("classification_train", size=32))
    x, _ = ds[0]
    assert x.dtype == torch.float32 and x.shape == (3, 32, 32)
    with pytest.raises(ValueError, match="split"):
        Digits("test")
