"""Verified downloads into a local cache, and safe loading of weight files.

Rules:

- The cache is ``$VISION_HOME/weights`` (``VISION_HOME`` defaults to ``~/.cache/vision``). A file's place in it is
  keyed by its full URL and its expected SHA-256 (see :func:`cache_path`): ``<16 hex digits>-<file name>``, so two
  URLs that end in the same file name never share a file.
- One process at a time downloads a given file: the others (torchrun ranks, other shells) wait on an ``flock`` of
  ``<file>.lock`` and then use the finished file.
- A file is fetched into ``<file>.part`` and renamed into place only after it is complete and verified, so the cache
  never holds a half-written or unverified file. The ``.part`` is tied to its URL and to the server's validator
  (ETag or Last-Modified) and length, recorded in ``<file>.part.json``; the next call resumes it with ``Range`` +
  ``If-Range`` only when all of these still match, and otherwise starts from byte 0 (never splicing two versions).
- With an expected hash, the file must match it. Without one, the server must state the file's length and all of it
  must arrive; its SHA-256 is then recorded in ``<file>.sha256.json``.
- A cached file is re-hashed before every use, against the expected hash or the recorded one. A mismatch (the file
  was changed on disk) deletes the file and raises :class:`ChecksumError` naming it; the next call downloads it again.
- A file downloaded without a published hash that :func:`load_state_dict_file` cannot read (a server that sent a short
  or damaged body) is removed from the cache with its recorded hash, and the error says so; the next call downloads
  it again. Files with a published hash (what the publisher published) and files outside the cache are never removed.
- A file that earlier versions cached under its bare name (``<cache>/<file name>``) is taken over (hard-linked or
  copied) when its hash matches the expected one; without an expected hash it is ignored.
- ``VISION_OFFLINE=1`` turns a cache miss into :class:`OfflineError`, which names the URL and the expected path.
- Loading uses ``torch.load(weights_only=True)`` or safetensors, never arbitrary pickle.
"""

from __future__ import annotations

import hashlib
import os
import re
import shutil
import sys
import warnings
import zipfile
from collections.abc import Mapping
from pathlib import Path

import torch

from vision.hub._download_errors import ChecksumError, DownloadError, OfflineError
from vision.hub._download_fetch import CHUNK, file_lock, part_meta, read_json, remove, transfer, write_json

__all__ = [
    "ChecksumError",
    "DownloadError",
    "OfflineError",
    "WeightsFileError",
    "cache_dir",
    "cache_path",
    "download",
    "load_state_dict_file",
    "sha256_file",
]

_HEX = re.compile(r"[0-9a-f]{8,64}")
_ANSI = re.compile(r"\x1b\[[0-9;]*m")


class WeightsFileError(ValueError):
    """A weight file could not be read (truncated, not a checkpoint, unsupported format)."""


def cache_dir() -> Path:
    """The weights cache: ``$VISION_HOME/weights``, ``VISION_HOME`` defaulting to ``~/.cache/vision``."""
    home = os.environ.get("VISION_HOME") or os.path.join(os.path.expanduser("~"), ".cache", "vision")
    return Path(home) / "weights"


def _offline() -> bool:
    return os.environ.get("VISION_OFFLINE", "").strip().lower() in {"1", "true", "yes", "on"}


def sha256_file(path: str | os.PathLike[str]) -> str:
    """Hex SHA-256 of a file."""
    digest = hashlib.sha256()
    with open(path, "rb") as f:
        for chunk in iter(lambda: f.read(CHUNK), b""):
            digest.update(chunk)
    return digest.hexdigest()


def _expected_hash(sha256: str | None, url: str) -> str | None:
    """The expected hash in lower case; ``ValueError`` naming the value unless it is 8-64 hex digits or ``None``."""
    if sha256 is None:
        return None
    if not isinstance(sha256, str) or _HEX.fullmatch(sha256.lower()) is None:
        raise ValueError(
            f"sha256={sha256!r} for {url} is not a SHA-256: give its 64 hex digits (or a prefix of at least 8), "
            "or None when the publisher gives no hash"
        )
    return sha256.lower()


