"""``key=value`` argument parsing shared by the tools.

Every tool declares its keys with defaults (a possibly nested dict). ``parse_overrides`` turns
``["epochs=3", "optim.lr=0.1", "device=cpu"]`` into a resolved dict: values are read as YAML scalars/lists
(``true``, ``3``, ``0.1``, ``[1, 2]``), dotted keys address nested sections, and an unknown key fails with a
"did you mean" suggestion instead of being ignored.
"""

from __future__ import annotations

import copy
import difflib
import math
import operator
from collections.abc import Iterable, Mapping
from typing import Any

import yaml

__all__ = [
    "ArgumentError",
    "Rule",
    "auto_or_flag",
    "check_keys",
    "check_section",
    "flag",
    "flatten",
    "get_dotted",
    "integer",
    "integer_or_names",
    "merge",
    "number",
    "one_of",
    "parse_overrides",
    "parse_value",
    "positive_integer",
    "set_dotted",
]


class ArgumentError(ValueError):
    """A bad ``key=value`` argument; the message names the key and how to fix it."""


def get_dotted(tree: Mapping[str, Any], key: str, default: Any = None) -> Any:
    """The value at the dotted ``key`` (``"synthetic.val"``) of the nested ``tree``, ``default`` where there is none."""
    *parents, last = key.split(".")
    for part in parents:
        if not isinstance(tree.get(part), Mapping):
            return default
        tree = tree[part]
    return tree.get(last, default)


def set_dotted(tree: dict[str, Any], key: str, value: Any) -> None:
    """Set the dotted ``key`` of the nested ``tree`` to ``value``, making (or replacing non-dict) parents as dicts."""
    *parents, last = key.split(".")
    for part in parents:
        if not isinstance(tree.get(part), dict):
            tree[part] = {}
        tree = tree[part]
    tree[last] = value


def positive_integer(key: str, value: Any, meaning: str = "") -> int:
    """``value`` as an ``int`` >= 1 (Python or NumPy integers; not bools); else ``ValueError``
    ``"{key}={value!r} must be a positive integer ({meaning})"``, for a function's keyword arguments."""
    try:
        number = None if isinstance(value, bool) else operator.index(value)
    except TypeError:
        number = None
    if number is None or number < 1:
        raise ValueError(f"{key}={value!r} must be a positive integer" + (f" ({meaning})" if meaning else ""))
    return number


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


def override_key(arg: str) -> str:
    """The key of a ``key=value`` argument as :func:`parse_overrides` reads it: stripped, leading dashes dropped,
    inner dashes as underscores (``--calibration-batches=2`` -> ``calibration_batches``)."""
    return arg.split("=", 1)[0].strip().lstrip("-").replace("-", "_")


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
        key, text = override_key(arg), arg.split("=", 1)[1]
        if key not in known and not key.startswith(opened) and key not in open_sections:
            if key in sections:
                raise ArgumentError(f"{key!r} is a section; set one of its keys, e.g. {key}.<name>=value")
            raise ArgumentError(_unknown(key, known))
        default = known.get(key)
        try:
            value = parse_value(text, default)
        except ArgumentError:
            raise ArgumentError(f"{key}={text} is not allowed: {key} must be true or false") from None
        set_dotted(result, key, value)
    return result


# ------------------------------------------------------------------------------------------------ declared key types
_TRUE = ("true", "yes", "on", "1")
_FALSE = ("false", "no", "off", "0")


class Rule:
    """The declared type and range of one key; :meth:`check` returns the value converted, or raises
    :class:`ArgumentError` naming the key, the value and what is allowed.

    Build rules with :func:`integer`, :func:`number`, :func:`flag`, :func:`one_of`, :func:`auto_or_flag` and
    :func:`auto_or_integer`.
    """

    def __init__(self, kind: str, allowed: str, *, lo: float | None = None, hi: float | None = None,
                 lo_open: bool = False, choices: tuple[str, ...] = ()) -> None:  # fmt: skip
        self.kind, self.allowed, self.lo, self.hi, self.lo_open, self.choices = kind, allowed, lo, hi, lo_open, choices

    def _refuse(self, key: str, value: Any) -> ArgumentError:
        shown = value if isinstance(value, str) else yaml.safe_dump(value, default_flow_style=True).strip()
        shown = shown.removesuffix("\n...").strip()
        return ArgumentError(f"{key}={shown} is not allowed: {key} must be {self.allowed}")

    def _in_range(self, v: float) -> bool:
        if self.lo is not None and (v < self.lo or (self.lo_open and v == self.lo)):
            return False
        return self.hi is None or v <= self.hi

    def check(self, key: str, value: Any) -> Any:
        """``value`` converted to the key's type (``"3"`` -> 3, ``"1e-3"`` -> 0.001, ``"true"`` -> True)."""
        if self.kind == "int_or_names":
            names = value if isinstance(value, list) else [value]
            if value != [] and all(isinstance(n, str) and n and not n.strip().lstrip("-").isdigit() for n in names):
                return value
            return Rule("int", self.allowed, lo=self.lo).check(key, value)
        if self.kind == "auto_int":
            if isinstance(value, str) and value.strip().lower() == "auto":
                return "auto"
            return Rule("int", self.allowed, lo=self.lo).check(key, value)
        if self.kind == "int":
            out: Any = value
            if isinstance(value, str):
                try:
                    out = int(value.strip())
                except ValueError:
                    raise self._refuse(key, value) from None
            if isinstance(out, float) and out.is_integer():
                out = int(out)
            if isinstance(out, bool) or not isinstance(out, int) or not self._in_range(out):
                raise self._refuse(key, value)
            return out
        if self.kind == "float":
            try:
                out = float(value) if not isinstance(value, bool) else None
            except (TypeError, ValueError):
                out = None
            if out is None or not math.isfinite(out) or not self._in_range(out):
                raise self._refuse(key, value)
            return out
        if self.kind in ("flag", "auto_flag"):
            if isinstance(value, bool):
                return value
            text = str(value).strip().lower()
            if self.kind == "auto_flag" and text == "auto":
                return "auto"
            if text in _TRUE or text in _FALSE:
                return text in _TRUE
            raise self._refuse(key, value)
        if self.kind == "choice":
            text = "false" if value is False else str(value).strip().lower()  # YAML reads a bare `off` as false
            if text == "false" and "off" in self.choices:
                text = "off"
            if text not in self.choices:
                raise self._refuse(key, value)
            return text
        return value


