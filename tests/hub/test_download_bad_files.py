"""Downloads that cannot be used: a hash read from the file name (only when it can be one), and a broken file fetched
without a published hash (removed from the cache, so that the next call downloads it again)."""

from __future__ import annotations

import hashlib
import warnings
from pathlib import Path

import pytest
import torch

import vision
from vision._api import _hash_from_filename
from vision.hub.download import ChecksumError, WeightsFileError, cache_path, download, load_state_dict_file


def _resnet18_file(root: Path, name: str) -> dict[str, torch.Tensor]:
    """Save a 10-class resnet18 state dict as ``root/name``; return it."""
    torch.manual_seed(0)
    state = dict(vision.create_model("resnet18", num_classes=10).state_dict())
    torch.save(state, root / name)  # a plain dict: its pickle starts with PROTO 2, EMPTY_DICT
    return state


def _record(path: Path) -> Path:
    return path.with_name(path.name + ".sha256.json")


def _same(model: torch.nn.Module, state: dict[str, torch.Tensor]) -> bool:
    return all(torch.equal(v, state[k]) for k, v in model.state_dict().items())


@pytest.mark.parametrize(
    ("name", "expected"),
    [
        ("resnet18-f37072fd.pth", "f37072fd"),  # torchvision's convention
        ("vgg16-397923af.pth", "397923af"),
        ("efficientnet-lite0-57934424.pth", "57934424"),  # lukemelas' file: a hash prefix of decimal digits only
        ("r18-20240101.pth", None),  # a date
        ("r18-20240101120000.pth", None),  # a time stamp
        ("ckpt-00050000.pt", None),  # a step counter
        ("r18-1234567.pth", None),  # too short
        ("r18.pth", None),
    ],
)
def test_only_a_plausible_hash_suffix_is_taken_from_the_file_name(name, expected):
    assert _hash_from_filename(f"http://127.0.0.1:1/models/{name}?x=1") == expected


def test_date_suffixed_url_loads(file_server, vision_home):
    state = _resnet18_file(file_server.root, "r18-20240101.pth")
    url = file_server.url("r18-20240101.pth")
    with pytest.warns(UserWarning, match="no published SHA-256"):
        model = vision.create_model("resnet18", weights=url, num_classes=10)
    assert _same(model, state)
    with warnings.catch_warnings():
        warnings.simplefilter("ignore")
        loaded = vision.load_model(url, model="resnet18")  # the loader's own path: download, then a local copy
    assert _same(loaded, state)


def test_mismatching_hash_suffix_says_it_came_from_the_file_name(file_server, vision_home):
    _resnet18_file(file_server.root, "r18-5c106cde.pth")
    url = file_server.url("r18-5c106cde.pth")
    said = r"expected 5c106cde\.\.\. \(the -5c106cde suffix of the file name, torchvision's convention\), got [0-9a-f]+"
    with pytest.raises(ChecksumError, match=said):
        vision.create_model("resnet18", weights=url, num_classes=10)
    with pytest.raises(ChecksumError, match=said):
        vision.load_model(url, model="resnet18")


def test_explicit_hash_mismatch_message_is_unchanged(file_server, vision_home):
    _resnet18_file(file_server.root, "r18-5c106cde.pth")
    with pytest.raises(ChecksumError, match=r"expected 00000000\.\.\., got [0-9a-f]{64}; the file was deleted$"):
        download(file_server.url("r18-5c106cde.pth"), sha256="0" * 8, progress=False)


def test_truncated_download_without_hash_is_removed_and_fetched_again(file_server, vision_home):
    state = _resnet18_file(file_server.root, "r18.pth")
    served = file_server.root / "r18.pth"
    data = served.read_bytes()
    served.write_bytes(data[: len(data) // 2])  # a consistent but short body: Content-Length says half, half is sent
    url = file_server.url("r18.pth")
    target = cache_path(url)
    with pytest.raises(WeightsFileError) as info, pytest.warns(UserWarning, match="no published SHA-256"):
        vision.create_model("resnet18", weights=url, num_classes=10)
    message = str(info.value)
    assert str(target) in message and "\n" not in message
    assert message.endswith("it was removed from the cache; the next call downloads it again")
    assert not target.exists() and not _record(target).exists()
    assert len(file_server.requests) == 1
    served.write_bytes(data)  # the server is fixed
    with pytest.warns(UserWarning, match="no published SHA-256"):
        model = vision.create_model("resnet18", weights=url, num_classes=10)
    assert len(file_server.requests) == 2 and _same(model, state)
    assert hashlib.sha256(target.read_bytes()).hexdigest() == hashlib.sha256(data).hexdigest()


def test_corrupt_pickle_download_is_called_corrupt_and_removed(file_server, vision_home):
    _resnet18_file(file_server.root, "r18.pth")
    served = file_server.root / "r18.pth"
    data = bytearray(served.read_bytes())
    start = data.find(b"\x80\x02}q")  # the pickle inside the zip archive: its EMPTY_DICT opcode becomes PUT (112)
    assert start > 0
    data[start + 2] = ord("p")
    served.write_bytes(bytes(data))
    url = file_server.url("r18.pth")
    with pytest.raises(WeightsFileError) as info, pytest.warns(UserWarning, match="no published SHA-256"):
        vision.load_model(url, model="resnet18")
    message = str(info.value)
    assert "weights_only set to False" not in message and "weights_only` set to `False" not in message
    assert "corrupt, or it holds objects other than tensors (Unsupported operand 112)" in message
    assert "\n" not in message and message.endswith("it was removed from the cache; the next call downloads it again")
    target = cache_path(url)
    assert not target.exists() and not _record(target).exists()


def test_a_broken_local_file_is_never_deleted(tmp_path):
    path = tmp_path / "w.pth"
    torch.save({"w": torch.randn(10_000)}, path)
    path.write_bytes(path.read_bytes()[:1000])
    with pytest.raises(WeightsFileError) as info:
        load_state_dict_file(path)
    assert path.is_file() and "removed" not in str(info.value)


def test_a_broken_download_with_a_published_hash_is_kept(file_server, vision_home):
    served = file_server.root / "w.pth"
    torch.save({"w": torch.randn(10_000)}, served)
    served.write_bytes(served.read_bytes()[:1000])  # what the publisher published: downloading again cannot help
    digest = hashlib.sha256(served.read_bytes()).hexdigest()
    path = download(file_server.url("w.pth"), sha256=digest, progress=False)
    with pytest.raises(WeightsFileError) as info:
        load_state_dict_file(path)
    assert path.is_file() and "removed" not in str(info.value)


def test_pickled_objects_are_refused_without_torchs_advice(tmp_path):
    path = tmp_path / "evil.pth"
    torch.save({"w": torch.zeros(2), "obj": Path("x")}, path)
    with pytest.raises(WeightsFileError) as info:
        load_state_dict_file(path)
    message = str(info.value)
    assert "corrupt, or it holds objects other than tensors (Unsupported global: GLOBAL pathlib" in message
    assert "weights_only` set to `False" not in message and "\n" not in message and "\x1b" not in message
