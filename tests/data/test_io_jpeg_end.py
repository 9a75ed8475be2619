"""A JPEG is truncated only when no end-of-image marker (EOI, ``FF D9``) follows the start of its first scan: bytes
after the EOI (motion photos, camera trailers) are read as PIL and OpenCV read them, and an EXIF thumbnail's own EOI
does not hide a cut main image."""

from __future__ import annotations

import io
import re
import struct
from pathlib import Path

import cv2
import numpy as np
import pytest
from PIL import ExifTags, Image

from vision.io import ImageReadError, decode_image, read_image

BCCD = Path(__file__).resolve().parents[2].parent / "shared" / "data" / "bccd" / "images"
TRUNCATED = r"not a readable image \(truncated JPEG: no end-of-image marker\)"


def _photo() -> bytes:
    """A 480 x 640 photo-like JPEG (smooth shading and noise), encoded by OpenCV."""
    yy, xx = np.mgrid[0:480, 0:640].astype(np.float32)
    rgb = np.stack([xx / 640 * 255, yy / 480 * 255, (xx + yy) / 1120 * 255], axis=-1)
    rgb += np.random.default_rng(0).normal(0, 12, rgb.shape)
    ok, encoded = cv2.imencode(".jpg", np.clip(rgb, 0, 255).astype(np.uint8), [cv2.IMWRITE_JPEG_QUALITY, 92])
    assert ok
    return encoded.tobytes()


@pytest.fixture(params=["bccd", "synthetic"])
def jpeg(request: pytest.FixtureRequest) -> bytes:
    """A real JPEG file: a BCCD blood-cell photo (shared data) or :func:`_photo`."""
    if request.param == "synthetic":
        return _photo()
    if not BCCD.is_dir():
        pytest.skip(f"shared data not found: {BCCD}")
    return (BCCD / "BloodImage_00000.jpg").read_bytes()


def _trailer(size: int) -> bytes:
    """``size`` bytes as a motion photo appends them (an MP4 box header, then data without ``FF D9``)."""
    head = struct.pack(">I", size) + b"ftypmp42"
    body = np.random.default_rng(size).integers(0, 255, size - len(head), dtype=np.uint8).tobytes()  # no 0xFF
    return head + body


def _with_exif_thumbnail() -> tuple[bytes, int]:
    """A 96 x 128 JPEG written by PIL whose APP1 EXIF holds a 16 x 16 JPEG thumbnail (IFD1), and where the thumbnail
    ends in the file. PIL writes no thumbnail itself, so the EXIF block is built here and saved with ``exif=``."""
    ok, thumb = cv2.imencode(".jpg", np.random.default_rng(1).integers(0, 256, (16, 16, 3), dtype=np.uint8))
    assert ok
    thumb_bytes = thumb.tobytes()
    ifd0 = struct.pack("<H", 1) + struct.pack("<HHII", 0x0112, 3, 1, 1) + struct.pack("<I", 26)  # orientation 1
    ifd1 = (
        struct.pack("<H", 2)
        + struct.pack("<HHII", 0x0201, 4, 1, 56)  # JPEGInterchangeFormat: the thumbnail at TIFF offset 56
        + struct.pack("<HHII", 0x0202, 4, 1, len(thumb_bytes))
        + struct.pack("<I", 0)
    )
    exif = b"Exif\x00\x00" + b"II*\x00" + struct.pack("<I", 8) + ifd0 + ifd1 + thumb_bytes
    main = np.random.default_rng(2).integers(0, 256, (96, 128, 3), dtype=np.uint8)
    buf = io.BytesIO()
    Image.fromarray(main).save(buf, "JPEG", exif=exif, quality=90)
    data = buf.getvalue()
    start = data.find(thumb_bytes)
    assert start > 0 and Image.open(io.BytesIO(data)).getexif().get_ifd(ExifTags.IFD.IFD1)[0x0202] == len(thumb_bytes)
    return data, start + len(thumb_bytes)


@pytest.mark.parametrize("size", [4096, 1 << 20], ids=["4KiB", "1MiB"])
def test_data_after_the_end_of_image_is_read(jpeg, size, tmp_path):
    original = decode_image(jpeg)
    path = tmp_path / "img" / "trailing.jpg"
    path.parent.mkdir()
    path.write_bytes(jpeg + _trailer(size))
    assert np.array_equal(read_image(path, layout="hwc"), original)
    assert np.array_equal(np.asarray(Image.open(path).convert("RGB")).shape, original.shape)  # PIL reads it too


def test_a_second_jpeg_after_the_end_of_image_is_ignored(jpeg):
    """Multi-picture files (MPF) append whole JPEGs: the first image is the one read."""
    other = cv2.imencode(".jpg", np.zeros((8, 8, 3), np.uint8))[1].tobytes()
    assert np.array_equal(decode_image(jpeg + other), decode_image(jpeg))


@pytest.mark.parametrize("where", ["half", "in_headers", "after_scan_start", "before_eoi"])
def test_a_cut_jpeg_is_refused(jpeg, where, tmp_path):
    scan = jpeg.find(b"\xff\xda")
    cut = {"half": len(jpeg) // 2, "in_headers": scan // 2, "after_scan_start": scan + 40, "before_eoi": -2}[where]
    path = tmp_path / "cut.jpg"
    path.write_bytes(jpeg[:cut])
    with pytest.raises(ImageReadError, match=rf"^{re.escape(str(path))}: {TRUNCATED}$"):
        read_image(path)


def test_an_exif_thumbnail_is_read_and_its_end_marker_does_not_hide_a_cut_main_image():
    data, thumb_end = _with_exif_thumbnail()
    assert decode_image(data).shape == (96, 128, 3)
    assert decode_image(data + _trailer(4096)).shape == (96, 128, 3)
    main_scan = data.find(b"\xff\xda", thumb_end)
    assert main_scan > thumb_end
    for cut in (len(data) // 2, main_scan + 100, main_scan):
        with pytest.raises(ImageReadError, match=TRUNCATED):
            decode_image(data[:cut])
        with pytest.raises(OSError, match=r"truncated|Truncated|cannot load"):  # PIL refuses the same bytes
            Image.open(io.BytesIO(data[:cut])).load()
