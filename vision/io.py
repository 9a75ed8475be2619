"""Reading images and expanding ``source=`` arguments (a file, a folder, a glob) into files.

Images are decoded with OpenCV (libjpeg-turbo) into ``uint8 [3, H, W]`` RGB tensors. Any file that cannot be
decoded raises :class:`ImageReadError` naming the file and the reason.
"""

from __future__ import annotations

import glob
import os
from pathlib import Path

import numpy as np
import torch

__all__ = ["IMAGE_EXTENSIONS", "VIDEO_EXTENSIONS", "ImageReadError", "expand_source", "read_image", "write_image"]

IMAGE_EXTENSIONS = (".jpg", ".jpeg", ".png", ".bmp", ".tif", ".tiff", ".webp")
VIDEO_EXTENSIONS = (".mp4", ".avi", ".mov", ".mkv", ".webm", ".m4v")


class ImageReadError(ValueError):
    """An image file could not be read or decoded."""


def read_image(path: str | os.PathLike[str]) -> torch.Tensor:
    """Decode an image file into ``uint8 [3, H, W]`` RGB (grey and RGBA are converted).

    Raises:
        ImageReadError: the file is missing, empty, truncated or not an image; the message names the file.
    """
    import cv2

    p = Path(path)
    if not p.is_file():
        raise ImageReadError(f"image not found: {p}")
    data = np.fromfile(p, dtype=np.uint8)
    if data.size == 0:
        raise ImageReadError(f"image file is empty: {p}")
    image = cv2.imdecode(data, cv2.IMREAD_COLOR)
    if image is None:
        raise ImageReadError(f"cannot decode image {p} (corrupt, truncated or not an image)")
    image = cv2.cvtColor(image, cv2.COLOR_BGR2RGB)
    return torch.from_numpy(np.ascontiguousarray(image.transpose(2, 0, 1)))


def write_image(path: str | os.PathLike[str], image: torch.Tensor) -> Path:
    """Write ``uint8 [3, H, W]`` RGB (or ``[1, H, W]`` grey) as PNG/JPEG by the file extension; returns the path."""
    import cv2

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
