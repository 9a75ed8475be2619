"""Verified downloads into a local cache, and safe loading of weight files.

Rules:

- The cache is ``$VISION_HOME/weights`` (``VISION_HOME`` defaults to ``~/.cache/vision``).
- A file is fetched into ``<name>.part`` and renamed into place only after its SHA-256 matched, so the cache never
  holds a half-written or unverified file. An interrupted transfer leaves the ``.part`` file; the next call resumes it
  with an HTTP ``Range`` request (and starts over if the server ignores ranges).
- A cached file is re-hashed before every use; a mismatch deletes it and raises :class:`ChecksumError`.
- ``VISION_OFFLINE=1`` turns a cache miss into :class:`OfflineError`, which names the URL and the expected path.
- Loading uses ``torch.load(weights_only=True)`` or safetensors, never arbitrary pickle.
"""

from __future__ import annotations

import hashlib
import http.client
import os
import sys
import urllib.error
import urllib.request
import zipfile
from collections.abc import Mapping
from pathlib import Path

import torch

__all__ = [
    "ChecksumError",
    "DownloadError",
    "OfflineError",
    "WeightsFileError",
    "cache_dir",
    "download",
    "load_state_dict_file",
    "sha256_file",
]

_CHUNK = 1 << 20
_USER_AGENT = "vision-zoo"


class DownloadError(RuntimeError):
    """A transfer failed (network error, HTTP error, short read)."""


class ChecksumError(DownloadError):
    """A file's SHA-256 did not match the expected one; the file was deleted."""


class OfflineError(DownloadError, FileNotFoundError):
    """``VISION_OFFLINE=1`` and the file is not in the cache."""


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
        for chunk in iter(lambda: f.read(_CHUNK), b""):
            digest.update(chunk)
    return digest.hexdigest()


def _matches(actual: str, expected: str) -> bool:
    return actual.startswith(expected.lower())


def _progress_bar(total: int | None, initial: int, name: str, enabled: bool | None):
    if enabled is None:
        enabled = sys.stderr.isatty()
    if not enabled:
        return None
    from tqdm.auto import tqdm

    return tqdm(total=total, initial=initial, unit="B", unit_scale=True, unit_divisor=1024, desc=name, leave=False)


def _fetch(url: str, part: Path, *, progress: bool | None, timeout: float) -> None:
    """Download ``url`` into ``part``, resuming from its current size when the server supports ranges."""
    have = part.stat().st_size if part.exists() else 0
    request = urllib.request.Request(url, headers={"User-Agent": _USER_AGENT})
    if have:
        request.add_header("Range", f"bytes={have}-")
    try:
        response = urllib.request.urlopen(request, timeout=timeout)
    except urllib.error.HTTPError as err:
        if err.code == 416 and have:  # range not satisfiable: the .part is already complete (or longer)
            return
        raise DownloadError(f"HTTP {err.code} {err.reason} while downloading {url}") from err
    except (urllib.error.URLError, OSError) as err:
        raise DownloadError(f"could not download {url}: {err}") from err
    with response:
        status = getattr(response, "status", 200)
        mode = "ab" if (have and status == 206) else "wb"
        if mode == "wb":
            have = 0
        length = response.headers.get("Content-Length")
        total = int(length) + have if length is not None else None
        bar = _progress_bar(total, have, part.name.removesuffix(".part"), progress)
        written = have
        try:
            with open(part, mode) as f:
                while True:
                    try:
                        chunk = response.read(_CHUNK)
                    except http.client.IncompleteRead as err:
                        f.write(err.partial)  # keep what arrived, for the resume
                        written += len(err.partial)
                        raise DownloadError(
                            f"transfer of {url} broke off after {written} bytes; call again to resume"
                        ) from err
                    except (OSError, urllib.error.URLError, http.client.HTTPException) as err:
                        raise DownloadError(f"transfer of {url} broke off after {written} bytes: {err}") from err
                    if not chunk:
                        break
                    f.write(chunk)
                    written += len(chunk)
                    if bar is not None:
                        bar.update(len(chunk))
        finally:
            if bar is not None:
                bar.close()
    if total is not None and written < total:
        raise DownloadError(f"transfer of {url} ended after {written} of {total} bytes; call again to resume")


