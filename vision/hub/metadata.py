"""Metadata stored in the header of a safetensors weights file (model name, class names, preprocessing ...)."""

from __future__ import annotations

import json
import os
from typing import Any

__all__ = ["read_safetensors_metadata"]


def read_safetensors_metadata(path: str | os.PathLike[str]) -> dict[str, Any]:
    """The JSON-decoded metadata of a safetensors file written by :func:`save_weights`.

    Raises:
        WeightsFileError: the file is not a readable safetensors file (truncated, corrupt, another format).
    """
    from safetensors import SafetensorError, safe_open

    from vision.hub.download import WeightsFileError

    try:
        with safe_open(str(path), framework="pt") as f:
            raw = f.metadata() or {}
    except (SafetensorError, OSError, ValueError) as err:
        raise WeightsFileError(f"{path} is not a valid safetensors file (truncated or corrupt?): {err}") from err
    out: dict[str, Any] = {}
    for key, value in raw.items():
        try:
            out[key] = json.loads(value)
        except json.JSONDecodeError:
            out[key] = value
    return out
