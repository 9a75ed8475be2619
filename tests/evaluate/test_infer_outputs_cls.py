"""``tools/infer.py`` for classifiers: unreadable images of a folder or glob are skipped with a warning and
``predictions.json`` holds the others, explanation maps of same-stem images do not overwrite each other, and a run
that fails before writing anything leaves no run folder behind."""

from __future__ import annotations

import json
from pathlib import Path

import pytest
import torch

import vision
from vision.cli.infer import main as infer_main
from vision.io import read_image, write_image


@pytest.fixture(scope="module")
def classifier() -> torch.nn.Module:
    torch.manual_seed(0)
    model = vision.create_model("csp_darknet_n", num_classes=3)
    model.categories = ["cat", "dog", "fox"]
    return model.eval()


def _image(path: Path, height: int, width: int) -> Path:
    gen = torch.Generator().manual_seed(height * 1000 + width)
    return write_image(path, torch.randint(0, 256, (3, height, width), generator=gen, dtype=torch.uint8))


def _run(monkeypatch, model, tmp_path: Path, source: object, *keys: str) -> int:
    monkeypatch.setattr("vision.tasks.classification.infer.load_model", lambda *a, **k: model)
    argv = ["model=csp_darknet_n", f"source={source}", "topk=2", "device=cpu", f"project={tmp_path / 'out'}"]
    return infer_main([*argv, *keys])


def test_unreadable_images_of_a_folder_are_skipped(capsys, monkeypatch, classifier, tmp_path):
    src = tmp_path / "mixed"
    good = [_image(src / "a.jpg", 40, 48), _image(src / "c.png", 48, 64)]
    (src / "b.jpg").write_text("not an image", encoding="utf-8")
    assert _run(monkeypatch, classifier, tmp_path, src, "batch=2") == 0
    captured = capsys.readouterr()
    assert "warning:" not in captured.out, "warnings go to stderr, results to stdout"
    out = Path(captured.out.strip().splitlines()[-1].removeprefix("results saved to "))
    lines = captured.err.strip().splitlines()
    assert [line for line in lines if line.startswith("warning:") and "without weights=" not in line] == [
        f"warning: {src / 'b.jpg'}: not a readable image (OpenCV could not decode the bytes); skipped",
        "warning: 1 of 3 files skipped: not readable (named above)",
    ]
    written = json.loads((out / "predictions.json").read_text())
    assert written == [r.to_dict() for r in classifier.predict([str(p) for p in good], topk=2)]
    assert [p.name for p in out.iterdir()] == ["predictions.json"]


def test_explanation_maps_of_same_stems_do_not_overwrite(capsys, monkeypatch, classifier, tmp_path):
    src = tmp_path / "src"
    _image(src / "a.png", 40, 48)
    _image(src / "sub" / "a.png", 48, 64)
    _image(src / "a.jpg", 56, 40)
    assert _run(monkeypatch, classifier, tmp_path, src / "**" / "*", "explain=eigencam") == 0
    out = Path(capsys.readouterr().out.strip().splitlines()[-1].removeprefix("results saved to "))
    files = [str(src / "a.jpg"), str(src / "a.png"), str(src / "sub" / "a.png")]  # source order
    assert [r["file"] for r in json.loads((out / "predictions.json").read_text())] == files
    maps = {"a_eigencam.png": (56, 40), "a_2_eigencam.png": (40, 48), "a_3_eigencam.png": (48, 64)}
    assert sorted(p.name for p in out.iterdir()) == sorted([*maps, "predictions.json"])
    for name, size in maps.items():
        assert tuple(read_image(out / name).shape[1:]) == size, name


def test_a_run_that_fails_before_writing_leaves_no_folder(capsys, monkeypatch, classifier, tmp_path):
    bad = tmp_path / "bad"
    bad.mkdir()
    (bad / "b.jpg").write_text("not an image", encoding="utf-8")
    (bad / "c.png").write_bytes(b"")
    skipped = [
        f"warning: {bad / 'b.jpg'}: not a readable image (OpenCV could not decode the bytes); skipped",
        f"warning: {bad / 'c.png'}: the file is empty (0 bytes); skipped",
    ]
    for source, lines in [
        (bad / "b.jpg", [f"error: {bad / 'b.jpg'}: not a readable image (OpenCV could not decode the bytes)"]),
        (bad, [*skipped, f"error: source {str(bad)!r}: none of its 2 files is readable (each is named above)"]),
    ]:
        with pytest.raises(SystemExit) as info:
            _run(monkeypatch, classifier, tmp_path, source)
        assert info.value.code == 2
        assert capsys.readouterr().err.strip().splitlines() == lines  # no warning that model= has no weights=
        assert not (tmp_path / "out").exists(), "a run that fails before writing anything leaves no folder behind"


def test_a_model_without_weights_is_said_to_predict_at_random(capsys, monkeypatch, classifier, tmp_path):
    image = _image(tmp_path / "a.png", 40, 48)
    assert _run(monkeypatch, classifier, tmp_path, image) == 0  # model=csp_darknet_n, no weights=
    captured = capsys.readouterr()
    assert "warning" not in captured.out, "warnings go to stderr, results to stdout"
    assert captured.err.splitlines() == [
        "warning: model=csp_darknet_n without weights=: its weights are random, so are its predictions; give weights= "
        "(a tag, a file or a training run)"
    ]
    weights = tmp_path / "w.pt"
    torch.save(classifier.state_dict(), weights)
    assert _run(monkeypatch, classifier, tmp_path, image, f"weights={weights}") == 0
    assert "warning" not in str(capsys.readouterr())
