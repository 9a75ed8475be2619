"""Data of the detection task: ``data=`` is a registered dataset name (``synthetic``, ``bccd`` or a plugin's) or a
data YAML of COCO-format splits (``train: {images: DIR, annotations: JSON}``, ``val: ...``, optional ``path:``).
Relative paths are relative to ``path:`` when given, and ``path:`` (or, without it, each path) to the YAML's folder;
``~`` is expanded. Class names come from the JSON's ``categories``.

The spec is strict: a key it does not know (``valid:``, ``names:``, ``imgs:`` ...) is refused with a suggestion rather
than ignored, as a misspelt ``val`` would silently train without validation."""

from __future__ import annotations

from collections.abc import Iterable, Mapping, Sequence
from pathlib import Path
from typing import Any

from vision.data._bad import DataError
from vision.registry import close_matches

__all__ = ["SPEC_KEYS", "SPLIT_KEYS", "SYNTHETIC_KEYS", "load_data_spec"]

#: the ``synthetic:`` section of the detection task's keys (arguments of :func:`vision.data.synthetic.synthetic`)
SYNTHETIC_KEYS = {"train": 512, "val": 128, "size": 256, "seed": 0, "max_objects": 6}
#: the keys of a data spec, and of one of its splits written as a mapping
SPEC_KEYS = ("path", "train", "val")
SPLIT_KEYS = ("images", "annotations")
_ALIASES = {"valid": "val", "validation": "val", "training": "train", "root": "path", "imgs": "images",
            "image": "images", "ann": "annotations", "anns": "annotations", "annotation": "annotations",
            "json": "annotations", "labels": "annotations"}  # fmt: skip


def _refuse_unknown(where: str, given: Iterable[Any], known: Sequence[str]) -> None:
    for key in given:
        if key in known:
            continue
        close = [_ALIASES[key]] if _ALIASES.get(key) in known else close_matches(str(key), known, n=1)
        hint = f" (did you mean {close[0]!r}?)" if close else ""
        if key in ("names", "nc") and "train" in known:  # ultralytics' YAML keys
            hint = " (class names and their number come from the COCO JSON's 'categories')"
        raise DataError(f"{where}: unknown key {key!r}{hint}; known keys: {', '.join(known)}")


def _read_yaml(path: Path) -> Any:
    """The YAML document at ``path``; a syntax error raises one :class:`DataError` with its line and column."""
    import yaml

    try:
        return yaml.safe_load(path.read_text(encoding="utf-8"))
    except UnicodeDecodeError as err:
        raise DataError(f"{path}: not valid YAML: not UTF-8 text ({err.reason} at byte {err.start})") from err
    except yaml.MarkedYAMLError as err:
        mark, context = err.problem_mark or err.context_mark, err.context_mark
        where = f" (line {mark.line + 1}, column {mark.column + 1})" if mark is not None else ""
        problem = str(err.problem or err.context or type(err).__name__)
        if err.problem and err.context:  # e.g. "while parsing a flow mapping" and where that began
            problem += f" ({err.context}" + (f" from line {context.line + 1})" if context is not None else ")")
        raise DataError(f"{path}: not valid YAML{where}: {problem}") from err
    except yaml.YAMLError as err:
        raise DataError(f"{path}: not valid YAML: {' '.join(str(err).split())}") from err


def load_data_spec(data: str | Mapping[str, Any]) -> dict[str, tuple[Path, Path]]:
    """``{"train": (images_dir, ann_json), "val": (...)}`` from a data YAML path or mapping (see the module doc).

    Raises:
        FileNotFoundError: ``data`` is neither a mapping nor an existing file.
        DataError: the YAML is malformed, has an unknown key, lacks ``train``, or names a folder as annotations (or a
            file as images); the message names the file (``data`` for a mapping) and the key.
    """
    if isinstance(data, Mapping):
        spec, base, where = dict(data), Path.cwd(), "data"
    else:
        path = Path(data).expanduser()
        if path.is_dir():
            raise FileNotFoundError(
                f"data={data!r} is a folder; detection takes a data YAML that names each split's images and COCO JSON "
                "(train: {images: DIR, annotations: JSON}, val: {...}; paths relative to the YAML's folder), or "
                "'synthetic', 'bccd'"
            )
        if not path.is_file():
            raise FileNotFoundError(f"data={data!r} is neither 'synthetic', 'bccd' nor a data YAML file")
        spec, base, where = _read_yaml(path) or {}, path.resolve().parent, str(path)
        if not isinstance(spec, Mapping):
            raise DataError(f"{path}: a data YAML must be a mapping with train/val entries")
        if {"images", "annotations"} <= set(spec):  # a COCO annotation file given where the spec belongs
            raise DataError(
                f"{path} is a COCO annotation file; data= takes a data YAML that names it with its image folder "
                f"(train: {{images: DIR, annotations: {path.name}}}, val: ...)"
            )
    _refuse_unknown(where, spec, SPEC_KEYS)
    if spec.get("path") is not None and not isinstance(spec["path"], str):
        raise DataError(f"{where}: 'path' must be a folder name, got {spec['path']!r}")
    root = Path(spec["path"]).expanduser() if spec.get("path") else base
    if not root.is_absolute():
        root = base / root
    out: dict[str, tuple[Path, Path]] = {}
    for split in ("train", "val"):
        entry = spec.get(split)
        if entry is None:
            continue
        if isinstance(entry, Mapping):
            _refuse_unknown(f"{where}: {split}", entry, SPLIT_KEYS)
            images, ann = entry.get("images"), entry.get("annotations")
        elif isinstance(entry, Sequence) and not isinstance(entry, str) and len(entry) == 2:
            images, ann = entry
        else:
            raise DataError(f"data {split}: expected {{images: DIR, annotations: JSON}} or [DIR, JSON], got {entry!r}")
        if not images or not ann:
            raise DataError(f"data {split}: both 'images' and 'annotations' are required, got {entry!r}")
        out[split] = (root / Path(str(images)).expanduser(), root / Path(str(ann)).expanduser())
        if out[split][1].is_dir():
            raise DataError(f"data {split} annotations '{out[split][1]}' is a folder, not a COCO JSON file")
        if out[split][0].is_file():
            raise DataError(f"data {split} images '{out[split][0]}' is a file, not a folder of images")
    if "train" not in out:
        raise DataError(f"{where}: the data spec has no 'train' split")
    return out
