"""Command-line tools: argument parsing and the ``vision``, ``train`` and ``infer`` entry points."""

from vision.utils.keys import ArgumentError, parse_overrides

__all__ = ["ArgumentError", "parse_overrides"]
