"""Bad-sample bookkeeping shared by every dataset: report once, count, never crash.

Rules (the same for all datasets of :mod:`vision.data`):

==================  ======================================================================================
reason              what happens
==================  ======================================================================================
``missing_file``    an annotation names a file that does not exist: the image is dropped at construction
``empty_file``      a 0-byte file: dropped at construction (detection) or replaced at load (ImageFolder)
``unreadable``      the bytes do not decode (corrupt, truncated, not an image): replaced at load time by the
                    next readable sample (index + 1, wrapping), so a batch stays full
``box_clipped``     a box reaches outside the image: clipped to the image
``box_outside``     a box lies entirely outside the image (nothing left after clipping): the box is dropped
``box_degenerate``  a box with zero or negative width/height, or a non-finite coordinate: the box is dropped
``bad_annotation``  an annotation that cannot be used (unknown image or category id, a bbox that is not four
                    numbers, malformed xml/segmentation): dropped (a malformed VOC xml drops its image)
``no_segmentation`` ``masks=True`` but an annotation has no segmentation: its box is used as its mask
``size_mismatch``   the image's real size differs from the annotation: boxes are clipped to the real image (COCO
                    reads the size from the file header at construction when a box reaches past the annotated
                    size, otherwise it is found at load) and masks cropped/padded
``duplicate_id``    two image records share an id (COCO) or an image file (VOC): the same record twice keeps one
                    copy; different records are all skipped with their annotations, which cannot be told apart.
                    The same COCO category twice keeps one copy; one category id with two names is a
                    :class:`DataError` (the label space is ambiguous)
``empty_class``     an ImageFolder class folder holds no image: it is not made a class
==================  ======================================================================================

An annotation that cannot be used is reported with the annotation file, the annotation's id and the offending value
(``bad_annotation``: unknown image or category id, a bbox that is not four numbers; ``box_degenerate``: a
non-finite value or a width/height <= 0) and skipped. After construction, a data set that dropped anything emits
one :class:`DataSummaryWarning`, the summary line of the split (images and boxes kept and dropped; also
``dataset.summary()``). A data set with nothing usable left (no image, or no box at all for detection) raises
:class:`DataError` naming the file before any training starts; so does an annotation file that is not valid JSON
(with the line and column) or is a folder, an images folder that does not exist, and, for COCO, annotations without
any category or one category id given to two names (fatal: the label space is unknown or ambiguous).

Each problem emits one :class:`BadSampleWarning` naming the file and the reason (the first ``max_warnings`` of
each reason per dataset; later ones are only counted, and one last warning says so). Every problem is listed in
``dataset.bad_samples`` and summarised by ``dataset.report()``.

Load-time failures are found inside DataLoader worker processes: they are recorded in a shared-memory table of
one byte per sample, so the main process's ``report()`` sees them too, and a file is warned about only once
across all workers.
"""

from __future__ import annotations

import threading
import warnings
from collections import Counter
from collections.abc import Callable
from dataclasses import dataclass
from typing import Any

import torch

__all__ = [
    "REASONS",
    "BadSample",
    "BadSampleLog",
    "BadSampleMixin",
    "BadSampleWarning",
    "DataError",
    "DataSummaryWarning",
]

REASONS: dict[str, str] = {
    "missing_file": "file does not exist; image dropped",
    "empty_file": "file is empty (0 bytes); image skipped",
    "unreadable": "image cannot be decoded (corrupt, truncated or not an image); replaced by the next sample",
    "box_clipped": "box extends outside the image; clipped to the image",
    "box_outside": "box lies entirely outside the image; box dropped",
    "box_degenerate": "box has zero/negative width or height or a non-finite coordinate; box dropped",
    "bad_annotation": "annotation cannot be used (unknown image or category id, malformed box or record); dropped",
    "no_segmentation": "annotation has no segmentation; its box is used as its mask",
    "size_mismatch": "image size differs from the annotation; boxes clipped to the real image, masks cropped/padded",
    "duplicate_id": "image id (or image file, or category id) given to more than one record",
    "empty_class": "class folder holds no image; not made a class",
}
_CODES = {name: i + 1 for i, name in enumerate(REASONS)}
_NAMES = {code: name for name, code in _CODES.items()}


class BadSampleWarning(UserWarning):
    """A dataset found a bad sample (unreadable image, missing file, bad box) and skipped, replaced or fixed it."""


class DataSummaryWarning(UserWarning):
    """One line per data set that dropped something at construction: how many images and boxes were kept/dropped."""


class DataError(ValueError):
    """A data set that cannot be used (malformed annotation file, nothing usable left); the message names the file."""


@dataclass(frozen=True)
class BadSample:
    """One reported problem.

    Attributes:
        file: the image (or annotation) file concerned.
        reason: a key of :data:`REASONS`.
        detail: specifics (decoder message, the offending box, ...); may be empty.
    """

    file: str
    reason: str
    detail: str = ""

    def __str__(self) -> str:
        extra = f" ({self.detail})" if self.detail else ""
        return f"{self.file}: {REASONS.get(self.reason, self.reason)}{extra}"


