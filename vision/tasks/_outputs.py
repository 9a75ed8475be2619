"""What ``tools/infer.py`` writes, for every task: one run folder, no output overwriting another, unreadable images
of a folder skipped.

- :class:`RunOutputs`: all outputs of one source share one base name, ``<stem>``; when one of them is already taken
  in the run (the same stem in another folder of a glob, or beside it with another extension; compared without case)
  the source gets ``<stem>_2``, ``<stem>_3`` ..., the first free, in source order.
- :func:`run_folder`: the auto-incremented run folder, removed again when the run fails before writing a file.
- :func:`read_images` / :func:`count_skipped`: with several sources an unreadable image is skipped with one
  ``warning: <path>: <reason>; skipped`` line and counted at the end (warnings go to stderr, results to stdout); a
  run with no readable image is an error.
"""

from __future__ import annotations

import contextlib
import shutil
import sys
from collections.abc import Iterator, Sequence
from pathlib import Path
from typing import Any, Literal

from vision.utils.files import increment_dir

__all__ = ["RunOutputs", "count_skipped", "read_images", "run_folder"]


class RunOutputs:
    """The names taken by one run's outputs, so that none overwrites another (module docstring)."""

    def __init__(self, *reserved: str) -> None:
        self._taken = {name.casefold() for name in reserved}

    def claim(self, stem: str, *patterns: str) -> str:
        """The first of ``stem``, ``stem_2``, ``stem_3`` ... for which no name ``pattern.format(base)`` (relative to
        the run folder, e.g. ``"{}.png"``, ``"labels/{}.json"``) is taken yet; those names are taken from now on."""
        index = 1
        while True:
            base = stem if index == 1 else f"{stem}_{index}"
            names = {pattern.format(base).casefold() for pattern in patterns}
            if not names & self._taken:
                self._taken |= names
                return base
            index += 1


@contextlib.contextmanager
def run_folder(root: Path, name: str) -> Iterator[Path]:
    """The run folder ``root/name`` (auto-incremented, :func:`~vision.utils.increment_dir`) for the ``with`` body; when
    the body fails before any file is written in it, the folder and the parents made for it are removed again."""
    made = [p for p in (root, *root.parents) if not p.exists()]  # innermost first
    out = increment_dir(root, name)
    try:
        yield out
    except BaseException:
        if not any(p.is_file() for p in out.rglob("*")):
            shutil.rmtree(out, ignore_errors=True)
            for folder in made:
                with contextlib.suppress(OSError):
                    folder.rmdir()  # only while empty
        raise


def read_images(
    files: Sequence[Path], skipped: list[Path], *, skip: bool, layout: Literal["chw", "hwc"] = "chw"
) -> list[tuple[Path, Any]]:
    """``(path, image)`` for each readable file (:func:`vision.io.read_image`: ``uint8 [3, H, W]`` tensor, or ``uint8
    [H, W, 3]`` array for ``layout="hwc"``). An unreadable one (:class:`~vision.io.ImageReadError`) raises unless
    ``skip``; then it is added to ``skipped`` and named in one ``warning: <path>: <reason>; skipped`` line."""
    from vision.io import ImageReadError, read_image

    out = []
    for path in files:
        try:
            out.append((path, read_image(path, layout=layout)))
        except ImageReadError as err:
            if not skip:
                raise
            print(f"warning: {err}; skipped", file=sys.stderr, flush=True)
            skipped.append(path)
    return out


def count_skipped(source: Any, skipped: Sequence[Path], total: int) -> None:
    """At the end of a run over ``total`` files: one line counting the unreadable images skipped, or an ``OSError``
    naming ``source`` when none of its files was readable."""
    if not skipped:
        return
    if len(skipped) >= total:
        raise OSError(f"source {str(source)!r}: none of its {total} files is readable (each is named above)")
    print(f"warning: {len(skipped)} of {total} files skipped: not readable (named above)", file=sys.stderr, flush=True)