def download(
    url: str,
    *,
    sha256: str | None,
    filename: str | None = None,
    directory: str | os.PathLike[str] | None = None,
    progress: bool | None = None,
    timeout: float = 60.0,
) -> Path:
    """Return the local path of ``url``'s file, downloading and verifying it first if it is not cached.

    Args:
        url: ``http(s)://`` or ``file://`` address.
        sha256: expected hex SHA-256 (or a prefix of >= 8 hex digits). ``None`` skips the check, which is only
            allowed for files whose publisher gives no hash; a warning says so.
        filename: name in the cache (default: the URL's last path component).
        directory: cache directory (default: :func:`cache_dir`).
        progress: show a tqdm bar; default: only when stderr is a terminal.
        timeout: socket timeout in seconds.

    Raises:
        OfflineError: ``VISION_OFFLINE=1`` and the file is not cached (names the URL and the expected path).
        ChecksumError: the downloaded or cached file has the wrong hash (the file is deleted).
        DownloadError: the transfer failed; a partial ``.part`` file is kept for resuming.

    Example:
        >>> path = download("https://download.pytorch.org/models/resnet18-f37072fd.pth", sha256="f37072fd")
    """
    name = filename or url.rstrip("/").rsplit("/", 1)[-1].split("?", 1)[0]
    if not name:
        raise ValueError(f"cannot derive a file name from url {url!r}; pass filename=")
    folder = Path(directory) if directory is not None else cache_dir()
    path = folder / name
    if path.exists():
        _verify(path, sha256, url, delete=True)
        return path
    if _offline():
        raise OfflineError(f"VISION_OFFLINE is set and {url} is not in the cache; expected it at {path}")
    folder.mkdir(parents=True, exist_ok=True)
    part = path.with_name(path.name + ".part")
    _fetch(url, part, progress=progress, timeout=timeout)
    _verify(part, sha256, url, delete=True)
    os.replace(part, path)
    return path


def _verify(path: Path, sha256: str | None, url: str, *, delete: bool) -> None:
    if sha256 is None:
        import warnings

        warnings.warn(f"no published SHA-256 for {url}: {path} is used unverified", stacklevel=3)
        return
    actual = sha256_file(path)
    if not _matches(actual, sha256):
        if delete:
            path.unlink(missing_ok=True)
        raise ChecksumError(
            f"SHA-256 mismatch for {path} (from {url}): expected {sha256}..., got {actual}; the file was deleted"
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
    ``{"model": ...}``) are unwrapped.

    Raises:
        FileNotFoundError: the path does not exist.
        WeightsFileError: the file is truncated, empty, not a checkpoint, or contains non-tensor pickles.
    """
    p = Path(path)
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
            raise WeightsFileError(f"{p} is not a valid safetensors file (truncated or corrupt?): {err}") from err
    try:
        obj = torch.load(p, map_location="cpu", weights_only=True)
    except zipfile.BadZipFile as err:
        raise WeightsFileError(
            f"{p} is not a valid PyTorch checkpoint (truncated or not a zip archive): {err}"
        ) from err
    except (RuntimeError, EOFError, OSError, ValueError) as err:
        raise WeightsFileError(f"{p} could not be read as a PyTorch checkpoint (truncated or corrupt?): {err}") from err
    except Exception as err:  # pickle.UnpicklingError for objects that weights_only refuses
        raise WeightsFileError(
            f"{p} was refused by torch.load(weights_only=True) (it holds more than tensors): {err}"
        ) from err
    return _unwrap(obj, p)
