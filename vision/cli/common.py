"""What the command-line front ends share: one ``error:`` line for a user's mistake."""

from __future__ import annotations

import sys

__all__ = ["fail"]


def fail(message: str, code: int = 2) -> None:
    """Print ``error: message`` to stderr and exit with ``code``."""
    print(f"error: {message}", file=sys.stderr)
    raise SystemExit(code)
