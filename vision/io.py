"""Images in and out: decoding files and bytes, writing PNG/JPEG, expanding ``source=`` arguments.

Images are decoded with OpenCV (libjpeg-turbo) to RGB. :func:`read_image` is the one reader: ``uint8 [3, H, W]``
tensors by default, ``uint8 [H, W, 3]`` arrays with ``layout="hwc"`` for the CPU data pipeline. Any file that cannot
be decoded raises :class:`ImageReadError` (an ``OSError``) naming the file and the reason.
"""

from __future__ import annotations

import glob
import os
import re
from collections.abc import Sequence
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
    "writable_suffixes",
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
            end-of-image marker after the start of its scan (a truncated download; bytes after the marker, as in
            motion photos, are allowed: see :func:`_jpeg_is_truncated`).
    """
    buf = np.frombuffer(data, dtype=np.uint8) if isinstance(data, bytes | bytearray | memoryview) else data
    if buf.size == 0:
        raise ImageReadError(path, "empty_file")
    if buf.size >= 4 and buf[0] == 0xFF and buf[1] == 0xD8 and _jpeg_is_truncated(buf.tobytes()):
        raise ImageReadError(path, "unreadable", "truncated JPEG: no end-of-image marker")
    try:
        image = cv2.imdecode(buf, _FLAGS)
    except cv2.error as err:  # pragma: no cover - OpenCV raises only for exotic inputs
        raise ImageReadError(path, "unreadable", str(err).strip().splitlines()[-1]) from err
    if image is None:
        raise ImageReadError(path, "unreadable", "OpenCV could not decode the bytes")
    return cv2.cvtColor(image, cv2.COLOR_BGR2RGB)


#: JPEG markers without a length field: TEM, RST0-RST7, SOI
_STANDALONE = frozenset({0x01, *range(0xD0, 0xD9)})


def _jpeg_is_truncated(data: bytes) -> bool:
    """Whether a JPEG (``data`` starts with SOI, ``FF D8``) has no end-of-image marker (EOI, ``FF D9``) after the start
    of its first scan (SOS, ``FF DA``).

    The marker segments are walked from SOI by their length fields up to the first SOS, so a segment that holds its
    own ``FF D9`` (the EXIF thumbnail in APP1 is a whole JPEG) is stepped over. From the scan on, ``FF D9`` can only
    be the EOI: in entropy-coded data a 0xFF byte is always followed by 0x00 or a marker. Bytes after the EOI (motion
    photos, camera trailers) are allowed, as libjpeg, PIL and OpenCV allow them. Stray bytes between segments are
    skipped to the next 0xFF, as libjpeg does. Cut before the first scan counts as truncated too.
    """
    i, n = 2, len(data)
    while i + 1 < n:
        if data[i] != 0xFF:
            i = data.find(b"\xff", i)
            if i < 0:
                return True
            continue
        marker = data[i + 1]
        if marker == 0xFF or marker == 0x00:  # a fill byte, or a stuffed 0xFF between segments: not a marker
            i += 1 if marker == 0xFF else 2
            continue
        if marker == 0xD9:  # an EOI before any scan: not cut, OpenCV decides what it is
            return False
        if marker in _STANDALONE:
            i += 2
            continue
        if i + 4 > n:
            return True
        end = i + 2 + (data[i + 2] << 8 | data[i + 3])
        if marker == 0xDA:  # from the end: the EOI is usually the last two bytes
            return data.rfind(b"\xff\xd9", end) < 0
        i = end
    return True


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


#: suffixes :func:`write_image` tries, in the order its error lists them (those this OpenCV build can write)
_WRITE_SUFFIXES = (".png", ".jpg", ".jpeg", ".bmp", ".webp", ".tif", ".tiff", ".ppm", ".pgm", ".jp2", ".avif")
_GREY_ONLY = (".pgm", ".pbm")


def writable_suffixes() -> tuple[str, ...]:
    """The image suffixes this OpenCV build can write (``cv2.haveImageWriter``), e.g. ``(".png", ".jpg", ...)``."""
    return tuple(s for s in _WRITE_SUFFIXES if cv2.haveImageWriter(f"x{s}"))


def write_image(path: str | os.PathLike[str], image: torch.Tensor) -> Path:
    """Write ``uint8 [3, H, W]`` RGB (or ``[1, H, W]`` grey) to ``path``, encoded by its suffix; returns the path.

    The suffix picks the format (``.png``, ``.jpg``, ``.webp``, ... : :func:`writable_suffixes`; a path without one is
    written as PNG). The file is replaced atomically (written beside it, then renamed); missing folders are made.

    Raises:
        ValueError: ``image`` is not ``uint8 [3 or 1, H, W]``, or the suffix is no image format OpenCV can write (the
            message names the path and the suffixes it can), or an RGB image for a grey-only format (``.pgm``); checked
            before anything is written.

    Example:
        >>> write_image("out/cat.png", read_image("cat.jpg"))  # Path("out/cat.png")
    """
    if not isinstance(image, Tensor) or image.dim() != 3 or image.shape[0] not in (1, 3) or image.dtype != torch.uint8:
        got = f"{image.dtype} {tuple(image.shape)}" if isinstance(image, Tensor) else type(image).__name__
        raise ValueError(f"write_image expects a uint8 [3, H, W] or [1, H, W] tensor, got {got}")
    p = Path(path)
    suffix = p.suffix or ".png"
    if not cv2.haveImageWriter(f"x{suffix}"):
        raise ValueError(
            f"cannot write an image to {p}: {suffix!r} is not an image format OpenCV can write; use one of "
            f"{', '.join(writable_suffixes())}"
        )
    if suffix.lower() in _GREY_ONLY and image.shape[0] != 1:
        raise ValueError(f"cannot write an RGB image to {p}: {suffix!r} holds grey images only ([1, H, W])")
    array = image.detach().permute(1, 2, 0).cpu().numpy()
    if array.shape[2] == 3:
        array = cv2.cvtColor(array, cv2.COLOR_RGB2BGR)
    try:
        ok, encoded = cv2.imencode(suffix, array)
    except cv2.error as err:  # a writer this build lists but cannot use (e.g. OpenEXR switched off)
        ok, why = False, str(err).strip().splitlines()[-1]
    else:
        why = "OpenCV's encoder failed"
    if not ok:
        raise ValueError(f"cannot encode an image as {suffix!r} ({p}): {why}")
    p.parent.mkdir(parents=True, exist_ok=True)
    tmp = p.with_name(p.name + ".tmp")
    encoded.tofile(tmp)
    os.replace(tmp, p)
    return p


def expand_source(
    source: str | os.PathLike[str] | Sequence[str | os.PathLike[str]], *, videos: bool = False
) -> list[Path]:
    """Expand a file, a folder (its images, sorted), a glob pattern or a list of these into a list of files.

    Args:
        source: one path, folder or glob; or a list/tuple of them (what ``source=[a.png,b.png]`` on the command line
            gives), each expanded on its own and joined in the order given. A string that is no existing file or
            folder and no glob that matches is split at commas: ``"a.jpg,b.jpg"`` is ``["a.jpg", "b.jpg"]`` (a file
            whose name has a comma is used as it is when it exists). The same file reached twice (listed twice, or a
            file and its folder) is kept twice: what to do with it is the caller's choice.
        videos: also take video files (:data:`VIDEO_EXTENSIONS`); without it, a video named as a source is refused.

    Returns:
        The files, as ``Path`` objects.

    Raises:
        FileNotFoundError: nothing matches, or ``source`` is a URL (nothing is downloaded); the message names
            ``source``.
        ValueError: a video where only images are read (``videos=False``), an empty or blank string (it is not read as
            the current folder), an empty list, or a list item that is not a path or is blank.

    Example:
        >>> expand_source("cells/")  # [Path("cells/a.jpg"), Path("cells/b.png")]
        >>> expand_source(["b.png", "a.png", "b.png"])  # [Path("b.png"), Path("a.png"), Path("b.png")]
    """
    if isinstance(source, list | tuple):
        if not source:
            raise ValueError("source is an empty list: give at least one image, folder or glob")
        files: list[Path] = []
        for i, item in enumerate(source):
            if not isinstance(item, str | os.PathLike):
                raise ValueError(
                    f"source item {i} ({item!r}, {type(item).__name__}) is not a path: a source list holds image "
                    "files, folders or globs"
                )
            if not os.fspath(item).strip():
                raise ValueError(f"source item {i} is empty ({item!r}): give an image file, a folder or a glob")
            files.extend(_expand_one(os.fspath(item), videos=videos))
        return files
    text = os.fspath(source) if isinstance(source, os.PathLike) else str(source)
    if not text.strip():  # Path("") is the current folder: never read it by accident
        raise ValueError(f"source is empty ({text!r}): give an image file, a folder, a glob or a list of them")
    parts = [part.strip() for part in text.split(",")]
    if len(parts) > 1 and not Path(text).exists() and not _matches(text) and not _is_url(text):
        if not all(parts):
            raise FileNotFoundError(
                f"source {text!r} is not a file, a folder or a glob that matches anything, and as a list of paths "
                "separated by commas it has an empty item"
            )
        files = []
        for part in parts:
            try:
                files.extend(_expand_one(part, videos=videos))
            except FileNotFoundError as err:
                raise FileNotFoundError(f"{err} (in {text!r}, read as paths separated by commas)") from None
        return files
    return _expand_one(text, videos=videos)


#: why a video is refused where only images are read (``{its}``: "its" or "their")
_VIDEO_HINT = "videos are read by tools/infer.py for detectors only; pass {its} frames as images"


def _is_url(text: str) -> bool:
    return re.match(r"[A-Za-z][A-Za-z0-9+.-]*://", text) is not None


def _matches(text: str) -> bool:
    """Whether ``text`` is a glob pattern that matches something."""
    return any(ch in text for ch in "*?[") and next(glob.iglob(text, recursive=True), None) is not None


def _expand_one(text: str, *, videos: bool) -> list[Path]:
    """:func:`expand_source` of one file, folder or glob."""
    extensions = IMAGE_EXTENSIONS + (VIDEO_EXTENSIONS if videos else ())
    p = Path(text)
    if p.is_dir():
        known = IMAGE_EXTENSIONS + VIDEO_EXTENSIONS
        found = sorted(f for f in p.iterdir() if f.suffix.lower() in known and f.is_file())
    elif p.is_file():
        if not videos and p.suffix.lower() in VIDEO_EXTENSIONS:
            raise ValueError(f"source {text!r} is a video: {_VIDEO_HINT.format(its='its')}")
        return [p]
    elif _is_url(text):
        raise FileNotFoundError(
            f"source {text!r} is a URL: sources are local image files, folders or globs (images are not "
            "downloaded); download the file first and pass its path"
        )
    elif any(ch in text for ch in "*?["):
        found = sorted(Path(f) for f in glob.glob(text, recursive=True))
    else:
        raise FileNotFoundError(f"source {text!r} is not a file, a folder or a glob that matches anything")
    files = [f for f in found if f.suffix.lower() in extensions]
    if not files:
        kinds = "images or videos" if videos else "images"
        clips = [f.name for f in found if f.suffix.lower() in VIDEO_EXTENSIONS]
        message = f"source {text!r} contains no {kinds} ({', '.join(extensions)})"
        if clips:
            shown = ", ".join(clips[:3]) + (", ..." if len(clips) > 3 else "")
            message += f"; it has {len(clips)} video(s) ({shown}): {_VIDEO_HINT.format(its='their')}"
        raise FileNotFoundError(message)
    return files
