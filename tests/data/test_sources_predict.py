"""What ``predict(source)`` and ``tools/infer.py source=`` refuse and how: float tensors of 0..255 values, videos
where only images are read, URLs; and lists of paths (``source=[a.png,b.png]`` on the command line, or
``a.png,b.png``), kept in the order given, duplicates included."""

from __future__ import annotations

import json
import re
from pathlib import Path

import numpy as np
import pytest
import torch

import vision
from vision.cli.infer import main as infer_main
from vision.io import expand_source, write_image
from vision.results import load_sources

RANGE = r"float values in \[[-0-9.e+]+, [-0-9.e+]+\] are outside \[0, 1\]"
LOOKS_255 = r"they look like 0\.\.255 pixel values: pass x / 255 \(or the uint8 image\)$"
VIDEO = "videos are read by tools/infer.py for detectors only; pass its frames as images"
URL = "https://ultralytics.com/images/bus.jpg"


@pytest.fixture(scope="module")
def classifier() -> torch.nn.Module:
    torch.manual_seed(0)
    return vision.create_model("csp_darknet_n", num_classes=3).eval()


@pytest.fixture(scope="module")
def weights(classifier, tmp_path_factory: pytest.TempPathFactory) -> Path:
    path = tmp_path_factory.mktemp("weights") / "tiny.pt"
    torch.save(classifier.state_dict(), path)
    return path


@pytest.fixture
def files(tmp_path: Path) -> dict[str, Path]:
    """``img/a.png``, ``img/b.png``, ``img/with,comma.png``, ``img/clip.mp4`` and ``clips/clip.mp4`` (videos: only
    their names matter)."""
    gen = torch.Generator().manual_seed(0)
    out = {}
    for name in ("a", "b", "with,comma"):
        out[name] = write_image(tmp_path / "img" / f"{name}.png", torch.randint(0, 256, (3, 24, 32), generator=gen,
                                                                                dtype=torch.uint8))  # fmt: skip
    for folder in ("img", "clips"):
        out[f"{folder}/clip"] = tmp_path / folder / "clip.mp4"
        out[f"{folder}/clip"].parent.mkdir(exist_ok=True)
        out[f"{folder}/clip"].write_bytes(b"\x00\x00\x00\x18ftypmp42 not decoded here")
    return out


def _refused(capsys: pytest.CaptureFixture[str], argv: list[str]) -> str:
    """Run ``tools/infer.py argv``: exit 2 and one ``error:`` line (after any ``note:``); returns the message."""
    with pytest.raises(SystemExit) as info:
        infer_main(argv)
    assert info.value.code == 2
    err = [line for line in capsys.readouterr().err.strip().splitlines() if line.startswith("error: ")]
    assert len(err) == 1, err
    return err[0].removeprefix("error: ")


# ------------------------------------------------------------------------------------------------ float tensors
@pytest.mark.parametrize("kind", ["detector", "classifier"])
def test_a_float_tensor_of_0_255_values_is_refused_not_whitened(kind, request):
    model = request.getfixturevalue(kind)
    image = torch.randint(0, 256, (3, 32, 32), generator=torch.Generator().manual_seed(1)).float()
    with pytest.raises(ValueError, match=rf"^source tensor: {RANGE}; .*{LOOKS_255}"):
        model.predict(image)
    array = image.to(torch.uint8).permute(1, 2, 0).numpy()
    with pytest.raises(ValueError, match=rf"^source\[1\] tensor: {RANGE}; .*{LOOKS_255}"):  # a list: the item
        model.predict([array, image])


def test_float_tensors_in_0_1_are_still_read_with_the_usual_tolerance():
    image = torch.randint(0, 256, (3, 8, 10), generator=torch.Generator().manual_seed(2), dtype=torch.uint8)
    ((loaded, path),) = load_sources(image.float() / 255)
    assert path is None and torch.equal(loaded, image)
    overshoot = image.float() / 255
    overshoot[0, 0, 0], overshoot[0, 0, 1] = 1.005, -0.005  # interpolation overshoot: clamped, as before
    assert load_sources(overshoot)[0][0][0, 0, :2].tolist() == [255, 0]
    with pytest.raises(ValueError, match=r"^source tensor: float values in \[0, 1\.5\] are outside \[0, 1\]; "):
        load_sources(torch.where(torch.arange(10) < 5, overshoot.clamp(0, 1), 1.5))  # not 0..255 values: no hint
    with pytest.raises(ValueError, match=r"^source tensor: its values include NaN"):
        load_sources(torch.full((3, 4, 4), float("nan")))


def test_a_float_array_is_refused_with_the_conversion():
    with pytest.raises(ValueError, match=r"^source\[0\] array: expected an uint8 \[H, W, 3\] RGB array, got float32 "
                                         r"\(4, 4, 3\): float arrays are not read; pass the uint8 image"):  # fmt: skip
        load_sources([np.full((4, 4, 3), 200.0, np.float32)])


