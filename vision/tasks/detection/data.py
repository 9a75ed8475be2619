"""Data of the detection task: ``data=`` is a registered dataset name (``synthetic``, ``bccd`` or a plugin's) or a
data YAML of COCO-format splits (``train: {images: DIR, annotations: JSON}``, ``val: ...``, optional ``path:``)."""

from __future__ import annotations

from collections.abc import Mapping, Sequence
from pathlib import Path
from typing import Any

__all__ = ["SYNTHETIC_KEYS", "load_data_spec"]

#: the ``synthetic:`` section of the detection task's keys (arguments of :func:`vision.data.synthetic.synthetic`)
SYNTHETIC_KEYS = {"train": 512, "val": 128, "size": 256, "seed": 0, "max_objects": 6}


def load_data_spec(data: str | Mapping[str, Any]) -> dict[str, tuple[Path, Path]]:
    """``{"train": (images_dir, ann_json), "val": (...)}`` from a data YAML path or mapping (see the module doc)."""
    import yaml

    if isinstance(data, Mapping):
        spec, base = dict(data), Path.cwd()
    else:
        path = Path(data)
        if not path.is_file():
            raise FileNotFoundError(f"data={data!r} is neither 'synthetic', 'bccd' nor a data YAML file")
        spec = yaml.safe_load(path.read_text(encoding="utf-8")) or {}
        if not isinstance(spec, Mapping):
            raise ValueError(f"{path}: a data YAML must be a mapping with train/val entries")
        base = path.resolve().parent
    root = Path(spec["path"]) if spec.get("path") else base
    if not root.is_absolute():
        root = base / root
    out: dict[str, tuple[Path, Path]] = {}
    for split in ("train", "val"):
        entry = spec.get(split)
        if entry is None:
            continue
        if isinstance(entry, Mapping):
            images, ann = entry.get("images"), entry.get("annotations")
        elif isinstance(entry, Sequence) and not isinstance(entry, str) and len(entry) == 2:
            images, ann = entry
        else:
            raise ValueError(f"data {split}: expected {{images: DIR, annotations: JSON}} or [DIR, JSON], got {entry!r}")
        if not images or not ann:
            raise ValueError(f"data {split}: both 'images' and 'annotations' are required, got {entry!r}")
        out[split] = (root / str(images), root / str(ann))
    if "train" not in out:
        raise ValueError("the data spec has no 'train' split")
    return out
