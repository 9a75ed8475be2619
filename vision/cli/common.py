"""What the command-line front ends share: one ``error:`` line for a user's mistake, exit status 2."""

from __future__ import annotations

import sys
import warnings
from collections.abc import Sequence
from pathlib import Path
from typing import Any, NoReturn

from vision.data._bad import BadSampleWarning, DataError, DataSummaryWarning
from vision.engine.checkpoint import CheckpointError
from vision.hub._download_errors import DownloadError
from vision.hub.adapt import WeightsMismatchError
from vision.io import ImageReadError
from vision.utils.keys import ArgumentError

__all__ = [
    "INTERRUPTED",
    "USER_ERRORS",
    "check_onnx_model_key",
    "command_line",
    "fail",
    "interrupted",
    "one_line_warnings",
    "user_message",
    "wants_help",
]

#: the exceptions that mean a user's mistake or a missing/bad resource (never a bug): one ``error:`` line, exit 2.
#: ``KeyError`` covers unknown registry names; ``OSError`` unreadable paths; ``DownloadError`` unreachable weights.
USER_ERRORS: tuple[type[BaseException], ...] = (
    ArgumentError,
    DataError,
    CheckpointError,
    WeightsMismatchError,
    DownloadError,
    ImageReadError,
    FileNotFoundError,
    NotADirectoryError,
    PermissionError,
    ValueError,
    KeyError,
)


def check_onnx_model_key(model: str, weights: str, onnx_model: Any) -> None:
    """Refuse ``model=`` next to an exported ``.onnx`` file unless it names the file's own network: the file carries
    its network (``onnx_model.metadata["model"]``), so any other name would be ignored without a word."""
    own = str((getattr(onnx_model, "metadata", None) or {}).get("model", "") or "")
    if model and model != own:
        held = f" (a {own})" if own else ""
        raise ArgumentError(
            f"model={model} does not apply to weights={weights}: an exported file carries its own network{held}; "
            "leave model= out"
        )


def user_message(err: BaseException) -> str:
    """The one-line message of ``err`` (a ``KeyError``'s quotes removed, later lines folded into the first)."""
    text = err.args[0] if isinstance(err, KeyError) and len(err.args) == 1 else err
    return " ".join(str(text).split("\n")).strip() or type(err).__name__


def fail(message: str, code: int = 2) -> NoReturn:
    """Print ``error: message`` to stderr and exit with ``code``."""
    print(f"error: {message}", file=sys.stderr)
    raise SystemExit(code)


#: the exit status of a command stopped by Ctrl-C (128 + SIGINT, as a shell reports it)
INTERRUPTED = 130


def interrupted(message: str = "interrupted") -> NoReturn:
    """End a command stopped by Ctrl-C: ``message`` as one line on stderr (no traceback), exit status 130."""
    print(message, file=sys.stderr, flush=True)
    raise SystemExit(INTERRUPTED)


def _quiet_interrupt(kind: type[BaseException], value: BaseException, tb: Any) -> None:
    """``sys.excepthook`` of the front ends: a Ctrl-C that no front end caught ends with one ``interrupted`` line
    (the interpreter still exits as stopped by SIGINT, status 130); any other exception as usual."""
    if issubclass(kind, KeyboardInterrupt):
        print("interrupted", file=sys.stderr, flush=True)
        return
    _EXCEPTHOOK(kind, value, tb)


_EXCEPTHOOK = sys.excepthook


def wants_help(argv: Sequence[str]) -> bool:
    """Whether a command line asks for help (``-h``, ``--help`` or ``help`` anywhere)."""
    return any(a in ("-h", "--help", "help") for a in argv)


def _one_line(message: Any, category: type[Warning], filename: str, lineno: int, line: str | None = None) -> str:
    """``warnings.formatwarning`` of the front ends: a warning vision raises (bad samples, data summaries, downloads,
    plugins) as one ``warning: ...`` line, without the Python file, line number and source line; others as usual."""
    if str(filename).startswith(_PACKAGE) or issubclass(category, (BadSampleWarning, DataSummaryWarning)):
        return f"warning: {message}\n"
    return _FORMAT(message, category, filename, lineno, line)


_PACKAGE = str(Path(__file__).resolve().parent.parent)
_FORMAT = warnings.formatwarning


def one_line_warnings() -> None:
    """Print vision's own warnings as one ``warning: ...`` line each (:func:`_one_line`), and a Ctrl-C as one
    ``interrupted`` line instead of a traceback (:func:`_quiet_interrupt`); every front end calls it."""
    warnings.formatwarning = _one_line
    sys.excepthook = _quiet_interrupt


def command_line(argv: Sequence[str] | None, doc: str | None) -> list[str] | None:
    """A front end's arguments (``sys.argv[1:]`` when ``argv`` is None), or ``None`` after printing ``doc`` when the
    command line asks for help (the caller then returns 0). vision's own warnings print as one ``warning:`` line from
    here on (:func:`one_line_warnings`)."""
    one_line_warnings()
    args = list(sys.argv[1:] if argv is None else argv)
    if wants_help(args):
        print(doc)
        return None
    return args
