"""The transfer behind :func:`vision.hub.download.download`: a ``.part`` file tied to its URL and validator, a lock.

Private module. Files beside a cache entry ``<file>``:

- ``<file>.part``: the bytes received so far;
- ``<file>.part.json``: ``{"url", "etag", "last_modified", "length"}`` of the response those bytes came from. A
  transfer resumes (``Range`` + ``If-Range``) only when this record names the same URL, a validator (a strong ETag or
  a Last-Modified date) and a length the ``.part`` does not exceed; otherwise it starts from byte 0;
- ``<file>.lock``: the lock file of :func:`file_lock` (empty; it stays, since removing it would break the lock).
"""

from __future__ import annotations

import contextlib
import http.client
import json
import os
import re
import sys
import urllib.error
import urllib.request
from collections.abc import Iterator
from dataclasses import asdict, dataclass
from pathlib import Path
from typing import Any

from vision.hub._download_errors import DownloadError

try:
    import fcntl
except ImportError:  # pragma: no cover - not POSIX: no cross-process lock
    fcntl = None  # type: ignore[assignment]

__all__ = ["file_lock", "part_meta", "part_path", "read_json", "remove", "transfer", "write_json"]

CHUNK = 1 << 20
_USER_AGENT = "vision-zoo"


def part_path(path: Path) -> Path:
    """The ``.part`` file of cache entry ``path``."""
    return path.with_name(path.name + ".part")


def part_meta(path: Path) -> Path:
    """The record of where cache entry ``path``'s ``.part`` file came from."""
    return path.with_name(path.name + ".part.json")


def read_json(path: Path) -> dict[str, Any] | None:
    """The JSON object in ``path``, or ``None`` when it is missing or unreadable."""
    try:
        data = json.loads(path.read_text(encoding="utf-8"))
    except (OSError, ValueError):
        return None
    return data if isinstance(data, dict) else None


def write_json(path: Path, data: dict[str, Any]) -> None:
    """Write ``data`` to ``path`` atomically (a temporary file renamed into place)."""
    tmp = path.with_name(f"{path.name}.{os.getpid()}.tmp")
    tmp.write_text(json.dumps(data, indent=1, sort_keys=True), encoding="utf-8")
    os.replace(tmp, path)


def remove(*paths: Path) -> None:
    """Delete files that may not exist."""
    for p in paths:
        p.unlink(missing_ok=True)


@contextlib.contextmanager
def file_lock(path: Path, *, url: str, note: bool) -> Iterator[None]:
    """Hold an exclusive ``flock`` on ``<path>.lock`` (other processes, e.g. torchrun ranks, wait for it).

    The kernel drops the lock when its holder exits, however it exits, so a killed download never blocks the next.
    ``note`` prints one line to stderr when the lock is busy and this process has to wait.
    """
    lock = path.with_name(path.name + ".lock")
    try:
        fd = os.open(lock, os.O_RDWR | os.O_CREAT, 0o644)
    except OSError as err:
        raise DownloadError(f"cannot create the lock file {lock} for downloading {url}: {err}") from err
    try:
        if fcntl is not None:
            try:
                fcntl.flock(fd, fcntl.LOCK_EX | fcntl.LOCK_NB)
            except BlockingIOError:
                if note:
                    print(f"waiting for another process downloading {url} into {path}", file=sys.stderr)
                fcntl.flock(fd, fcntl.LOCK_EX)
        yield
    finally:
        os.close(fd)  # releases the lock


@dataclass(frozen=True)
class _Source:
    """What identifies the bytes a response carries."""

    url: str
    etag: str | None
    last_modified: str | None
    length: int | None

    @property
    def validator(self) -> str | None:
        """The ``If-Range`` value: a strong ETag, else the Last-Modified date, else ``None`` (no safe resume)."""
        if self.etag and not self.etag.startswith("W/"):
            return self.etag
        return self.last_modified

    @classmethod
    def of(cls, url: str, response: Any, *, length: int | None) -> _Source:
        headers = response.headers
        return cls(url, headers.get("ETag"), headers.get("Last-Modified"), length)


def _resumable(url: str, dest: Path) -> tuple[_Source | None, int]:
    """``(source, size)`` of a ``.part`` that may be resumed; anything else is deleted and ``(None, 0)`` returned."""
    part, meta = part_path(dest), part_meta(dest)
    data = read_json(meta)
    try:
        have = part.stat().st_size
    except OSError:
        have = -1
    if data is not None and have >= 0:
        try:
            source = _Source(**data)
        except TypeError:
            source = None
        if (
            source is not None
            and source.url == url
            and source.validator
            and isinstance(source.length, int)
            and have <= source.length
        ):
            return source, have
    remove(part, meta)  # no record, another URL, no validator, or longer than the file it came from
    return None, 0


def _content_length(response: Any) -> int | None:
    value = response.headers.get("Content-Length")
    return int(value) if value is not None and value.strip().isdigit() else None


def _continues(response: Any, source: _Source, have: int) -> bool:
    """Whether a 206 response carries bytes ``have..`` of the very file the ``.part`` holds the start of."""
    m = re.fullmatch(r"bytes (\d+)-(\d+)/(\d+)", (response.headers.get("Content-Range") or "").strip())
    if m is None or int(m[1]) != have or int(m[3]) != source.length or int(m[2]) != source.length - 1:
        return False
    etag, modified = response.headers.get("ETag"), response.headers.get("Last-Modified")
    if source.etag and etag and etag != source.etag:
        return False
    return not (source.last_modified and modified and modified != source.last_modified)


