"""Corrupt JPEG, empty file, missing file, box outside the image, zero-area box: reported once, loader carries on."""

from __future__ import annotations

import warnings
from pathlib import Path

import numpy as np
import pytest
import torch
from torch.utils.data import DataLoader

from vision.data import BadSampleWarning, CocoDetection, build_transform, detection_collate
from vision.io import ImageReadError, read_image


def _build(bad_coco: tuple[Path, Path], **kwargs) -> tuple[CocoDetection, list[str]]:
    with warnings.catch_warnings(record=True) as caught:
        warnings.simplefilter("always")
        ds = CocoDetection(*bad_coco, **kwargs)
    return ds, [str(w.message) for w in caught if issubclass(w.category, BadSampleWarning)]


def test_construction_reports_each_problem_once(bad_coco: tuple[Path, Path]) -> None:
    ds, messages = _build(bad_coco)
    expected = {
        "empty.jpg": "file is empty",
        "missing.jpg": "file does not exist",
        "good0.jpg": "box lies entirely outside the image",
        "good1.jpg": "zero/negative width or height",
    }
    for name, reason in expected.items():
        assert sum(name in m and reason in m for m in messages) == 1, (name, messages)
    assert sum("good0.jpg" in m and "clipped" in m for m in messages) == 1
    assert len(messages) == 5
    # missing and empty files are dropped at construction; the corrupt JPEG is only known once read
    assert [Path(r.file).name for r in ds.records] == ["good0.jpg", "corrupt.jpg", "good1.jpg"]
    counts = {k: len(v) for k, v in ds.bad_samples.items()}
    assert counts == {"empty_file": 1, "missing_file": 1, "box_outside": 1, "box_clipped": 1, "box_degenerate": 1}


def test_boxes_are_clipped_or_dropped(bad_coco: tuple[Path, Path]) -> None:
    ds, _ = _build(bad_coco)
    _, target = ds[0]
    assert target["boxes"].tolist() == [[4.0, 4.0, 14.0, 14.0], [40.0, 20.0, 48.0, 32.0]]
    _, target = ds[2]
    assert target["boxes"].tolist() == [[1.0, 1.0, 6.0, 6.0]]


def test_corrupt_jpeg_is_replaced_and_reported_once(bad_coco: tuple[Path, Path]) -> None:
    ds, _ = _build(bad_coco)
    with pytest.warns(BadSampleWarning, match=r"corrupt\.jpg.*cannot be decoded.*truncated JPEG"):
        _, target = ds[1]
    assert target["image_id"] == 4  # the next readable sample (good1.jpg) stands in
    with warnings.catch_warnings():
        warnings.simplefilter("error", BadSampleWarning)
        ds[1]
    assert [Path(e.file).name for e in ds.bad_samples["unreadable"]] == ["corrupt.jpg"]
    report = ds.report()
    for name in ("corrupt.jpg", "empty.jpg", "missing.jpg", "good0.jpg", "good1.jpg"):
        assert name in report


@pytest.mark.parametrize("workers", [0, 2])
def test_loader_carries_on(bad_coco: tuple[Path, Path], workers: int) -> None:
    ds, _ = _build(bad_coco, transform=build_transform("detection_eval", size=32))
    loader = DataLoader(ds, batch_size=2, num_workers=workers, collate_fn=detection_collate)
    with warnings.catch_warnings():
        warnings.simplefilter("ignore", BadSampleWarning)
        batches = [b for _ in range(2) for b in loader]  # two epochs
    assert [tuple(images.shape) for images, _ in batches] == [(2, 3, 32, 32), (1, 3, 32, 32)] * 2
    ids = [t["image_id"] for _, targets in batches for t in targets]
    assert ids == [0, 4, 4] * 2  # corrupt.jpg (id 1) never reaches training
    assert [Path(e.file).name for e in ds.bad_samples["unreadable"]] == ["corrupt.jpg"]  # seen by the main process