def cache_path(
    url: str,
    *,
    sha256: str | None = None,
    filename: str | None = None,
    directory: str | os.PathLike[str] | None = None,
) -> Path:
    """Where :func:`download` keeps ``url``'s file: ``<directory>/<key>-<name>``.

    ``key`` is 16 hex digits of the SHA-256 of the URL and the expected hash, ``name`` the readable file name
    (``filename``, default the URL's last path component, with characters other than letters, digits and ``._+-``
    replaced by ``_``).

    Raises:
        ValueError: ``sha256`` is not 8-64 hex digits, or no file name can be derived from ``url``.
    """
    expected = _expected_hash(sha256, url)
    raw = filename or url.split("?", 1)[0].split("#", 1)[0].rstrip("/").rsplit("/", 1)[-1]
    name = re.sub(r"[^A-Za-z0-9._+-]", "_", raw).lstrip(".")
    if not name:
        raise ValueError(f"cannot derive a file name from url {url!r}; pass filename=")
    folder = Path(directory) if directory is not None else cache_dir()
    return folder / f"{_cache_key(url, expected)}-{name}"


def _cache_key(url: str, expected: str | None) -> str:
    """The 16 hex digits that start the name of ``url``'s cache entry (see :func:`cache_path`)."""
    return hashlib.sha256(f"{url}\n{expected or ''}".encode()).hexdigest()[:16]


def _record_path(path: Path) -> Path:
    return path.with_name(path.name + ".sha256.json")


def _mismatch(path: Path, url: str, expected: str, actual: str, origin: str | None) -> str:
    """The message of a download that does not have its expected hash; ``origin`` says where that hash came from."""
    said = f" ({origin})" if origin else ""
    return f"SHA-256 mismatch for {path} (from {url}): expected {expected}...{said}, got {actual}; the file was deleted"


def _check_cached(path: Path, expected: str | None, url: str, origin: str | None = None) -> str | None:
    """``None`` when ``path`` is cached and verified; else why not: ``"missing"``, ``"unrecorded"`` or a message."""
    if not path.is_file():
        return "missing"
    if expected is None:
        record = read_json(_record_path(path)) or {}
        recorded = record.get("sha256")
        if not isinstance(recorded, str) or record.get("url") != url:
            return "unrecorded"  # cannot be vouched for: downloaded again
    else:
        recorded = expected
    actual = sha256_file(path)
    if actual.startswith(recorded):
        return None
    if expected is not None:
        return _mismatch(path, url, expected, actual, origin)
    return (
        f"SHA-256 mismatch for {path} (from {url}): the file changed on disk since it was downloaded (recorded "
        f"{recorded} in {_record_path(path)}, now {actual}); the file was deleted, call again to download it afresh"
    )


def download(
    url: str,
    *,
    sha256: str | None,
    sha256_from: str | None = None,
    filename: str | None = None,
    directory: str | os.PathLike[str] | None = None,
    progress: bool | None = None,
    timeout: float = 60.0,
) -> Path:
    """Return the local path of ``url``'s file, downloading and verifying it first if it is not cached.

    Safe to call from several processes at once (one downloads, the others wait and then use its file).

    Args:
        url: ``http(s)://`` or ``file://`` address.
        sha256: expected hex SHA-256 (or a prefix of >= 8 hex digits). ``None`` when the publisher gives no hash
            (a warning says so): the server must then send the file's length, and the SHA-256 of the first download
            is recorded and checked on every later use. ``""`` or anything but 8-64 hex digits is an error.
        sha256_from: where ``sha256`` was found when the caller did not get it from the publisher, said in a mismatch
            message (e.g. ``"the -f37072fd suffix of the file name, torchvision's convention"``).
        filename: readable part of the name in the cache (default: the URL's last path component).
        directory: cache directory (default: :func:`cache_dir`).
        progress: show a tqdm bar; default: only when stderr is a terminal.
        timeout: socket timeout in seconds.

    Raises:
        ValueError: ``sha256`` is malformed (the message names the value).
        OfflineError: ``VISION_OFFLINE=1`` and the file is not cached (names the URL and the expected path).
        ChecksumError: the downloaded or cached file has the wrong hash (the file is deleted).
        DownloadError: the transfer failed or was incomplete; a resumable ``.part`` file is kept for the next call.

    Example:
        >>> path = download("https://download.pytorch.org/models/resnet18-f37072fd.pth", sha256="f37072fd")
    """
    expected = _expected_hash(sha256, url)
    path = cache_path(url, sha256=expected, filename=filename, directory=directory)
    problem = _check_cached(path, expected, url, sha256_from)
    if problem is None:
        return path  # the common case: no lock, no network
    if _offline() and problem in ("missing", "unrecorded") and _legacy_copy(path, expected) is None:
        raise OfflineError(f"VISION_OFFLINE is set and {url} is not in the cache; expected it at {path}")
    try:
        path.parent.mkdir(parents=True, exist_ok=True)
    except OSError as err:
        raise DownloadError(f"cannot create the cache folder {path.parent} for {url}: {err}") from err
    note = progress if progress is not None else sys.stderr.isatty()
    with file_lock(path, url=url, note=note):
        problem = _check_cached(path, expected, url, sha256_from)  # another process may have finished it meanwhile
        if problem is None:
            return path
        if problem not in ("missing", "unrecorded"):
            remove(path, _record_path(path))
            raise ChecksumError(problem)
        remove(path, _record_path(path))
        if _adopt_legacy_copy(path, expected, url):
            return path
        if _offline():
            raise OfflineError(f"VISION_OFFLINE is set and {url} is not in the cache; expected it at {path}")
        _fetch_verified(url, path, expected, sha256_from, progress=progress, timeout=timeout)
    return path


