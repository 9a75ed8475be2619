"""Fixtures for the data tests: tiny hand-written COCO and VOC sets, image folders, bad files."""

from __future__ import annotations

import json
from pathlib import Path

import cv2
import numpy as np
import pytest


def write_image(path: Path, height: int, width: int, seed: int = 0) -> np.ndarray:
    """Write a random RGB image (PNG or JPEG by suffix) and return it as RGB."""
    rng = np.random.default_rng(seed)
    rgb = rng.integers(0, 256, size=(height, width, 3), dtype=np.uint8)
    path.parent.mkdir(parents=True, exist_ok=True)
    assert cv2.imwrite(str(path), cv2.cvtColor(rgb, cv2.COLOR_RGB2BGR))
    return rgb


def _rle_uncompressed(mask: np.ndarray) -> dict:
    """COCO uncompressed RLE (column-major run lengths, starting with zeros)."""
    flat = mask.flatten(order="F")
    counts, current, run = [], 0, 0
    for v in flat:
        if v != current:
            counts.append(run)
            current, run = v, 0
        run += 1
    counts.append(run)
    return {"counts": [int(c) for c in counts], "size": [int(mask.shape[0]), int(mask.shape[1])]}


@pytest.fixture
def image_writer():
    """:func:`write_image` for tests that build their own folders."""
    return write_image


@pytest.fixture
def tiny_coco(tmp_path: Path) -> tuple[Path, Path]:
    """Three 40x50 images: polygons (one multi-part), compressed and uncompressed RLE, a crowd, an empty image;
    non-contiguous category ids 1, 5, 9."""
    from pycocotools import mask as mask_utils

    images_dir = tmp_path / "images"
    H, W = 40, 50
    for i in range(3):
        write_image(images_dir / f"img{i}.png", H, W, seed=i)
    blob = np.zeros((H, W), np.uint8)
    blob[5:15, 20:32] = 1
    blob[10:20, 25:28] = 1
    compressed = mask_utils.encode(np.asfortranarray(blob))
    compressed["counts"] = compressed["counts"].decode("ascii")
    crowd = np.zeros((H, W), np.uint8)
    crowd[25:38, 2:20] = 1
    anns = [
        {"id": 1, "image_id": 0, "category_id": 5, "iscrowd": 0, "bbox": [10.0, 5.0, 20.0, 15.0], "area": 150.0,
         "segmentation": [[10.0, 5.0, 30.0, 5.0, 20.0, 20.0]]},
        {"id": 2, "image_id": 0, "category_id": 9, "iscrowd": 0, "bbox": [2.0, 22.0, 40.0, 16.0], "area": 100.0,
         "segmentation": [[2.0, 22.0, 12.0, 22.0, 12.0, 30.0, 2.0, 30.0], [30.0, 30.0, 42.0, 30.0, 42.0, 38.0]]},
        {"id": 3, "image_id": 1, "category_id": 1, "iscrowd": 0, "bbox": [20.0, 5.0, 12.0, 15.0],
         "area": float(blob.sum()), "segmentation": compressed},
        {"id": 4, "image_id": 1, "category_id": 5, "iscrowd": 1, "bbox": [2.0, 25.0, 18.0, 13.0],
         "area": float(crowd.sum()), "segmentation": _rle_uncompressed(crowd)},
    ]  # fmt: skip
    data = {
        "images": [{"id": i, "file_name": f"img{i}.png", "width": W, "height": H} for i in range(3)],
        "annotations": anns,
        "categories": [{"id": 1, "name": "one"}, {"id": 5, "name": "five"}, {"id": 9, "name": "nine"}],
    }
    ann_file = tmp_path / "instances.json"
    ann_file.write_text(json.dumps(data))
    return images_dir, ann_file


@pytest.fixture
def bad_coco(tmp_path: Path) -> tuple[Path, Path]:
    """A COCO set with a corrupt JPEG, an empty file, a missing file, a box outside the image, a box partly outside,
    a zero-area box and two good images."""
    images_dir = tmp_path / "bad_images"
    write_image(images_dir / "good0.jpg", 32, 48, seed=1)
    write_image(images_dir / "good1.jpg", 32, 48, seed=2)
    jpeg = (images_dir / "good0.jpg").read_bytes()
    (images_dir / "corrupt.jpg").write_bytes(jpeg[: len(jpeg) // 2])  # truncated download
    (images_dir / "empty.jpg").write_bytes(b"")
    names = ["good0.jpg", "corrupt.jpg", "empty.jpg", "missing.jpg", "good1.jpg"]
    images = [{"id": i, "file_name": n, "width": 48, "height": 32} for i, n in enumerate(names)]

    def ann(i: int, image_id: int, bbox: list[float]) -> dict:
        return {"id": i, "image_id": image_id, "category_id": 1, "iscrowd": 0, "bbox": bbox, "area": 1.0}

    anns = [
        ann(1, 0, [4.0, 4.0, 10.0, 10.0]),  # fine
        ann(2, 0, [60.0, 40.0, 5.0, 5.0]),  # entirely outside: dropped
        ann(3, 0, [40.0, 20.0, 20.0, 20.0]),  # partly outside: clipped to [40, 20, 48, 32]
        ann(4, 4, [10.0, 10.0, 0.0, 5.0]),  # zero width: dropped
        ann(5, 4, [1.0, 1.0, 5.0, 5.0]),  # fine
        ann(6, 1, [1.0, 1.0, 5.0, 5.0]),
        ann(7, 3, [1.0, 1.0, 5.0, 5.0]),
    ]
    data = {"images": images, "annotations": anns, "categories": [{"id": 1, "name": "thing"}]}
    ann_file = tmp_path / "bad.json"
    ann_file.write_text(json.dumps(data))
    return images_dir, ann_file


@pytest.fixture
def image_folder(tmp_path: Path) -> Path:
    """``root/{cat,dog,fish}/*.png`` (2 + 3 + 1 images; ``dog/b.png`` is corrupt) and a stray text file."""
    root = tmp_path / "folder"
    write_image(root / "cat" / "a.png", 20, 24, seed=1)
    write_image(root / "cat" / "sub" / "b.PNG", 18, 16, seed=2)
    write_image(root / "dog" / "a.png", 20, 24, seed=3)
    (root / "dog" / "b.png").write_bytes(b"\x89PNG\r\n\x1a\n" + b"not really a png")
    write_image(root / "dog" / "c.png", 10, 12, seed=4)
    write_image(root / "fish" / "a.png", 12, 12, seed=5)
    (root / "fish" / "notes.txt").write_text("ignored")
    return root
