"""Errors of :mod:`vision.hub.download` (kept apart so the transfer module can raise them without an import cycle)."""

from __future__ import annotations

__all__ = ["ChecksumError", "DownloadError", "OfflineError"]


class DownloadError(RuntimeError):
    """A transfer failed (network error, HTTP error, short read, no length to check completeness against)."""


class ChecksumError(DownloadError):
    """A file's SHA-256 did not match the expected or recorded one; the file was deleted."""


class OfflineError(DownloadError, FileNotFoundError):
    """``VISION_OFFLINE=1`` and the file is not in the cache."""


for _cls in (DownloadError, ChecksumError, OfflineError):
    _cls.__module__ = "vision.hub.download"  # where users import them from
