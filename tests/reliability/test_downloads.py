"""Downloads can never return the wrong bytes (issue 13, class 1), against the loopback file server of conftest.

Each test states the failure it guards against; every one of them failed on the downloader keyed by the URL's last
path segment (shared file for two URLs, no lock, blind Range resume, 416 taken as "complete", no record of the hash).
"""

from __future__ import annotations

import hashlib
import multiprocessing
import random
import threading
import time
from pathlib import Path

import pytest

from vision.hub.download import ChecksumError, DownloadError, cache_path, download

pytestmark = pytest.mark.filterwarnings("ignore:no published SHA-256:UserWarning")


def _bytes(n: int, seed: int) -> bytes:
    return random.Random(seed).randbytes(n)


def _part(url: str, sha256: str | None = None) -> Path:
    path = cache_path(url, sha256=sha256)
    return path.with_name(path.name + ".part")


def _leftovers(path: Path) -> list[str]:
    """Files beside a cache entry other than the entry, its hash record and its lock file."""
    keep = {path.name, path.name + ".sha256.json", path.name + ".lock"}
    return sorted(p.name for p in path.parent.glob(path.name + "*") if p.name not in keep)


def test_same_file_name_at_two_urls_gives_each_its_own_bytes(file_server, vision_home):
    (file_server.root / "a").mkdir()
    (file_server.root / "b").mkdir()
    first, second = _bytes(5000, 1), _bytes(7000, 2)
    (file_server.root / "a" / "model.pth").write_bytes(first)
    (file_server.root / "b" / "model.pth").write_bytes(second)
    path_a = download(file_server.url("a/model.pth"), sha256=None, progress=False)
    path_b = download(file_server.url("b/model.pth"), sha256=None, progress=False)
    assert path_a != path_b
    assert path_a.name.endswith("-model.pth") and path_b.name.endswith("-model.pth")
    assert path_a.read_bytes() == first
    assert path_b.read_bytes() == second
    digest_b = hashlib.sha256(second).hexdigest()
    path_b_hashed = download(file_server.url("b/model.pth"), sha256=digest_b, progress=False)
    assert path_b_hashed != path_b, "the expected hash is part of the key"
    assert path_b_hashed.read_bytes() == second
    assert len(file_server.requests) == 3


def _waiting_on_flock(pids: list[int]) -> bool:
    """Whether one of ``pids`` is blocked on an ``flock`` (Linux ``/proc/locks`` marks waiters with ``->``)."""
    try:
        lines = Path("/proc/locks").read_text().splitlines()
    except OSError:
        return False
    return any("->" in line and "FLOCK" in line and any(f" {pid} " in line for pid in pids) for line in lines)


def test_two_processes_downloading_at_once_both_get_the_verified_file(file_server, vision_home):
    data = _bytes(3_000_000, 3)
    (file_server.root / "shared.pth").write_bytes(data)
    url = file_server.url("shared.pth")
    pids: list[int] = []
    another_request = threading.Event()

    def hold_first(_: str) -> None:
        """Keep the first transfer open until the other process waits on the lock (or, without one, asks too)."""
        if len(file_server.requests) > 1:
            another_request.set()
            return
        deadline = time.monotonic() + 90
        while time.monotonic() < deadline and not another_request.is_set() and not _waiting_on_flock(pids):
            time.sleep(0.05)

    file_server.on_request = hold_first
    ctx = multiprocessing.get_context("spawn")
    procs = [ctx.Process(target=download, args=(url,), kwargs={"sha256": None, "progress": False}) for _ in range(2)]
    for proc in procs:
        proc.start()
        pids.append(proc.pid)
    for proc in procs:
        proc.join(timeout=180)
    assert [proc.exitcode for proc in procs] == [0, 0], "a process failed (its traceback is in the captured stderr)"
    assert len(file_server.requests) == 1, f"the file was fetched more than once: {file_server.requests}"
    file_server.on_request = None
    path = download(url, sha256=None, progress=False)  # checked against the hash recorded by the downloader
    assert path.read_bytes() == data
    assert len(file_server.requests) == 1
    assert _leftovers(path) == []


