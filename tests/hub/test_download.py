"""Downloader against a loopback HTTP server: cache, hashes, resume, offline mode, broken files."""

from __future__ import annotations

import hashlib
import os
from pathlib import Path

import pytest
import torch

from vision.hub.download import (
    ChecksumError,
    DownloadError,
    OfflineError,
    WeightsFileError,
    cache_dir,
    cache_path,
    download,
    load_state_dict_file,
)


def _serve_checkpoint(root: Path, name: str = "weights.pth", numel: int = 200_000) -> tuple[bytes, str]:
    torch.manual_seed(0)
    path = root / name
    torch.save({"w": torch.randn(numel), "b": torch.zeros(3)}, path)
    data = path.read_bytes()
    return data, hashlib.sha256(data).hexdigest()


def test_download_then_cache_hit_makes_no_request(file_server, vision_home):
    data, digest = _serve_checkpoint(file_server.root)
    path = download(file_server.url("weights.pth"), sha256=digest, progress=False)
    assert path == cache_path(file_server.url("weights.pth"), sha256=digest)
    assert path.parent == cache_dir() and path.name.endswith("-weights.pth")
    assert path.read_bytes() == data
    assert len(file_server.requests) == 1
    again = download(file_server.url("weights.pth"), sha256=digest, progress=False)
    assert again == path
    assert len(file_server.requests) == 1, "a cache hit must not touch the network"


def test_hash_prefix_is_accepted(file_server, vision_home):
    _, digest = _serve_checkpoint(file_server.root)
    path = download(file_server.url("weights.pth"), sha256=digest[:8], progress=False)
    assert path.is_file()


def test_wrong_hash_raises_and_leaves_nothing(file_server, vision_home):
    _serve_checkpoint(file_server.root)
    with pytest.raises(ChecksumError, match=r"SHA-256 mismatch"):
        download(file_server.url("weights.pth"), sha256="0" * 64, progress=False)
    folder = cache_dir()
    left = [p for p in folder.iterdir() if p.suffix != ".lock"] if folder.exists() else []
    assert not left, f"left behind: {left}"


def test_tampered_cached_file_is_deleted(file_server, vision_home):
    _, digest = _serve_checkpoint(file_server.root)
    path = download(file_server.url("weights.pth"), sha256=digest, progress=False)
    with open(path, "r+b") as f:
        f.seek(100)
        f.write(b"\x00\x01\x02")
    with pytest.raises(ChecksumError):
        download(file_server.url("weights.pth"), sha256=digest, progress=False)
    assert not path.exists()


def test_cut_transfer_resumes_with_range(file_server, vision_home):
    data, digest = _serve_checkpoint(file_server.root)
    half = len(data) // 2
    file_server.cut_after = half
    with pytest.raises(DownloadError, match="call again to resume"):
        download(file_server.url("weights.pth"), sha256=digest, progress=False)
    target = cache_path(file_server.url("weights.pth"), sha256=digest)
    part = target.with_name(target.name + ".part")
    assert part.is_file() and part.stat().st_size == half
    assert not target.exists()
    path = download(file_server.url("weights.pth"), sha256=digest, progress=False)
    assert path.read_bytes() == data
    assert file_server.requests[-1][1] == f"bytes={half}-", "the second request must resume with Range"
    assert not part.exists()


def test_server_ignoring_range_restarts_cleanly(file_server, vision_home):
    data, digest = _serve_checkpoint(file_server.root)
    file_server.cut_after = 1000
    with pytest.raises(DownloadError, match="call again to resume"):
        download(file_server.url("weights.pth"), sha256=digest, progress=False)
    file_server.ignore_range = True
    path = download(file_server.url("weights.pth"), sha256=digest, progress=False)
    assert path.read_bytes() == data


def test_offline_mode_names_url_and_path(file_server, vision_home, monkeypatch):
    _, digest = _serve_checkpoint(file_server.root)
    monkeypatch.setenv("VISION_OFFLINE", "1")
    url = file_server.url("weights.pth")
    with pytest.raises(OfflineError) as info:
        download(url, sha256=digest, progress=False)
    assert url in str(info.value)
    assert str(cache_path(url, sha256=digest)) in str(info.value)
    assert file_server.requests == []


def test_http_error_is_clear(file_server, vision_home):
    with pytest.raises(Exception, match="HTTP 404"):
        download(file_server.url("missing.pth"), sha256="0" * 8, progress=False)


def test_truncated_checkpoint_gives_clear_error(tmp_path):
    path = tmp_path / "w.pth"
    torch.save({"w": torch.randn(10_000)}, path)
    data = path.read_bytes()
    path.write_bytes(data[: len(data) // 2])
    with pytest.raises(WeightsFileError, match=r"w\.pth"):
        load_state_dict_file(path)


def test_non_zip_and_empty_files_give_clear_errors(tmp_path):
    junk = tmp_path / "junk.pth"
    junk.write_bytes(os.urandom(4096))
    with pytest.raises(WeightsFileError, match=r"junk.pth"):
        load_state_dict_file(junk)
    empty = tmp_path / "empty.pth"
    empty.write_bytes(b"")
    with pytest.raises(WeightsFileError, match="empty"):
        load_state_dict_file(empty)
    with pytest.raises(FileNotFoundError):
        load_state_dict_file(tmp_path / "nope.pth")


def test_a_text_file_named_pt_is_not_a_weights_file(tmp_path):
    text = tmp_path / "notes.pt"
    text.write_text("epoch 3: loss 0.42\n", encoding="utf-8")
    with pytest.raises(WeightsFileError, match=r"notes\.pt is not a weights file: .* starts with 'epoch 3: loss 0\.'"):
        load_state_dict_file(text)
    legacy = tmp_path / "legacy.pt"  # the pre-zip torch.save format still loads
    torch.save({"w": torch.ones(2)}, legacy, _use_new_zipfile_serialization=False)
    assert torch.equal(load_state_dict_file(legacy)["w"], torch.ones(2))


def test_pickled_objects_are_refused(tmp_path):
    path = tmp_path / "evil.pth"
    torch.save({"w": torch.zeros(2), "obj": Path("x")}, path)
    with pytest.raises(WeightsFileError, match="weights_only"):
        load_state_dict_file(path)


def test_safetensors_and_wrapped_checkpoints(tmp_path):
    from safetensors.torch import save_file

    tensors = {"a": torch.arange(4.0), "b": torch.ones(2, 2)}
    save_file(tensors, tmp_path / "w.safetensors")
    loaded = load_state_dict_file(tmp_path / "w.safetensors")
    assert torch.equal(loaded["a"], tensors["a"])
    torch.save({"epoch": 3, "state_dict": tensors}, tmp_path / "wrapped.pth")
    assert set(load_state_dict_file(tmp_path / "wrapped.pth")) == {"a", "b"}


def test_bare_name_file_of_earlier_versions_is_taken_over_only_with_a_matching_hash(
    file_server, vision_home, monkeypatch
):
    data, digest = _serve_checkpoint(file_server.root)
    url = file_server.url("weights.pth")
    legacy = cache_dir() / "weights.pth"  # where versions before the URL-keyed cache put it
    legacy.parent.mkdir(parents=True)
    legacy.write_bytes(data)
    monkeypatch.setenv("VISION_OFFLINE", "1")
    with pytest.raises(OfflineError):
        download(url, sha256=None, progress=False)  # nothing vouches for it without a hash
    with pytest.raises(OfflineError):
        download(url, sha256="0" * 64, progress=False)
    path = download(url, sha256=digest, progress=False)
    assert path == cache_path(url, sha256=digest) and path.read_bytes() == data
    assert file_server.requests == []
