"""Small pieces shared by the command-line tools: devices, run folders, printing."""

from __future__ import annotations

import json
import os
import re
import sys
from pathlib import Path
from typing import Any

import torch
import yaml

__all__ = ["fail", "increment_dir", "pick_device", "save_json", "save_yaml"]


def pick_device(spec: str | None) -> torch.device:
    """``"auto"``/``""`` -> CUDA when available else CPU; otherwise ``torch.device(spec)`` checked to exist."""
    if spec in (None, "", "auto"):
        return torch.device("cuda" if torch.cuda.is_available() else "cpu")
    try:
        device = torch.device(str(spec))
    except RuntimeError as err:
        raise ValueError(f"device={spec!r} is not a device (use auto, cpu, cuda or cuda:N)") from err
    if device.type == "cuda" and not torch.cuda.is_available():
        raise ValueError(f"device={spec!r} asked for CUDA but no CUDA device is available")
    if device.type == "cuda" and device.index is not None and device.index >= torch.cuda.device_count():
        raise ValueError(f"device={spec!r}: only {torch.cuda.device_count()} CUDA device(s) present")
    return device


def increment_dir(root: str | os.PathLike[str], name: str, *, exist_ok: bool = False) -> Path:
    """``root/name``, or ``root/name2``, ``root/name3`` ... the first that does not exist yet (created)."""
    base = Path(root)
    if not re.fullmatch(r"[\w.-]+", name):
        raise ValueError(f"run name {name!r} may only contain letters, digits, '_', '-' and '.'")
    path = base / name
    if exist_ok:
        path.mkdir(parents=True, exist_ok=True)
        return path
    index = 1
    while True:
        try:
            path.mkdir(parents=True, exist_ok=False)
            return path
        except FileExistsError:
            index += 1
            path = base / f"{name}{index}"


def save_yaml(path: str | os.PathLike[str], data: Any) -> Path:
    """Write ``data`` as YAML atomically."""
    p = Path(path)
    tmp = p.with_name(p.name + ".tmp")
    tmp.write_text(yaml.safe_dump(data, sort_keys=False), encoding="utf-8")
    os.replace(tmp, p)
    return p


def save_json(path: str | os.PathLike[str], data: Any) -> Path:
    """Write ``data`` as JSON atomically (``path.tmp``, then rename), creating the parent folder."""
    p = Path(path)
    p.parent.mkdir(parents=True, exist_ok=True)
    tmp = p.with_name(p.name + ".tmp")
    tmp.write_text(json.dumps(data), encoding="utf-8")
    os.replace(tmp, p)
    return p


def fail(message: str, code: int = 2) -> None:
    """Print ``error: message`` to stderr and exit with ``code``."""
    print(f"error: {message}", file=sys.stderr)
    raise SystemExit(code)
