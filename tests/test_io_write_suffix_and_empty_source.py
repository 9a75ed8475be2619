"""Writing an image to a suffix OpenCV cannot encode (``write_image``, ``Results.save``, ``vision.viz.save_image``: one
writer) is one ``ValueError`` naming the path and the suffixes it can write, before anything is created; an empty or
blank ``source`` is refused by ``expand_source`` and ``model.predict`` instead of reading the current folder."""

from __future__ import annotations

import os
from pathlib import Path

import pytest
import torch

import vision
from vision import io as vision_io
from vision.io import expand_source, read_image, write_image
from vision.results import Results
from vision.viz import save_image

IMAGE = torch.arange(3 * 6 * 8, dtype=torch.uint8).reshape(3, 6, 8)


def _writers(path: Path) -> dict[str, object]:
    return {
        "write_image": lambda: write_image(path, IMAGE),
        "viz.save_image": lambda: save_image(IMAGE, path),
        "Results.save": lambda: Results(image=IMAGE, task="classification").save(path),
    }


@pytest.mark.parametrize("writer", ["write_image", "viz.save_image", "Results.save"])
def test_unknown_suffix_is_one_clear_error(tmp_path: Path, writer: str) -> None:
    path = tmp_path / "new" / "out.txt"
    with pytest.raises(ValueError, match="cannot write an image to") as info:
        _writers(path)[writer]()
    message = str(info.value)
    assert str(path) in message and "'.txt'" in message and ".png, .jpg" in message, message
    assert not (tmp_path / "new").exists()  # checked before any folder or file is made


@pytest.mark.parametrize("writer", ["write_image", "viz.save_image", "Results.save"])
def test_known_suffixes_round_trip(tmp_path: Path, writer: str) -> None:
    path = tmp_path / "sub" / "out.PNG"
    assert _writers(path)[writer]() == path
    if writer != "Results.save":  # Results.save draws its predictions (none here) on a copy of the image
        assert torch.equal(read_image(path), IMAGE)
    assert ".png" in vision_io.writable_suffixes() and ".txt" not in vision_io.writable_suffixes()


def test_grey_only_format_refuses_rgb(tmp_path: Path) -> None:
    with pytest.raises(ValueError, match=r"holds grey images only"):
        write_image(tmp_path / "x.pgm", IMAGE)
    write_image(tmp_path / "g.pgm", IMAGE[:1])
    assert torch.equal(read_image(tmp_path / "g.pgm"), IMAGE[:1].expand(3, -1, -1))


@pytest.mark.parametrize("source", ["", "   ", "\t", [""], ["a.png", " "]])
def test_empty_source_is_refused(tmp_path: Path, monkeypatch: pytest.MonkeyPatch, source: object) -> None:
    write_image(tmp_path / "a.png", IMAGE)  # the current folder holds an image: "" must not read it
    monkeypatch.chdir(tmp_path)
    with pytest.raises(ValueError, match="empty"):
        expand_source(source)


def test_predict_refuses_an_empty_source(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    write_image(tmp_path / "a.png", IMAGE)
    monkeypatch.chdir(tmp_path)
    torch.manual_seed(0)
    model = vision.create_model("csp_darknet_n", num_classes=2).eval()
    with pytest.raises(ValueError, match=r"^source is empty \(''\)"):
        model.predict("")
    with pytest.raises(ValueError, match=r"^source\[1\] is empty \(' '\)"):
        model.predict([os.fspath(tmp_path / "a.png"), " "])
    assert len(model.predict(os.fspath(tmp_path / "a.png"))) == 1
