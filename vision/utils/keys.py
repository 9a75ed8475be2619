"""``key=value`` argument parsing shared by the tools.

Every tool declares its keys with defaults (a possibly nested dict). ``parse_overrides`` turns
``["epochs=3", "optim.lr=0.1", "device=cpu"]`` into a resolved dict: values are read as YAML scalars/lists
(``true``, ``3``, ``0.1``, ``[1, 2]``), dotted keys address nested sections, and an unknown key fails with a
"did you mean" suggestion instead of being ignored.
"""

from __future__ import annotations

import copy
import difflib
from collections.abc import Iterable, Mapping
from typing import Any

import yaml

__all__ = ["ArgumentError", "flatten", "merge", "parse_overrides", "parse_value"]


class ArgumentError(ValueError):
    """A bad ``key=value`` argument; the message names the key and how to fix it."""


def parse_value(text: str, default: Any = None) -> Any:
    """Read one value: YAML for numbers, booleans, lists and null; strings stay strings where a string is expected."""
    if isinstance(default, str) and not text.strip().startswith(("[", "{")):
        return text
    try:
        value = yaml.safe_load(text) if text != "" else ""
    except yaml.YAMLError:
        return text
    if isinstance(default, bool) and not isinstance(value, bool):
        raise ArgumentError(f"expected true/false, got {text!r}")
    if isinstance(default, float) and isinstance(value, int) and not isinstance(value, bool):
        value = float(value)
    if isinstance(default, int) and not isinstance(default, bool) and isinstance(value, float) and value.is_integer():
        value = int(value)
    return value


def flatten(tree: Mapping[str, Any], prefix: str = "") -> dict[str, Any]:
    """``{"optim": {"lr": 0.1}}`` -> ``{"optim.lr": 0.1}``."""
    out: dict[str, Any] = {}
    for key, value in tree.items():
        name = f"{prefix}{key}"
        if isinstance(value, Mapping) and value:
            out.update(flatten(value, name + "."))
        else:
            out[name] = value
    return out


def merge(
    base: Mapping[str, Any], update: Mapping[str, Any], *, strict: bool = True, where: str = ""
) -> dict[str, Any]:
    """Deep-merge ``update`` into a copy of ``base``; with ``strict`` an unknown key raises :class:`ArgumentError`."""
    out = copy.deepcopy(dict(base))
    for key, value in update.items():
        if strict and key not in out:
            raise ArgumentError(_unknown(f"{where}{key}", [f"{where}{k}" for k in out]))
        if isinstance(out.get(key), Mapping) and isinstance(value, Mapping) and out.get(key):
            out[key] = merge(out[key], value, strict=strict, where=f"{where}{key}.")
        else:
            out[key] = copy.deepcopy(value)
    return out


def _unknown(key: str, known: Iterable[str]) -> str:
    known = sorted(known)
    close = difflib.get_close_matches(key, known, n=3, cutoff=0.5)
    hint = f" Did you mean {' or '.join(repr(c) for c in close)}?" if close else ""
    return f"unknown key {key!r}.{hint} Known keys: {', '.join(known)}"


def parse_overrides(
    argv: Iterable[str], defaults: Mapping[str, Any], *, open_sections: Iterable[str] = ()
) -> dict[str, Any]:
    """Apply ``key=value`` arguments to ``defaults`` and return the resolved (nested) dict.

    Args:
        argv: arguments such as ``["epochs=3", "optim.lr=0.1"]``.
        defaults: the declared keys and their defaults (nested dicts for sections).
        open_sections: dotted sections that accept any sub-key (e.g. ``"model_kwargs"``), passed through as is.

    Raises:
        ArgumentError: an argument is not ``key=value``, its key is unknown (with a suggestion), or its value does
            not fit the key's type.
    """
    result = copy.deepcopy(dict(defaults))
    known = flatten(defaults)
    sections = {k.rsplit(".", 1)[0] for k in known if "." in k} | set(open_sections)
    opened = tuple(f"{s}." for s in open_sections)
    for arg in argv:
        if "=" not in arg or arg.startswith("="):
            raise ArgumentError(f"argument {arg!r} is not of the form key=value")
        key, text = arg.split("=", 1)
        key = key.strip().lstrip("-").replace("-", "_")
        if key not in known and not key.startswith(opened) and key not in open_sections:
            if key in sections:
                raise ArgumentError(f"{key!r} is a section; set one of its keys, e.g. {key}.<name>=value")
            raise ArgumentError(_unknown(key, known))
        default = known.get(key)
        try:
            value = parse_value(text, default)
        except ArgumentError as err:
            raise ArgumentError(f"{key}: {err}") from None
        node = result
        parts = key.split(".")
        for part in parts[:-1]:
            if not isinstance(node.get(part), dict):
                node[part] = {}
            node = node[part]
        node[parts[-1]] = value
    return result