def test_read_image_reasons(tmp_path: Path, image_writer) -> None:
    with pytest.raises(ImageReadError) as err:
        read_image(tmp_path / "nope.png")
    assert err.value.reason == "missing_file" and str(err.value).endswith("nope.png: no such file")
    (tmp_path / "empty.png").write_bytes(b"")
    with pytest.raises(ImageReadError) as err:
        read_image(tmp_path / "empty.png")
    assert err.value.reason == "empty_file" and str(err.value).endswith("empty.png: the file is empty (0 bytes)")
    (tmp_path / "text.jpg").write_bytes(b"hello")
    with pytest.raises(ImageReadError) as err:
        read_image(tmp_path / "text.jpg")
    assert err.value.reason == "unreadable" and "text.jpg: not a readable image (" in str(err.value)
    rgb = image_writer(tmp_path / "ok.png", 5, 7)
    assert np.array_equal(read_image(tmp_path / "ok.png", layout="hwc"), rgb)
    grey = tmp_path / "grey.png"
    import cv2

    cv2.imwrite(str(grey), np.full((4, 4), 77, np.uint8))
    assert read_image(grey, layout="hwc").shape == (4, 4, 3)


def test_many_problems_are_counted_after_the_warning_cap(tmp_path: Path, image_writer) -> None:
    import json

    image_writer(tmp_path / "a.png", 10, 10)
    anns = [{"id": i, "image_id": 0, "category_id": 1, "bbox": [1, 1, 0, 0], "iscrowd": 0} for i in range(30)]
    anns.append({"id": 30, "image_id": 0, "category_id": 1, "bbox": [1, 1, 4, 4], "iscrowd": 0})  # one usable box
    data = {"images": [{"id": 0, "file_name": "a.png", "width": 10, "height": 10}], "annotations": anns,
            "categories": [{"id": 1, "name": "x"}]}  # fmt: skip
    (tmp_path / "a.json").write_text(json.dumps(data))
    with warnings.catch_warnings(record=True) as caught:
        warnings.simplefilter("always")
        ds = CocoDetection(tmp_path, tmp_path / "a.json")
    problems = [w for w in caught if issubclass(w.category, BadSampleWarning)]
    assert len(problems) == 21  # 20 individual warnings + one "further ... counted" notice
    assert len(caught) == 22  # + the split's summary line (a DataSummaryWarning)
    assert len(ds.bad_samples["box_degenerate"]) == 30
    assert ds[0][1]["boxes"].tolist() == [[1.0, 1.0, 5.0, 5.0]] and isinstance(ds[0][0], torch.Tensor)


def test_ram_cache_serves_decoded_images_and_leaves_bad_ones_to_the_usual_report(
    bad_coco: tuple[Path, Path],
) -> None:
    ds, _ = _build(bad_coco)
    want = [ds[0], ds[2]]
    held = ds.cache_images(threads=2)
    assert held == 2 * 32 * 48 * 3  # the two good images; the corrupt one is not cached
    for name in ("good0.jpg", "good1.jpg"):
        (bad_coco[0] / name).unlink()  # from now on only the cache can serve them
    for (image, target), i in zip(want, (0, 2)):
        got_image, got_target = ds[i]
        assert torch.equal(got_image, image)
        assert got_target["boxes"].tolist() == target["boxes"].tolist()
    got_image[:] = 0  # a sample is a copy: changing it leaves the cache intact
    assert torch.equal(ds[2][0], want[1][0])
    with pytest.warns(BadSampleWarning, match=r"corrupt\.jpg.*cannot be decoded"):
        ds[1]  # not cached: read from its file, reported and replaced as without the cache


def test_ram_cache_refuses_what_does_not_fit(bad_coco: tuple[Path, Path]) -> None:
    ds, _ = _build(bad_coco)
    with pytest.raises(MemoryError, match=r"cache=ram: the 3 images need .* MiB available"):
        ds.cache_images(max_fraction=1e-12)
    assert ds._cache is None  # nothing decoded
