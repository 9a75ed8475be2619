"""ImageFolder: hidden files (macOS ``._x.png`` resource forks, ``.x.png``) are not samples, and ``cache=ram``
(:meth:`ImageFolder.cache_images`) serves the same images as the files."""

from __future__ import annotations

import warnings
from pathlib import Path

import numpy as np
import pytest
import torch

from vision.data import ImageFolder
from vision.data._bad import BadSampleWarning


def _folder(root: Path, image_writer) -> Path:
    for c, cls in enumerate(("a", "b")):
        for i in range(3):
            image_writer(root / cls / f"rgb{i}.png", 12, 10 + i, seed=10 * c + i)
        (root / cls / "._rgb0.png").write_bytes(b"\x00\x05\x16\x07" + b"\0" * 100)  # AppleDouble, not a PNG
    image_writer(root / "a" / ".hidden.png", 8, 8)  # a readable image, but hidden
    return root


def test_hidden_files_in_class_folders_are_not_samples(tmp_path, image_writer):
    root = _folder(tmp_path / "imgs", image_writer)
    with warnings.catch_warnings(record=True) as caught:
        warnings.simplefilter("always")
        ds = ImageFolder(root)
        items = [ds[i] for i in range(len(ds))]
    assert len(ds) == 6 and not [p for p, _ in ds.samples if Path(p).name.startswith(".")]
    assert [label for _, label in items] == [0, 0, 0, 1, 1, 1]
    assert not [w for w in caught if issubclass(w.category, BadSampleWarning)]  # nothing unreadable was listed


def test_ram_cache_gives_the_files_images_and_survives_an_in_place_transform(tmp_path, image_writer):
    root = _folder(tmp_path / "imgs", image_writer)
    (root / "b" / "corrupt.png").write_bytes(b"\x89PNG\r\n\x1a\n not really")
    plain = ImageFolder(root)
    want = {i: plain[i][0] for i in range(len(plain)) if not plain.samples[i][0].endswith("corrupt.png")}

    def zeroing(image: np.ndarray) -> torch.Tensor:  # a transform that changes its input in place
        out = torch.from_numpy(image.copy()).permute(2, 0, 1)
        image[:] = 0
        return out

    cached = ImageFolder(root, transform=zeroing)
    held = cached.cache_images(threads=2)
    assert held == sum(t.numel() for t in want.values())  # every readable image, the corrupt one not
    for path, _ in cached.samples:
        if not path.endswith("corrupt.png"):
            Path(path).unlink()  # from now on only the cache can serve them
    for _ in range(2):  # the second pass sees what the first pass's transform did to its copies: nothing
        for i, image in want.items():
            assert torch.equal(cached[i][0], image)
    bad = next(i for i, (p, _) in enumerate(cached.samples) if p.endswith("corrupt.png"))
    with pytest.warns(BadSampleWarning, match=r"corrupt\.png"):
        cached[bad]  # not cached: read from its file, reported and replaced as without the cache


def test_ram_cache_of_some_samples_and_a_cache_that_does_not_fit(tmp_path, image_writer):
    ds = ImageFolder(_folder(tmp_path / "imgs", image_writer))
    assert ds.cache_images([1, 4], threads=1) == 12 * 11 * 3 * 2
    with pytest.raises(MemoryError, match=r"cache=ram: the 6 images need .* MiB available"):
        ImageFolder(tmp_path / "imgs").cache_images(max_fraction=1e-12)