def _legacy_copy(path: Path, expected: str | None) -> Path | None:
    """A file cached under its bare name by earlier versions (``<cache>/<name>``), usable only with a known hash."""
    legacy = path.with_name(path.name.split("-", 1)[1])
    return legacy if expected is not None and legacy.is_file() else None


def _adopt_legacy_copy(path: Path, expected: str | None, url: str) -> bool:
    """Link (or copy) a bare-name file of earlier versions to ``path`` when it has the expected hash (lock held)."""
    legacy = _legacy_copy(path, expected)
    if legacy is None or expected is None or not sha256_file(legacy).startswith(expected):
        return False
    tmp = path.with_name(f"{path.name}.{os.getpid()}.tmp")
    try:
        try:
            os.link(legacy, tmp)
        except OSError:
            shutil.copyfile(legacy, tmp)
        os.replace(tmp, path)
    except OSError as err:
        remove(tmp)
        raise DownloadError(f"cannot bring {legacy} (earlier download of {url}) into place at {path}: {err}") from err
    return True


def _fetch_verified(
    url: str, path: Path, expected: str | None, origin: str | None, *, progress: bool | None, timeout: float
) -> None:
    """Download into the ``.part`` file, verify it, record its hash and rename it to ``path`` (lock held)."""
    part = transfer(url, path, need_length=expected is None, progress=progress, timeout=timeout)
    actual = sha256_file(part)
    if expected is not None and not actual.startswith(expected):
        remove(part, part_meta(path))
        raise ChecksumError(_mismatch(path, url, expected, actual, origin))
    size = part.stat().st_size
    try:
        write_json(_record_path(path), {"url": url, "sha256": actual, "size": size})
        os.replace(part, path)
    except OSError as err:
        raise DownloadError(f"cannot move the download of {url} into place at {path}: {err}") from err
    remove(part_meta(path))
    if expected is None:
        warnings.warn(
            f"no published SHA-256 for {url}: recorded {actual} of the downloaded {path}; later uses are checked "
            "against it",
            stacklevel=3,
        )


def _unwrap(obj: object, path: Path) -> dict[str, torch.Tensor]:
    """Find the state dict inside common checkpoint containers (``state_dict``, ``model``, ``ema`` ...)."""
    if isinstance(obj, Mapping):
        if obj and all(isinstance(v, torch.Tensor) for v in obj.values()):
            return dict(obj)
        for key in ("state_dict", "model_ema", "ema", "model", "module", "net", "params"):
            inner = obj.get(key)
            if isinstance(inner, Mapping) and inner and all(isinstance(v, torch.Tensor) for v in inner.values()):
                return dict(inner)
    raise WeightsFileError(f"{path} holds no state dict (a mapping of names to tensors); found {type(obj).__name__}")


def load_state_dict_file(path: str | os.PathLike[str]) -> dict[str, torch.Tensor]:
    """Read a weight file into a CPU state dict, safely.

    ``.safetensors`` files are read with safetensors; anything else with ``torch.load(weights_only=True)``, which
    refuses arbitrary pickled objects. Checkpoints that wrap their weights (``{"state_dict": ...}``,
    ``{"model": ...}``) are unwrapped. A cache entry that :func:`download` fetched without a published hash and that
    cannot be read is removed from the cache together with its recorded hash, so that the next call downloads it again
    (the error says so); no other file is ever removed.

    Raises:
        FileNotFoundError: the path does not exist.
        WeightsFileError: the file is truncated, empty, not a checkpoint, or contains non-tensor pickles (one line
            naming the file).
    """
    p = Path(path)
    try:
        return _read_state_dict(p)
    except WeightsFileError as err:
        record = _unverified_download(p)
        if record is None:
            raise
        raise _forget_download(p, record, err) from err