def integer(lo: int | None = 1, hi: int | None = None) -> Rule:
    """An integer in ``[lo, hi]`` (``1.5`` and ``abc`` are refused, ``2.0`` is 2)."""
    where = f" >= {lo}" if hi is None and lo is not None else (f" in [{lo}, {hi}]" if lo is not None else "")
    return Rule("int", f"an integer{where}", lo=lo, hi=hi)


def integer_or_names(lo: int = 0) -> Rule:
    """An integer ``>= lo`` or one or more names (e.g. ``freeze=2`` or ``freeze=[backbone.stem]``)."""
    return Rule("int_or_names", f"an integer >= {lo} or a list of names", lo=lo)


def number(lo: float | None = None, hi: float | None = None, *, lo_open: bool = False) -> Rule:
    """A finite number in ``[lo, hi]`` (``(lo, hi]`` with ``lo_open``); ``nan`` and ``inf`` are refused."""
    if lo is not None and hi is not None:
        where = f" in {'(' if lo_open else '['}{lo}, {hi}]"
    elif lo is not None:
        where = f" {'>' if lo_open else '>='} {lo}"
    else:
        where = ""
    return Rule("float", f"a finite number{where}", lo=lo, hi=hi, lo_open=lo_open)


def flag() -> Rule:
    """``true`` or ``false``."""
    return Rule("flag", "true or false")


def auto_or_flag() -> Rule:
    """``auto``, ``true`` or ``false``."""
    return Rule("auto_flag", "auto, true or false")


def auto_or_integer(lo: int = 1) -> Rule:
    """``auto`` or an integer ``>= lo``."""
    return Rule("auto_int", f"auto or an integer >= {lo}", lo=lo)


def one_of(*choices: str) -> Rule:
    """One of the given words (case-insensitive)."""
    return Rule("choice", f"one of {', '.join(choices)}", choices=tuple(choices))


def check_section(section: str, given: Iterable[str], accepted: Iterable[str], *, reserved: Iterable[str] = ()) -> None:
    """Refuse keys of a ``section.<key>=`` group (e.g. ``augment``) that its consumer does not take.

    Args:
        section: the section's name, as the user writes it.
        given: the keys the user (or the recipe) set.
        accepted: the keys the consumer takes (e.g. a function's keyword arguments).
        reserved: accepted keys the program sets itself (refused as well, e.g. ``size`` set from ``imgsz``).

    Raises:
        ArgumentError: one line naming the unknown key, close matches and the valid keys.
    """
    reserved = set(reserved)
    valid = [k for k in accepted if k not in reserved]
    for key in given:
        if key not in valid:
            raise ArgumentError(_unknown(f"{section}.{key}", [f"{section}.{k}" for k in valid]))


def rule_from_default(default: Any) -> Rule | None:
    """The type a key's default implies, for keys without a declared rule (strings and lists: none)."""
    if isinstance(default, bool):
        return flag()
    if isinstance(default, int):
        return integer(lo=None)
    if isinstance(default, float):
        return number()
    return None


def check_keys(
    args: Mapping[str, Any],
    schema: Mapping[str, Rule],
    defaults: Mapping[str, Any] = {},
    *,
    only: Iterable[str] | None = None,
) -> dict:
    """Check every key of ``args`` (or the dotted keys in ``only``: those a user gave) against its declared rule
    (``schema``, else the type of its default in ``defaults``) and return a copy with the values converted.

    Raises:
        ArgumentError: one line naming the first bad key, its value and what it allows, e.g.
            ``epochs=0 is not allowed: epochs must be an integer >= 1``.
    """
    out = copy.deepcopy(dict(args))
    known = flatten(defaults)
    chosen = None if only is None else set(only)
    for key, value in flatten(args).items():
        if chosen is not None and key not in chosen:
            continue
        rule = schema.get(key) or rule_from_default(known.get(key))
        if rule is None or (value is None and known.get(key) is None):  # an optional key left unset
            continue
        set_dotted(out, key, rule.check(key, value))
    return out
