"""Messages of detection data a user brings (found by a sweep with Roboflow / COCO-2017 layouts): a folder given as
``data=``, ultralytics' ``names:`` key, ``~`` in paths, and the "warned about above" count when warnings were capped."""

from __future__ import annotations

import json
from pathlib import Path

import pytest

from vision.data import CocoDetection
from vision.data._bad import DataError
from vision.tasks.detection.data import load_data_spec


def _coco(path: Path, n_bad: int = 0, *, annotations: bool = True) -> Path:
    anns = [
        {"id": k + 1, "image_id": 99, "category_id": 1, "bbox": [0, 0, 4, 4]} for k in range(n_bad)
    ]  # unknown image
    if annotations and not n_bad:
        anns = [{"id": 1, "image_id": 1, "category_id": 1, "bbox": [0, 0, 4, 4]}]
    data = {"images": [{"id": 1, "file_name": "a.jpg", "width": 8, "height": 8}], "annotations": anns,
            "categories": [{"id": 1, "name": "cell"}]}  # fmt: skip
    path.parent.mkdir(parents=True, exist_ok=True)
    path.write_text(json.dumps(data), encoding="utf-8")
    return path


def test_a_folder_as_data_says_what_detection_takes(tmp_path):
    with pytest.raises(FileNotFoundError, match=r"is a folder; detection takes a data YAML .*train: \{images: DIR"):
        load_data_spec(str(tmp_path))


@pytest.mark.parametrize("key", ["names", "nc"])
def test_ultralytics_names_key_says_where_names_come_from(tmp_path, key):
    spec = tmp_path / "data.yaml"
    spec.write_text(f"train: {{images: imgs, annotations: a.json}}\n{key}: [cell]\n", encoding="utf-8")
    with pytest.raises(
        DataError, match=rf"unknown key '{key}' \(class names .* come from the COCO JSON's 'categories'"
    ):
        load_data_spec(str(spec))


def test_tilde_in_path_is_the_home_folder(tmp_path, monkeypatch):
    monkeypatch.setenv("HOME", str(tmp_path))
    (tmp_path / "d" / "imgs").mkdir(parents=True)
    spec = tmp_path / "elsewhere" / "data.yaml"
    spec.parent.mkdir()
    spec.write_text("path: ~/d\ntrain: {images: imgs, annotations: a.json}\n", encoding="utf-8")
    assert load_data_spec(str(spec))["train"] == (tmp_path / "d" / "imgs", tmp_path / "d" / "a.json")


@pytest.mark.parametrize(("n_bad", "said"), [(3, "each was warned about above"),
                                             (30, "the first 20 of each kind were warned about above")])  # fmt: skip
@pytest.mark.filterwarnings("ignore::UserWarning")
def test_the_count_of_problems_says_how_many_were_warned_about(tmp_path, n_bad, said):
    ann = _coco(tmp_path / "a.json", n_bad)
    with pytest.raises(DataError) as info:
        CocoDetection(tmp_path, ann, check_files=False)
    assert f"{n_bad} bad_annotation ({said})" in str(info.value)


@pytest.mark.filterwarnings("ignore::UserWarning")
def test_a_file_without_annotations_says_why_it_cannot_be_used(tmp_path):
    ann = _coco(tmp_path / "a.json", annotations=False)
    with pytest.raises(DataError, match="nothing to train or score against"):
        CocoDetection(tmp_path, ann, check_files=False)
