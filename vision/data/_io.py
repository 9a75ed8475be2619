"""Image decoding with OpenCV (libjpeg-turbo): bytes -> ``uint8 [H, W, 3]`` RGB, with precise failure reasons."""

from __future__ import annotations

import os
from pathlib import Path

import cv2
import numpy as np
import torch
from torch import Tensor

__all__ = ["ImageReadError", "decode_image", "hwc_to_chw", "read_image"]

# the pixel layout as stored, like pycocotools/PIL: annotations refer to it, not to the EXIF-rotated view
_FLAGS = cv2.IMREAD_COLOR | cv2.IMREAD_IGNORE_ORIENTATION
IMAGE_EXTENSIONS = (".jpg", ".jpeg", ".png", ".bmp", ".webp", ".tif", ".tiff", ".ppm", ".pgm")


class ImageReadError(OSError):
    """An image file that cannot be used; ``reason`` is a key of :data:`vision.data._bad.REASONS`."""

    def __init__(self, path: str | os.PathLike, reason: str, detail: str = "") -> None:
        super().__init__(f"{path}: {reason}{f' ({detail})' if detail else ''}")
        self.path = str(path)
        self.reason = reason
        self.detail = detail


def decode_image(data: np.ndarray | bytes, *, path: str | os.PathLike = "<bytes>") -> np.ndarray:
    """Decode encoded image bytes to ``uint8 [H, W, 3]`` RGB.

    Grey images are replicated to 3 channels, alpha is dropped, 16-bit images are scaled to 8 bits, and EXIF
    orientation is ignored (the stored pixel layout, which is what annotation files refer to).

    Raises:
        ImageReadError: ``empty_file`` for no bytes, ``unreadable`` when OpenCV cannot decode them or a JPEG has no
            end-of-image marker (a truncated download).
    """
    buf = np.frombuffer(data, dtype=np.uint8) if isinstance(data, bytes | bytearray | memoryview) else data
    if buf.size == 0:
        raise ImageReadError(path, "empty_file")
    if buf.size >= 4 and buf[0] == 0xFF and buf[1] == 0xD8:  # JPEG: the end-of-image marker must be near the end
        tail = buf[-1024:].tobytes()
        if b"\xff\xd9" not in tail:
            raise ImageReadError(path, "unreadable", "truncated JPEG: no end-of-image marker")
    try:
        image = cv2.imdecode(buf, _FLAGS)
    except cv2.error as err:  # pragma: no cover - OpenCV raises only for exotic inputs
        raise ImageReadError(path, "unreadable", str(err).strip().splitlines()[-1]) from err
    if image is None:
        raise ImageReadError(path, "unreadable", "OpenCV could not decode the bytes")
    return cv2.cvtColor(image, cv2.COLOR_BGR2RGB)


def read_image(path: str | os.PathLike) -> np.ndarray:
    """Read and decode an image file to ``uint8 [H, W, 3]`` RGB.

    Raises:
        ImageReadError: ``missing_file``, ``empty_file`` or ``unreadable``.

    Example:
        >>> img = read_image("cat.jpg")  # (H, W, 3) uint8, RGB
    """
    try:
        buf = np.fromfile(Path(path), dtype=np.uint8)
    except FileNotFoundError as err:
        raise ImageReadError(path, "missing_file") from err
    except OSError as err:
        raise ImageReadError(path, "unreadable", f"{type(err).__name__}: {err.strerror or err}") from err
    return decode_image(buf, path=path)


def hwc_to_chw(image: np.ndarray) -> Tensor:
    """``uint8 [H, W, C]`` numpy -> contiguous ``uint8 [C, H, W]`` tensor (one copy)."""
    if image.ndim == 2:
        image = image[:, :, None]
    return torch.from_numpy(np.ascontiguousarray(image.transpose(2, 0, 1)))
