"""Reading images and expanding ``source=`` arguments (a file, a folder, a glob) into files.

Images are decoded with OpenCV (libjpeg-turbo) into ``uint8 [3, H, W]`` RGB tensors. Any file that cannot be
decoded raises :class:`ImageReadError` (an ``OSError``) naming the file and the reason.
"""

from __future__ import annotations

import glob
import os
from pathlib import Path

import torch

from vision.data._io import IMAGE_EXTENSIONS, ImageReadError, hwc_to_chw
from vision.data._io import read_image as _read_hwc

__all__ = ["IMAGE_EXTENSIONS", "VIDEO_EXTENSIONS", "ImageReadError", "expand_source", "read_image", "write_image"]

VIDEO_EXTENSIONS = (".mp4", ".avi", ".mov", ".mkv", ".webm", ".m4v")


def read_image(path: str | os.PathLike[str]) -> torch.Tensor:
    """Decode an image file into ``uint8 [3, H, W]`` RGB (grey and RGBA are converted, EXIF rotation ignored).

    Raises:
        ImageReadError: the file is missing, empty, truncated or not an image; the message names the file.
    """
    return hwc_to_chw(_read_hwc(path))


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