def test_stream_cut_short_without_hash_is_an_error_and_caches_nothing(file_server, vision_home):
    data = _bytes(400_000, 4)
    (file_server.root / "w.pth").write_bytes(data)
    url = file_server.url("w.pth")
    path = cache_path(url)
    file_server.cut_after = 150_000
    with pytest.raises(DownloadError, match="ended after 150000 of 400000 bytes") as info:
        download(url, sha256=None, progress=False)
    assert url in str(info.value) and str(path) in str(info.value)
    assert not path.exists(), "a cut transfer must never be cached as the file"
    assert not path.with_name(path.name + ".sha256.json").exists()
    again = download(url, sha256=None, progress=False)  # resumes the .part against the same ETag
    assert file_server.requests[-1][1] == "bytes=150000-"
    assert again.read_bytes() == data


def test_response_without_length_needs_a_hash(file_server, vision_home):
    data = _bytes(50_000, 5)
    (file_server.root / "w.pth").write_bytes(data)
    url = file_server.url("w.pth")
    file_server.send_length = False
    with pytest.raises(DownloadError, match="without a Content-Length") as info:
        download(url, sha256=None, progress=False)
    assert url in str(info.value) and str(cache_path(url)) in str(info.value)
    assert not cache_path(url).exists()
    digest = hashlib.sha256(data).hexdigest()
    assert download(url, sha256=digest, progress=False).read_bytes() == data  # the hash vouches for completeness


@pytest.mark.parametrize("with_record", [True, False], ids=["part-with-record", "part-without-record"])
def test_stale_longer_part_is_discarded_and_the_download_restarts(file_server, vision_home, with_record):
    data = _bytes(200_000, 6)
    (file_server.root / "w.pth").write_bytes(data)
    url = file_server.url("w.pth")
    part = _part(url)
    file_server.cut_after = 100_000
    with pytest.raises(DownloadError):
        download(url, sha256=None, progress=False)
    with open(part, "ab") as f:  # now longer than the server's file
        f.write(_bytes(150_000, 7))
    if not with_record:
        part.with_name(part.name + ".json").unlink(missing_ok=True)
    before = len(file_server.requests)
    path = download(url, sha256=None, progress=False)
    assert path.read_bytes() == data
    assert [rng for _, rng in file_server.requests[before:]] == [None], "expected one request from byte 0"


@pytest.mark.parametrize("honours_if_range", [True, False], ids=["if-range-honoured", "if-range-ignored"])
def test_file_changed_on_server_between_resumes_restarts_instead_of_splicing(
    file_server, vision_home, honours_if_range
):
    old, new = _bytes(300_000, 8), _bytes(300_000, 9)  # same length: only the validator tells them apart
    served = file_server.root / "w.pth"
    served.write_bytes(old)
    url = file_server.url("w.pth")
    file_server.cut_after = 120_000
    with pytest.raises(DownloadError, match="call again to resume"):
        download(url, sha256=None, progress=False)
    served.write_bytes(new)
    file_server.ignore_if_range = not honours_if_range
    before = len(file_server.requests)
    path = download(url, sha256=None, progress=False)
    assert path.read_bytes() == new, "bytes of two versions were spliced"
    assert file_server.headers[before].get("If-Range"), "the resume must carry If-Range"
    if not honours_if_range:  # the 206 named another ETag: dropped, then one request from byte 0
        assert [rng for _, rng in file_server.requests[before:]] == ["bytes=120000-", None]


@pytest.mark.parametrize("value", ["", "abc", "f37072f", "zz" * 32, "a" * 65, "g" * 64])
def test_malformed_sha256_is_an_error_naming_the_value(file_server, vision_home, value):
    (file_server.root / "w.pth").write_bytes(b"x" * 100)
    url = file_server.url("w.pth")
    with pytest.raises(ValueError, match="is not a SHA-256") as info:
        download(url, sha256=value, progress=False)
    assert repr(value) in str(info.value) and url in str(info.value)
    assert file_server.requests == []
    assert not (vision_home / "weights").exists()


def test_cached_file_changed_on_disk_is_detected_without_a_hash(file_server, vision_home):
    data = _bytes(100_000, 10)
    (file_server.root / "w.pth").write_bytes(data)
    url = file_server.url("w.pth")
    path = download(url, sha256=None, progress=False)
    with open(path, "r+b") as f:  # same size, one byte changed
        f.seek(5000)
        f.write(bytes([data[5000] ^ 0xFF]))
    with pytest.raises(ChecksumError, match="changed on disk") as info:
        download(url, sha256=None, progress=False)
    assert str(path) in str(info.value) and url in str(info.value)
    assert not path.exists(), "the changed file is deleted"
    assert download(url, sha256=None, progress=False).read_bytes() == data
    assert len(file_server.requests) == 2
