"""Images in and out: decoding files and bytes, writing PNG/JPEG, expanding ``source=`` arguments.

Images are decoded with OpenCV (libjpeg-turbo) to RGB. :func:`read_image` is the one reader: ``uint8 [3, H, W]``
tensors by default, ``uint8 [H, W, 3]`` arrays with ``layout="hwc"`` for the CPU data pipeline. Any file that cannot
be decoded raises :class:`ImageReadError` (an ``OSError``) naming the file and the reason.
"""

from __future__ import annotations

import glob
import os
from pathlib import Path
from typing import Literal

import cv2
import numpy as np
import torch
from torch import Tensor

__all__ = [
    "IMAGE_EXTENSIONS",
    "VIDEO_EXTENSIONS",
    "ImageReadError",
    "decode_image",
    "expand_source",
    "hwc_to_chw",
    "read_image",
    "write_image",
]

VIDEO_EXTENSIONS = (".mp4", ".avi", ".mov", ".mkv", ".webm", ".m4v")

# the pixel layout as stored, like pycocotools/PIL: annotations refer to it, not to the EXIF-rotated view
_FLAGS = cv2.IMREAD_COLOR | cv2.IMREAD_IGNORE_ORIENTATION
IMAGE_EXTENSIONS = (".jpg", ".jpeg", ".png", ".bmp", ".webp", ".tif", ".tiff", ".ppm", ".pgm")


_WHY = {
    "missing_file": "no such file",
    "empty_file": "the file is empty (0 bytes)",
    "unreadable": "not a readable image",
}


class ImageReadError(OSError):
    """An image file that cannot be used; ``reason`` is a key of :data:`vision.data._bad.REASONS`."""

    def __init__(self, path: str | os.PathLike, reason: str, detail: str = "") -> None:
        why = _WHY.get(reason, reason)
        super().__init__(f"{path}: {why}{f' ({detail})' if detail else ''}")
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


def read_image(path: str | os.PathLike, *, layout: Literal["chw", "hwc"] = "chw") -> Tensor | np.ndarray:
    """Read and decode an image file to RGB ``uint8`` (grey and RGBA are converted, EXIF rotation ignored).

    Args:
        path: the image file.
        layout: ``"chw"`` (default) returns a ``uint8 [3, H, W]`` tensor (what models and ``eval_transforms`` take);
            ``"hwc"`` returns the decoded ``uint8 [H, W, 3]`` numpy array (what OpenCV and albumentations take).

    Raises:
        ImageReadError: ``missing_file``, ``empty_file`` or ``unreadable``; the message names the file.

    Example:
        >>> img = read_image("cat.jpg")  # uint8 [3, H, W] tensor, RGB
        >>> arr = read_image("cat.jpg", layout="hwc")  # uint8 (H, W, 3) array, RGB
    """
    if layout not in ("chw", "hwc"):
        raise ValueError(f"layout must be 'chw' or 'hwc', got {layout!r}")
    try:
        buf = np.fromfile(Path(path), dtype=np.uint8)
    except FileNotFoundError as err:
        raise ImageReadError(path, "missing_file") from err
    except OSError as err:
        raise ImageReadError(path, "unreadable", f"{type(err).__name__}: {err.strerror or err}") from err
    image = decode_image(buf, path=path)
    return image if layout == "hwc" else hwc_to_chw(image)


def hwc_to_chw(image: np.ndarray) -> Tensor:
    """``uint8 [H, W, C]`` numpy -> contiguous ``uint8 [C, H, W]`` tensor (one copy)."""
    if image.ndim == 2:
        image = image[:, :, None]
    return torch.from_numpy(np.ascontiguousarray(image.transpose(2, 0, 1)))


def write_image(path: str | os.PathLike[str], image: torch.Tensor) -> Path:
    """Write ``uint8 [3, H, W]`` RGB (or ``[1, H, W]`` grey) as PNG/JPEG by the file extension; returns the path."""
    if image.dim() != 3 or image.shape[0] not in (1, 3) or image.dtype != torch.uint8:
        raise ValueError(f"write_image expects uint8 [3, H, W] or [1, H, W], got {image.dtype} {tuple(image.shape)}")
    p = Path(path)
    p.parent.mkdir(parents=True, exist_ok=True)
    array = image.permute(1, 2, 0).cpu().numpy()
    if array.shape[2] == 3:
        array = cv2.cvtColor(array, cv2.COLOR_RGB2BGR)
    ok, encoded = cv2.imencode(p.suffix or ".png", array)
    if not ok:
        raise ValueError(f"cannot encode an image as {p.suffix!r} ({p})")
    tmp = p.with_name(p.name + ".tmp")
    encoded.tofile(tmp)
    os.replace(tmp, p)
    return p


def expand_source(source: str | os.PathLike[str], *, videos: bool = False) -> list[Path]:
    """Expand a file, a folder (its images, sorted) or a glob pattern into a list of files.

    Raises:
        FileNotFoundError: nothing matches; the message names ``source``.
    """
    text = str(source)
    extensions = IMAGE_EXTENSIONS + (VIDEO_EXTENSIONS if videos else ())
    p = Path(text)
    if p.is_dir():
        files = sorted(f for f in p.iterdir() if f.suffix.lower() in extensions and f.is_file())
    elif p.is_file():
        files = [p]
    elif any(ch in text for ch in "*?["):
        files = sorted(Path(f) for f in glob.glob(text, recursive=True) if Path(f).suffix.lower() in extensions)
    else:
        raise FileNotFoundError(f"source {text!r} is not a file, a folder or a glob that matches anything")
    if not files:
        kinds = "images or videos" if videos else "images"
        raise FileNotFoundError(f"source {text!r} contains no {kinds} ({', '.join(extensions)})")
    return files