# ------------------------------------------------------------------------------------------------------- videos
def test_a_video_is_named_as_a_video_where_only_images_are_read(files, detector, classifier):
    clip = str(files["img/clip"])
    for call in (lambda: expand_source(clip), lambda: detector.predict(clip), lambda: classifier.predict(clip)):
        with pytest.raises(ValueError, match=rf"^source {re.escape(repr(clip))} is a video: {VIDEO}$"):
            call()
    assert expand_source(clip, videos=True) == [files["img/clip"]]  # the detection CLI reads it
    assert expand_source(files["a"].parent) == [files["a"], files["b"], files["with,comma"]]  # a folder: its images
    with pytest.raises(FileNotFoundError, match=r"contains no images \(.*\); it has 1 video\(s\) \(clip\.mp4\): "
                                                r"videos are read by tools/infer\.py for detectors only"):  # fmt: skip
        expand_source(files["clips/clip"].parent)


def test_the_classification_cli_says_a_video_is_a_video(files, weights, tmp_path, capsys):
    clip = files["img/clip"]
    argv = ["model=csp_darknet_n", f"weights={weights}", f"source={clip}", f"project={tmp_path / 'runs'}"]
    assert _refused(capsys, argv) == f"source {str(clip)!r} is a video: {VIDEO}"


# --------------------------------------------------------------------------------------------------------- URLs
@pytest.mark.parametrize("url", [URL, URL + "?raw=true", "http://127.0.0.1:1/a.jpg"])
def test_a_url_is_not_downloaded_and_says_so(url, detector):
    said = rf"^source {re.escape(repr(url))} is a URL: .*images are not downloaded\); download the file first"
    with pytest.raises(FileNotFoundError, match=said):
        expand_source(url)
    with pytest.raises(FileNotFoundError, match=said):
        detector.predict(url)


def test_the_cli_says_a_url_is_not_downloaded(weights, tmp_path, capsys):
    argv = ["model=csp_darknet_n", f"weights={weights}", f"source={URL}", f"project={tmp_path / 'runs'}"]
    message = _refused(capsys, argv)
    assert message.startswith(f"source {URL!r} is a URL: ") and "download the file first" in message


# -------------------------------------------------------------------------------------------------------- lists
def test_a_list_of_paths_is_expanded_in_order_with_duplicates(files):
    a, b, comma = files["a"], files["b"], files["with,comma"]
    assert expand_source([str(b), a, str(b)]) == [b, a, b]  # the same image twice: kept, the caller decides
    assert expand_source((str(a), str(a.parent))) == [a, a, b, comma]  # a file and its folder
    assert expand_source(f"{b},{a}") == [b, a]  # commas: a list, when no file has that name
    assert expand_source(f"{b}, {a}") == [b, a]
    assert expand_source(str(comma)) == [comma]  # a file whose name has a comma is that file
    assert expand_source([str(comma)]) == [comma]  # a list item is one source: never split
    assert [p for _, p in load_sources([str(a), str(a)])] == [str(a), str(a)]


@pytest.mark.parametrize(
    ("source", "said"),
    [
        ([], r"^source is an empty list"),
        ([3], r"^source item 0 \(3, int\) is not a path"),
        ("{a},nope.png", r"^source 'nope\.png' is not a file, a folder .* \(in '.*a\.png,nope\.png', read as paths "),
        ("{a},", r"and as a list of paths separated by commas it has an empty item$"),
        (["{a}", "nope.png"], r"^source 'nope\.png' is not a file, a folder or a glob that matches anything$"),
    ],
)
def test_bad_lists_name_the_item(files, source, said):
    if isinstance(source, str):
        source = source.format(a=files["a"])
    elif source and isinstance(source[0], str):
        source = [s.format(a=files["a"]) for s in source]
    with pytest.raises((ValueError, FileNotFoundError), match=said):
        expand_source(source)


@pytest.mark.parametrize("form", ["list", "commas"])
def test_the_cli_takes_a_list_of_images(files, weights, classifier, tmp_path, capsys, form):
    a, b = files["a"], files["b"]
    source = f"[{b},{a},{b}]" if form == "list" else f"{b},{a}"
    argv = ["model=csp_darknet_n", f"weights={weights}", f"source={source}", "topk=2", f"project={tmp_path / 'runs'}"]
    assert infer_main(argv) == 0
    out = Path(capsys.readouterr().out.strip().splitlines()[-1].removeprefix("results saved to "))
    written = json.loads((out / "predictions.json").read_text())
    expected = [str(b), str(a), str(b)] if form == "list" else [str(b), str(a)]
    assert [r["file"] for r in written] == expected
    assert written == [r.to_dict() for r in classifier.predict(expected, topk=2)]
