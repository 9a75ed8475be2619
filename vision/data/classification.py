"""Classification datasets: any folder of class sub-folders, and scikit-learn's 8x8 digits.

Both return ``(image, label)``. Without a transform the image is a ``uint8 [3, H, W]`` RGB tensor. With a
transform, the transform is called with the decoded image as an ``uint8 [H, W, 3]`` RGB **numpy array** (the layout
OpenCV and albumentations use, so no conversion is paid) and its return value is the image;
:func:`vision.data.build_transform` recipes accept that (and also ``uint8 [3, H, W]`` tensors) and return
``float32 [3, h, w]`` normalised tensors.
"""

from __future__ import annotations

import os
from collections.abc import Callable, Sequence
from pathlib import Path
from typing import Any, ClassVar

import cv2
import numpy as np
from torch import Tensor
from torch.utils.data import Dataset

from vision.data._bad import BadSampleLog, BadSampleMixin, DataError
from vision.io import IMAGE_EXTENSIONS, hwc_to_chw, read_image
from vision.registry import DATASETS

__all__ = ["Digits", "ImageFolder"]


@DATASETS.register("image_folder", tags={"classification"}, task="classification")
class ImageFolder(BadSampleMixin, Dataset):
    """Images in class sub-folders: ``root/<class>/**/<image>``.

    Classes are the sorted names of the sub-folders of ``root`` that hold at least one image. Hidden folders and
    files (a leading ``.``, e.g. the ``._photo.png`` files macOS leaves on other file systems) are not listed. An
    empty class folder is reported (``empty_class``, naming the folder), listed in :attr:`empty_classes` and not made
    a class, and a root with no image at all raises :class:`~vision.data.DataError` naming it. Files are found
    recursively and sorted, so the sample order is deterministic. An unreadable image (corrupt, truncated, empty) is
    reported once (a :class:`~vision.data.BadSampleWarning` naming the file and the reason, counted in
    :attr:`bad_samples`) and replaced by the next readable sample (index + 1, wrapping), so batches stay full and
    training never sees it.

    Args:
        root: the folder of class folders.
        transform: called with ``uint8 [H, W, 3]`` RGB numpy; its result is returned as the image.
        extensions: file suffixes accepted (case-insensitive).

    Attributes:
        classes: sorted class names; ``class_to_idx`` maps them to labels.
        empty_classes: sub-folders skipped because they hold no image.
        samples: ``(path, label)`` per sample; ``targets``: the labels.

    Example:
        >>> ds = ImageFolder("data/flowers/train", transform=build_transform("classification_train", size=224))
        >>> image, label = ds[0]  # float32 [3, 224, 224], int
    """

    def __init__(
        self,
        root: str | os.PathLike,
        *,
        transform: Callable[[np.ndarray], Any] | None = None,
        extensions: Sequence[str] = IMAGE_EXTENSIONS,
    ) -> None:
        self.root = Path(root)
        if not self.root.is_dir():
            raise FileNotFoundError(f"ImageFolder root {str(self.root)!r} is not a folder")
        exts = tuple(e.lower() if e.startswith(".") else f".{e.lower()}" for e in extensions)
        folders = sorted(d.name for d in os.scandir(self.root) if d.is_dir() and not d.name.startswith("."))
        if not folders:
            raise FileNotFoundError(f"ImageFolder root {str(self.root)!r} has no class sub-folders")
        self._log = BadSampleLog(f"ImageFolder({self.root})", 1)
        found: dict[str, list[str]] = {}
        for name in folders:
            files = []
            for dirpath, dirnames, filenames in os.walk(self.root / name, followlinks=True):
                dirnames[:] = sorted(d for d in dirnames if not d.startswith("."))
                files += [os.path.join(dirpath, f) for f in filenames if f.lower().endswith(exts) and f[0] != "."]
            if files:
                found[name] = sorted(files)
            else:
                self._log.add(str(self.root / name), "empty_class", f"no file with suffix {', '.join(exts)}")
        self.empty_classes = [name for name in folders if name not in found]
        self.classes = list(found)
        self.class_to_idx = {c: i for i, c in enumerate(self.classes)}
        self.samples: list[tuple[str, int]] = [(f, self.class_to_idx[c]) for c, files in found.items() for f in files]
        if not self.samples:
            raise DataError(
                f"ImageFolder root {str(self.root)!r}: nothing usable is left: none of its class folders "
                f"({', '.join(folders)}) holds a file with suffix {', '.join(exts)}"
            )
        self.targets = [label for _, label in self.samples]
        self.transform = transform
        self._cache: list[np.ndarray | None] | None = None
        self._log.resize(len(self.samples))
        self._log.summarize(self.summary(), dropped=bool(self.empty_classes))

    def summary(self) -> str:
        """The summary line: images and classes kept, empty class folders skipped (unreadable images are found at
        load time and listed by :meth:`report`)."""
        line = f"{len(self.samples)} image(s) in {len(self.classes)} class(es) kept"
        if self.empty_classes:
            line += f"; {len(self.empty_classes)} empty class folder(s) skipped: {', '.join(self.empty_classes)}"
        return line

    def report(self) -> str:
        """Bad samples (see :mod:`vision.data._bad`) and the summary line."""
        return f"{super().report()}\n  summary: {self.summary()}"

    def __len__(self) -> int:
        return len(self.samples)

    def _files(self) -> list[str]:
        return [p for p, _ in self.samples]

    def cache_images(self, indices: Sequence[int] | None = None, *, threads: int = 4, max_fraction: float = 0.5) -> int:
        """``cache=ram``: decode the images of ``indices`` (default: all) once and keep them in RAM (``uint8
        [H, W, 3]``); their samples are then served from memory, as copies, with the same values as from the files.
        Loader workers forked afterwards share the memory.

        Args:
            indices: the samples to cache (e.g. those of one split's ``Subset``).
            threads: decoding threads (OpenCV releases the GIL while decoding).
            max_fraction: refuse (``MemoryError``, nothing decoded) when the images' size, read from their headers,
                exceeds this fraction of the memory available now.

        Returns:
            Bytes held. An image that cannot be decoded is not cached: loading it reports it as usual.
        """
        from concurrent.futures import ThreadPoolExecutor

        from vision.data._detection import check_cache_fits

        chosen = sorted(set(range(len(self.samples)) if indices is None else (int(i) for i in indices)))
        check_cache_fits(sum(_header_pixels(self.samples[i][0]) * 3 for i in chosen), len(chosen), max_fraction)

        def decode(i: int) -> np.ndarray | None:
            try:
                return read_image(self.samples[i][0], layout="hwc")  # type: ignore[return-value]
            except OSError:
                return None

        cache = self._cache if self._cache is not None else [None] * len(self.samples)
        with ThreadPoolExecutor(max(1, threads)) as pool:
            for i, image in zip(chosen, pool.map(decode, chosen)):
                cache[i] = image
        self._cache = cache
        return sum(cache[i].nbytes for i in chosen if cache[i] is not None)  # type: ignore[union-attr]

    def _load(self, i: int) -> tuple[Any, int]:
        path, label = self.samples[i]
        cached = self._cache[i] if self._cache is not None else None
        # a copy: a transform that works in place must not change the cached image
        image = cached.copy() if cached is not None else read_image(path, layout="hwc")
        return (self.transform(image) if self.transform is not None else hwc_to_chw(image)), label

    def __getitem__(self, index: int) -> tuple[Tensor | Any, int]:
        """``(uint8 [3, H, W] RGB, label)``, or ``(transform(uint8 [H, W, 3] numpy), label)``."""
        return self._load_replacing(index, self._load)

    def __repr__(self) -> str:
        return f"ImageFolder(root={str(self.root)!r}, classes={len(self.classes)}, samples={len(self)})"