def _open(url: str, headers: dict[str, str], dest: Path, timeout: float) -> Any:
    request = urllib.request.Request(url, headers={"User-Agent": _USER_AGENT, **headers})
    try:
        return urllib.request.urlopen(request, timeout=timeout)
    except urllib.error.HTTPError as err:
        if err.code == 416 and "Range" in headers:
            return None
        raise DownloadError(f"HTTP {err.code} {err.reason} while downloading {url} into {dest}") from err
    except (urllib.error.URLError, OSError, http.client.HTTPException, ValueError) as err:
        raise DownloadError(f"could not download {url} into {dest}: {err}") from err


def _progress_bar(total: int | None, initial: int, name: str, enabled: bool | None) -> Any:
    if enabled is None:
        enabled = sys.stderr.isatty()
    if not enabled:
        return None
    from tqdm.auto import tqdm

    return tqdm(total=total, initial=initial, unit="B", unit_scale=True, unit_divisor=1024, desc=name, leave=False)


def transfer(url: str, dest: Path, *, need_length: bool, progress: bool | None, timeout: float) -> Path:
    """Bring ``dest``'s ``.part`` file to the complete content of ``url`` and return it (not yet verified).

    Resumes a ``.part`` left by an earlier call when its record matches (see the module docstring) and the server
    confirms, through ``If-Range`` and ``Content-Range``, that it still serves the same file; otherwise starts from
    byte 0. ``need_length``: refuse a response whose completeness cannot be checked (no ``Content-Length`` and not
    chunked), for downloads without an expected hash.

    Raises:
        DownloadError: the transfer failed or broke off (a resumable ``.part`` is kept for the next call).
    """
    part = part_path(dest)
    meta = part_meta(dest)
    for attempt in range(2):
        source, have = _resumable(url, dest) if attempt == 0 else (None, 0)
        if source is not None and have == source.length:
            return part  # an earlier call received everything but stopped before verifying
        headers = {}
        if source is not None and have and source.validator:
            headers = {"Range": f"bytes={have}-", "If-Range": source.validator}
        response = _open(url, headers, dest, timeout)
        if response is None:  # 416: the server's file is no longer what the .part holds the start of
            remove(part, meta)
            continue
        with response:
            status = getattr(response, "status", None) or 200
            if source is not None and headers and status == 206:
                if not _continues(response, source, have):
                    remove(part, meta)  # a server that ignored If-Range, or another file: never splice
                    continue
                mode = "ab"
            elif status == 200:
                length = _content_length(response)
                if need_length and length is None and not getattr(response, "chunked", False):
                    raise DownloadError(
                        f"{url} was sent without a Content-Length, so a cut transfer cannot be told from a complete "
                        f"one; nothing was saved to {dest}. Pass sha256= (the file's published hash) to download it"
                    )
                source, have, mode = _Source.of(url, response, length=length), 0, "wb"
            else:
                raise DownloadError(f"unexpected HTTP status {status} while downloading {url} into {dest}")
            try:
                if mode == "wb" and source.validator and source.length is not None:
                    write_json(meta, asdict(source))
                elif mode == "wb":
                    remove(meta)  # nothing to resume against: a cut transfer restarts
                _stream(response, part, mode, have=have, source=source, dest=dest, progress=progress)
            except OSError as err:  # writing failed (disk full, permissions); reading errors are DownloadErrors
                raise DownloadError(f"cannot write {part} while downloading {url}: {err}") from err
        return part
    raise DownloadError(f"{url} changed twice while being downloaded into {dest}; call again")


def _stream(response: Any, part: Path, mode: str, *, have: int, source: _Source, dest: Path, progress: Any) -> None:
    """Append the response body to ``part``; raise :class:`DownloadError` unless all ``source.length`` bytes came."""
    resumable = source.validator is not None and source.length is not None
    hint = "call again to resume" if resumable else "call again to start over"
    written = have
    bar = _progress_bar(source.length, have, dest.name, progress)
    try:
        with open(part, mode) as f:
            while True:
                try:
                    chunk = response.read(CHUNK)
                except http.client.IncompleteRead as err:
                    f.write(err.partial)  # keep what arrived, for the resume
                    written += len(err.partial)
                    raise DownloadError(
                        f"transfer of {source.url} into {dest} broke off after {written} bytes; {hint}"
                    ) from err
                except (OSError, urllib.error.URLError, http.client.HTTPException) as err:
                    raise DownloadError(
                        f"transfer of {source.url} into {dest} broke off after {written} bytes ({err}); {hint}"
                    ) from err
                if not chunk:
                    break
                f.write(chunk)
                written += len(chunk)
                if bar is not None:
                    bar.update(len(chunk))
    except DownloadError:
        if not resumable:
            remove(part)
        raise
    finally:
        if bar is not None:
            bar.close()
    if source.length is not None and written != source.length:
        if not resumable or written > source.length:
            remove(part, part_meta(dest))
        raise DownloadError(
            f"transfer of {source.url} into {dest} ended after {written} of {source.length} bytes; {hint}"
        )
