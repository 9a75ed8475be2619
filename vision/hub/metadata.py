"""Metadata stored in the header of a safetensors weights file (model name, class names, preprocessing ...)."""

from __future__ import annotations

import json
import os
from typing import Any

__all__ = ["read_safetensors_metadata"]


def read_safetensors_metadata(path: str | os.PathLike[str]) -> dict[str, Any]:
    """The JSON-decoded metadata of a safetensors file written by :func:`save_weights`."""
    from safetensors import safe_open

    with safe_open(str(path), framework="pt") as f:
        raw = f.metadata() or {}
    out: dict[str, Any] = {}
    for key, value in raw.items():
        try:
            out[key] = json.loads(value)
        except json.JSONDecodeError:
            out[key] = value
    return out