def _unverified_download(path: Path) -> dict[str, object] | None:
    """The record of cache entry ``path`` when :func:`download` fetched it without a published hash: its
    ``.sha256.json`` names a URL whose hash-less cache key starts the file's name. ``None`` for any other file."""
    record = read_json(_record_path(path))
    url = record.get("url") if record is not None else None
    if record is None or not isinstance(url, str) or not isinstance(record.get("sha256"), str):
        return None
    return record if path.name.startswith(f"{_cache_key(url, None)}-") else None


def _forget_download(path: Path, record: dict[str, object], error: WeightsFileError) -> WeightsFileError:
    """Remove the unreadable cache entry ``path`` and its recorded hash; the error to raise, saying what was done."""
    url = str(record["url"])
    try:
        with file_lock(path, url=url, note=False):
            if read_json(_record_path(path)) != record:  # another process has downloaded it again meanwhile
                return WeightsFileError(f"{error}; {url} has been downloaded again since, call again to use it")
            remove(path, _record_path(path))
    except (OSError, DownloadError) as err:
        return WeightsFileError(
            f"{error}; it is a download of {url} without a published SHA-256 but could not be removed from the cache "
            f"({err}): delete {path} and {_record_path(path)} to download it again"
        )
    return WeightsFileError(f"{error}; it was removed from the cache; the next call downloads it again")


def _torch_reason(err: BaseException) -> str:
    """torch's reason in short: the first sentence of the first line of what its unpickler said (``Unsupported
    operand 112``), else of its message; without colour codes or torch's advice (``weights_only=False``)."""
    text = _ANSI.sub("", str(err))
    _, marker, said = text.partition("WeightsUnpickler error:")
    lines = [line.strip() for line in (said if marker else text).splitlines() if line.strip()]
    first = re.split(r"(?<=\.)\s+", lines[0])[0].rstrip(".") if lines else ""
    return first or type(err).__name__


def _read_state_dict(p: Path) -> dict[str, torch.Tensor]:
    """:func:`load_state_dict_file` without the removal of broken downloads."""
    if not p.is_file():
        raise FileNotFoundError(f"weight file not found: {p}")
    if p.stat().st_size == 0:
        raise WeightsFileError(f"{p} is empty")
    with open(p, "rb") as f:
        head = f.read(16)
    is_safetensors = p.suffix == ".safetensors" or (len(head) >= 9 and head[8:9] == b"{")
    if is_safetensors:
        from safetensors import SafetensorError
        from safetensors.torch import load_file

        try:
            return load_file(str(p), device="cpu")
        except (SafetensorError, OSError, ValueError) as err:
            why = _ANSI.sub("", str(err)).strip().split("\n", 1)[0]
            raise WeightsFileError(f"{p} is not a valid safetensors file (truncated or corrupt?): {why}") from err
    if not head.startswith((b"PK\x03\x04", b"\x80")):  # torch.save: a zip archive, or a pickle (legacy format)
        text = head.decode("ascii", "replace")
        start = repr(text) if all(c.isprintable() or c in "\t\r\n" for c in text) else head[:8].hex(" ")
        why = f"neither a PyTorch checkpoint nor safetensors (it starts with {start})"
        raise WeightsFileError(f"{p} is not a weights file: {why}")
    try:
        obj = torch.load(p, map_location="cpu", weights_only=True)
    except zipfile.BadZipFile as err:
        raise WeightsFileError(
            f"{p} is not a valid PyTorch checkpoint (truncated or not a zip archive): {_torch_reason(err)}"
        ) from err
    except (RuntimeError, EOFError, OSError, ValueError) as err:
        why = _torch_reason(err)
        raise WeightsFileError(f"{p} could not be read as a PyTorch checkpoint (truncated or corrupt?): {why}") from err
    except Exception as err:  # pickle.UnpicklingError: what weights_only refuses, or a damaged pickle
        raise WeightsFileError(
            f"{p} could not be read by torch.load(weights_only=True): it is corrupt, or it holds objects other than "
            f"tensors ({_torch_reason(err)})"
        ) from err
    return _unwrap(obj, p)