class BadSampleLog:
    """Per-dataset record of bad samples; safe to use from DataLoader workers.

    Args:
        name: dataset name used in messages (e.g. ``"CocoDetection(train.json)"``).
        num_items: number of samples (size of the shared load-failure table).
        max_warnings: individual warnings per reason before further ones are only counted.
    """

    def __init__(self, name: str, num_items: int, *, max_warnings: int = 20) -> None:
        self.name = name
        self.max_warnings = max_warnings
        self._entries: list[BadSample] = []
        self._seen: set[tuple[str, str]] = set()
        self._warned: Counter[str] = Counter()
        self._lock = threading.Lock()
        # shared memory: forked and spawned DataLoader workers write into the table the main process reads
        self._codes = torch.zeros(max(num_items, 1), dtype=torch.int8).share_memory_()

    def resize(self, num_items: int) -> None:
        """Resize the load-failure table (for datasets whose length changes after construction)."""
        self._codes = torch.zeros(max(num_items, 1), dtype=torch.int8).share_memory_()

    def __getstate__(self) -> dict:
        state = self.__dict__.copy()
        del state["_lock"]
        return state

    def __setstate__(self, state: dict) -> None:
        self.__dict__.update(state)
        self._lock = threading.Lock()

    def add(self, file: str, reason: str, detail: str = "") -> None:
        """Record a problem found while building the dataset (reported once per ``(file, reason, detail)``)."""
        if reason not in REASONS:
            raise ValueError(f"unknown bad-sample reason {reason!r}; known: {', '.join(REASONS)}")
        key = (f"{file}|{detail}", reason)
        with self._lock:
            if key in self._seen:
                return
            self._seen.add(key)
            entry = BadSample(str(file), reason, detail)
            self._entries.append(entry)
        self._warn(entry)

    def mark_failed(self, index: int, file: str, reason: str, detail: str = "") -> None:
        """Record a load-time failure of sample ``index``; warns only the first time any process sees it."""
        first = int(self._codes[index]) == 0
        self._codes[index] = _CODES[reason]
        if first:
            entry = BadSample(str(file), reason, detail)
            with self._lock:
                self._entries.append(entry)
                self._seen.add((f"{file}|{detail}", reason))
            self._warn(entry)

    def counts(self) -> Counter[str]:
        """Number of problems recorded so far (in this process) per reason."""
        with self._lock:
            return Counter(e.reason for e in self._entries)

    def warned_about(self) -> str:
        """How many of the recorded problems were warned about one by one: ``"each was warned about above"``, or
        ``"the first N of each kind were warned about above"`` when some were only counted."""
        if any(n > self.max_warnings for n in self.counts().values()):
            return f"the first {self.max_warnings} of each kind were warned about above"
        return "each was warned about above"

    def summarize(self, line: str, *, dropped: bool) -> None:
        """Emit ``line`` (the data set's summary) as a :class:`DataSummaryWarning` when anything was ``dropped``."""
        if dropped:
            warnings.warn(f"{self.name}: {line} (see dataset.report())", DataSummaryWarning, stacklevel=3)

    def failed(self, index: int) -> bool:
        """Whether sample ``index`` is known to be unreadable (by any worker)."""
        return bool(self._codes[index] != 0)

    def _warn(self, entry: BadSample) -> None:
        with self._lock:
            self._warned[entry.reason] += 1
            n = self._warned[entry.reason]
        if n <= self.max_warnings:
            warnings.warn(f"{self.name}: {entry}", BadSampleWarning, stacklevel=4)
        if n == self.max_warnings:
            warnings.warn(
                f"{self.name}: further {entry.reason!r} problems are counted but not warned about; "
                "see dataset.report()",
                BadSampleWarning,
                stacklevel=4,
            )

    def entries(self, files: list[str] | None = None) -> dict[str, list[BadSample]]:
        """All problems by reason. ``files[i]`` names sample ``i`` for failures seen only in worker processes."""
        out: dict[str, list[BadSample]] = {}
        known_failed = set()
        for e in list(self._entries):
            out.setdefault(e.reason, []).append(e)
            known_failed.add((e.file, e.reason))
        if files is not None:
            for idx in torch.nonzero(self._codes[: len(files)]).flatten().tolist():
                reason = _NAMES[int(self._codes[idx])]
                if (files[idx], reason) not in known_failed:
                    out.setdefault(reason, []).append(BadSample(files[idx], reason, "seen in a worker process"))
        return out

    def report(self, files: list[str] | None = None) -> str:
        """A human-readable summary: counts per reason, then every entry."""
        entries = self.entries(files)
        if not entries:
            return f"{self.name}: no bad samples"
        total = sum(len(v) for v in entries.values())
        lines = [f"{self.name}: {total} bad-sample report(s)"]
        for reason, items in entries.items():
            lines.append(f"  {reason}: {len(items)} ({REASONS[reason]})")
            lines.extend(f"    {e.file}{f' ({e.detail})' if e.detail else ''}" for e in items)
        return "\n".join(lines)


class BadSampleMixin:
    """Dataset side of the rules above: ``bad_samples``, ``report()`` and load-with-replacement.

    Subclasses set ``self._log`` (a :class:`BadSampleLog`) and implement ``_files() -> list[str]``.
    """

    _log: BadSampleLog

    def _files(self) -> list[str]:
        raise NotImplementedError

    @property
    def bad_samples(self) -> dict[str, list[BadSample]]:
        """Every problem found so far (construction and loading, all worker processes), by reason."""
        return self._log.entries(self._files())

    def report(self) -> str:
        """A human-readable summary of :attr:`bad_samples`."""
        return self._log.report(self._files())

    def _load_replacing(self, index: int, load: Callable[[int], Any]) -> Any:
        """``load(i)`` for the first readable sample from ``index`` on (wrapping); records failures."""
        from vision.io import ImageReadError

        n = len(self)
        if not -n <= index < n:
            raise IndexError(f"index {index} out of range for a dataset of {n} samples")
        index %= n
        for step in range(n):
            i = (index + step) % n
            if self._log.failed(i):
                continue
            try:
                return load(i)
            except ImageReadError as err:
                self._log.mark_failed(i, err.path, err.reason, err.detail)
        raise RuntimeError(f"{self._log.name}: none of the {n} samples could be read; see dataset.report()")