def _header_pixels(path: str) -> int:
    """Width x height of an image file from its header (no decoding); 0 where the header cannot be read."""
    from PIL import Image

    try:
        with Image.open(path) as im:
            return int(im.width) * int(im.height)
    except (OSError, ValueError, Image.DecompressionBombError):
        return 0


@DATASETS.register("digits", tags={"classification", "generation"}, task="classification")
class Digits(BadSampleMixin, Dataset):
    """scikit-learn's handwritten digits (1,797 grey 8x8 images, 16 levels) as small RGB images.

    The split is stratified and deterministic: within each class the samples are shuffled with ``seed`` and the
    first ``round(n_class * val_fraction)`` go to ``"val"``. Images are upscaled on the fly to ``size`` (bilinear) and
    the grey level is replicated to 3 channels.

    Args:
        split: ``"train"``, ``"val"`` or ``"all"``.
        size: output side in pixels.
        val_fraction: fraction of each class held out for ``"val"``.
        seed: seed of the split.
        transform: called with ``uint8 [size, size, 3]`` numpy; its result is returned as the image.

    Returns (``__getitem__``): ``(uint8 [3, size, size], int label)`` with values in [0, 255].

    Example:
        >>> train, val = Digits("train", size=32), Digits("val", size=32)
        >>> len(train), len(val)  # (1438, 359)
    """

    classes: ClassVar[list[str]] = [str(d) for d in range(10)]

    def __init__(
        self,
        split: str = "train",
        *,
        size: int = 32,
        val_fraction: float = 0.2,
        seed: int = 0,
        transform: Callable[[np.ndarray], Any] | None = None,
    ) -> None:
        if split not in ("train", "val", "all"):
            raise ValueError(f"Digits split must be 'train', 'val' or 'all', got {split!r}")
        if not 0.0 <= val_fraction <= 1.0:
            raise ValueError(f"val_fraction must be in [0, 1], got {val_fraction}")
        try:
            from sklearn.datasets import load_digits
        except ImportError as err:
            raise ImportError("Digits needs scikit-learn (it ships the data): pip install scikit-learn") from err
        bunch = load_digits()
        images = np.rint(bunch.images * (255.0 / 16.0)).clip(0, 255).astype(np.uint8)  # (1797, 8, 8)
        labels = bunch.target.astype(np.int64)
        rng = np.random.default_rng(seed)
        val = []
        for c in range(10):
            idx = np.flatnonzero(labels == c)
            idx = idx[rng.permutation(len(idx))]
            val.append(idx[: round(len(idx) * val_fraction)])
        val_idx = np.sort(np.concatenate(val))
        if split == "val":
            keep = val_idx
        elif split == "train":
            keep = np.setdiff1d(np.arange(len(labels)), val_idx)
        else:
            keep = np.arange(len(labels))
        self.split, self.size, self.transform = split, int(size), transform
        self.indices = keep  # positions in load_digits()
        self._images = images[keep]
        self.targets = labels[keep].tolist()
        self._log = BadSampleLog(f"Digits({split})", len(keep))

    def __len__(self) -> int:
        return len(self.targets)

    def _files(self) -> list[str]:
        return [f"digits[{i}]" for i in self.indices]

    def image(self, index: int) -> np.ndarray:
        """The upscaled ``uint8 [size, size, 3]`` image of sample ``index``."""
        small = self._images[index]
        big = small if self.size == 8 else cv2.resize(small, (self.size, self.size), interpolation=cv2.INTER_LINEAR)
        return np.repeat(big[:, :, None], 3, axis=2)

    def __getitem__(self, index: int) -> tuple[Tensor | Any, int]:
        """``(uint8 [3, size, size], label)``, or ``(transform(uint8 [size, size, 3] numpy), label)``."""
        n = len(self)
        if not -n <= index < n:
            raise IndexError(f"index {index} out of range for a dataset of {n} samples")
        image = self.image(index % n)
        return (self.transform(image) if self.transform is not None else hwc_to_chw(image)), self.targets[index]

    def __repr__(self) -> str:
        return f"Digits(split={self.split!r}, size={self.size}, samples={len(self)})"
