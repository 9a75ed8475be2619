"""Run folders and atomic writes of JSON and YAML (write ``path.tmp``, then rename: a reader never sees half a file)."""

from __future__ import annotations

import json
import os
import re
from pathlib import Path
from typing import Any

import yaml

__all__ = ["increment_dir", "save_json", "save_yaml"]


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
