"""Strict registries that turn a name into a model, and the public entry points built on them.

Names carry an optional weight tag after a dot: ``resnet50`` is the architecture, ``resnet50.tv_in1k`` the
architecture with the weights of the card tagged ``tv_in1k``. ``create_model("resnet50.tv_in1k")`` is the same as
``create_model("resnet50", weights="tv_in1k")``.

Installed packages add models through the entry-point group ``vision.models``: each entry point names a module (or a
callable) that registers builders when imported (called). Plugins are discovered lazily, the first time a name is
looked up or models are listed; a plugin that fails to import produces a warning naming it, never a crash.

What a builder returns, per task: for ``classification`` any ``nn.Module`` mapping images ``[B, 3, H, W]`` to logits
``[B, K]`` (:func:`vision.create_model` gives it the zoo classifiers' ``loss``, ``predict`` and ``eval_transforms``,
so it trains, predicts and exports like ``resnet18``); a ``detection`` model needs ``loss(images, targets)`` and
``predict(images)``, a ``generation`` model ``sample(n, labels=, seed=)`` and ``loss(batch)`` (or a GAN's
``train_step``) — training refuses one without them in one line. A network meant to sit under the zoo's detection
heads is registered as a backbone (see :mod:`vision.backbones`) instead.

Example:
    >>> from vision.registry import MODELS
    >>> @MODELS.register("my_net", tags={"classification"}, task="classification")
    ... def my_net(*, num_classes: int = 10) -> nn.Module: ...
"""

from __future__ import annotations

import difflib
import fnmatch
import importlib
import pkgutil
import warnings
from collections.abc import Callable, Iterable, Iterator, Mapping
from dataclasses import dataclass, field
from importlib import metadata
from typing import Any

from vision.hub.cards import WeightsCard

__all__ = [
    "BACKBONES",
    "DATASETS",
    "MODELS",
    "NECKS",
    "TASKS",
    "Entry",
    "Registry",
    "UnknownNameError",
    "close_matches",
    "describe",
    "discover_plugins",
    "import_submodules",
    "resolve_entry",
    "split_name",
    "weights_from_name",
]

ENTRY_POINT_GROUP = "vision.models"


class UnknownNameError(KeyError):
    """An unknown registry name; the message lists close matches."""

    def __str__(self) -> str:  # KeyError quotes its argument; show the message as written
        return str(self.args[0]) if self.args else ""


@dataclass(frozen=True)
class Entry:
    """One registered builder.

    Attributes:
        name: architecture name (no weight tag).
        builder: callable returning the module; takes keyword arguments only.
        cards: weight cards by tag.
        default_tag: the tag ``weights=True`` selects.
        tags: capabilities, e.g. ``{"classification", "features"}``.
        task: ``"classification"``, ``"detection"``, ``"generation"``, ... (``None`` for parts such as necks).
        source: module that registered it (a plugin's distribution name for plugins).
    """

    name: str
    builder: Callable[..., Any]
    cards: Mapping[str, WeightsCard] = field(default_factory=dict)
    default_tag: str | None = None
    tags: frozenset[str] = frozenset()
    task: str | None = None
    source: str = ""

    def card(self, tag: str | None = None) -> WeightsCard:
        """The card for ``tag`` (default card when ``None``); ``KeyError`` naming the known tags otherwise."""
        tag = tag or self.default_tag
        if not self.cards:
            asked = f" (no tag {tag!r})" if tag is not None else ""
            raise UnknownNameError(f"{self.name} has no published weights{asked}")
        if tag is None or tag not in self.cards:
            known = ", ".join(sorted(self.cards))
            raise UnknownNameError(f"{self.name} has no weights tagged {tag!r}; known tags: {known}")
        return self.cards[tag]


def close_matches(word: str, names: Iterable[str], n: int = 5, cutoff: float = 0.6) -> list[str]:
    """The ``n`` names most similar to ``word`` (difflib ratio >= ``cutoff``), best first, ties alphabetical."""
    scored = []
    for name in set(names):
        matcher = difflib.SequenceMatcher(None, word, name)
        if matcher.real_quick_ratio() >= cutoff and matcher.quick_ratio() >= cutoff and matcher.ratio() >= cutoff:
            scored.append((-matcher.ratio(), name))
    return [name for _, name in sorted(scored)[:n]]


def describe(value: Any) -> str:
    """``value`` for an error message: short plain values as their repr, anything else (a module, whose repr runs to
    hundreds of lines) as ``"a <class name>"``."""
    if value is None or isinstance(value, bool | int | float | str):
        text = repr(value)
        return text if len(text) <= 80 else f"{text[:77]}..."
    return f"a {type(value).__name__}"


def split_name(name: str) -> tuple[str, str | None]:
    """``"resnet50.tv_in1k"`` -> ``("resnet50", "tv_in1k")``; ``"resnet50"`` -> ``("resnet50", None)``."""
    if not isinstance(name, str) or not name:
        raise TypeError(f"a model name must be a non-empty string, got {describe(name)}")
    arch, sep, tag = name.partition(".")
    return arch, (tag if sep else None)


def weights_from_name(name: str, weights: Any, *, keyword: str = "weights") -> tuple[str, Any]:
    """A name's weight tag moved to its weights argument, so that both spellings build the same model:
    ``("resnet18.tv_in1k", None)`` -> ``("resnet18", "tv_in1k")``; a name without a tag keeps ``weights``.

    Raises:
        ValueError: the name has a tag and ``weights`` selects other weights (``True`` means the tag's).
    """
    arch, tag = split_name(name)
    if tag is None:
        return arch, weights
    if weights not in (None, True):
        raise ValueError(f"{name} already selects weights {tag!r}; do not also pass {keyword}={describe(weights)}")
    return arch, tag


class Registry:
    """A strict name -> builder table of one kind (``models``, ``backbones``, ``necks``, ``datasets``, ``tasks``).

    A duplicate name raises; an unknown name raises :class:`UnknownNameError` listing close matches. A prefix
    resolver (``register_prefix("timm/", fn)``) builds entries on demand for open-ended families. ``builtin`` names
    the packages whose import registers the built-in entries; they are imported the first time the registry is read
    (by name, so that a low layer never imports a higher one and building a model never imports the data pipeline).
    ``listing`` is the command that lists the names (unknown-name errors point at it).
    """

    def __init__(self, kind: str, *, builtin: Iterable[str] = (), listing: str | None = None) -> None:
        self.kind = kind
        self.listing = listing
        self._entries: dict[str, Entry] = {}
        self._prefixes: dict[str, Callable[[str], Entry | None]] = {}
        self._prefix_names: dict[str, Callable[[], Iterable[str]]] = {}
        self._builtin = tuple(builtin)
        self._loaded = False

    def _load_builtin(self) -> None:
        if not self._loaded:
            self._loaded = True
            for module in self._builtin:
                importlib.import_module(module)

    def register(
        self,
        name: str,
        *,
        cards: Mapping[str, WeightsCard] | None = None,
        default: str | None = None,
        tags: Iterable[str] = (),
        task: str | None = None,
    ) -> Callable[[Callable[..., Any]], Callable[..., Any]]:
        """Decorator registering a builder under ``name``.

        Args:
            name: architecture name, without a dot (dots separate weight tags).
            cards: weight cards by tag.
            default: tag used by ``weights=True`` (default: the first card).
            tags: capabilities such as ``"classification"`` and ``"features"``.
            task: the task the built module solves.
        """

        def decorator(builder: Callable[..., Any]) -> Callable[..., Any]:
            self.add(
                Entry(
                    name=name,
                    builder=builder,
                    cards=dict(cards or {}),
                    default_tag=default if default is not None else next(iter(cards or {}), None),
                    tags=frozenset(tags),
                    task=task,
                    source=getattr(builder, "__module__", ""),
                )
            )
            return builder

        return decorator

    def add(self, entry: Entry) -> None:
        """Register a ready :class:`Entry`."""
        if "." in entry.name or not entry.name:
            raise ValueError(f"{self.kind} name {entry.name!r} must be non-empty and contain no '.' (dots tag weights)")
        if entry.name in self._entries:
            previous = self._entries[entry.name].source
            raise ValueError(
                f"{self.kind} {entry.name!r} is already registered (by {previous}); pick another name or unregister it"
            )
        if entry.default_tag is not None and entry.default_tag not in entry.cards:
            raise ValueError(f"{self.kind} {entry.name!r}: default tag {entry.default_tag!r} has no card")
        self._entries[entry.name] = entry

    def unregister(self, name: str) -> None:
        """Remove a name (for tests and plugins that replace a builder deliberately)."""
        self._entries.pop(name, None)

    def register_prefix(
        self,
        prefix: str,
        resolver: Callable[[str], Entry | None],
        *,
        names: Callable[[], Iterable[str]] | None = None,
    ) -> None:
        """Resolve names starting with ``prefix`` on demand (``resolver(name) -> Entry | None``); ``names()``, if
        given, lists the family's names (prefix included) for the close matches of an unknown one."""
        self._prefixes[prefix] = resolver
        if names is not None:
            self._prefix_names[prefix] = names

    def prefixes(self) -> tuple[str, ...]:
        return tuple(self._prefixes)

    def __contains__(self, name: object) -> bool:
        if not isinstance(name, str):
            return False
        try:
            self.get(name)
        except UnknownNameError:
            return False
        return True

    def __iter__(self) -> Iterator[str]:
        self._load_builtin()
        discover_plugins()
        return iter(sorted(self._entries))

    def __len__(self) -> int:
        self._load_builtin()
        discover_plugins()
        return len(self._entries)

    def entries(self) -> list[Entry]:
        self._load_builtin()
        discover_plugins()
        return [self._entries[k] for k in sorted(self._entries)]

    def get(self, name: str) -> Entry:
        """The entry for an architecture name (a weight tag after a dot is ignored)."""
        arch, _ = split_name(name)
        self._load_builtin()
        entry = self._lookup(arch)
        if entry is None:
            discover_plugins()
            entry = self._lookup(arch)
        if entry is None:
            raise UnknownNameError(self.unknown_message(arch))
        return entry

    def _lookup(self, arch: str) -> Entry | None:
        if arch in self._entries:
            return self._entries[arch]
        for prefix, resolver in self._prefixes.items():
            if arch.startswith(prefix):
                entry = resolver(arch)
                if entry is not None:
                    return entry
        return None

    def unknown_message(self, arch: str, extra: Iterable[str] = ()) -> str:
        """The error text for an unknown name: close matches, and where the known names are listed.

        ``extra``: names that are valid beside this registry's own (``create_model`` also accepts classifying
        backbones); they count among the names the listing command shows.
        """
        noun = self.kind[:-1] if self.kind.endswith("s") else self.kind
        prefix = next((p for p in self._prefixes if arch.startswith(p)), None)
        if prefix is not None:  # an open-ended family (timm/): its own names, its own listing
            family = prefix.rstrip("/")
            lister = self._prefix_names.get(prefix)
            close = close_matches(arch, lister()) if lister is not None else []
            hint = f" Did you mean: {', '.join(close)}?" if close else ""
            return (
                f"unknown {noun} {arch!r}: {family} has no model {arch[len(prefix) :]!r}.{hint} "
                f"`vision list '{prefix}*'` lists {family}'s models."
            )
        names = sorted({*self._entries, *extra})
        close = close_matches(arch, names)
        hint = f" Did you mean: {', '.join(close)}?" if close else ""
        prefixes = f" Names starting with {', '.join(self._prefixes)} are also accepted." if self._prefixes else ""
        if self.listing is not None:
            where = f"`{self.listing}` shows the {len(names)} {self.kind}."
        else:
            where = f"Known {self.kind}: {', '.join(names)}." if len(names) <= 12 else f"{len(names)} are registered."
        return f"unknown {noun} {arch!r}.{hint}{prefixes} {where}"

    def build(self, name: str, **kwargs: Any) -> Any:
        """Call the builder of ``name`` with ``kwargs``."""
        return self.get(name).builder(**kwargs)

    def names(self, pattern: str = "*") -> list[str]:
        self._load_builtin()
        discover_plugins()
        return sorted(n for n in self._entries if fnmatch.fnmatchcase(n, pattern))


BACKBONES = Registry("backbones", builtin=("vision.backbones",), listing="vision list --capability features")
NECKS = Registry("necks", builtin=("vision.necks",))
MODELS = Registry("models", builtin=("vision.backbones", "vision.necks", "vision.models"), listing="vision list")
DATASETS = Registry("datasets", builtin=("vision.data",))
#: training tasks: each entry's builder is the task class (see :class:`vision.engine.task.Task`)
TASKS = Registry("tasks", builtin=("vision.tasks",))

_plugins_state: dict[str, Any] = {"done": False, "loaded": {}, "failed": {}}


def _entry_points() -> list[metadata.EntryPoint]:
    return list(metadata.entry_points(group=ENTRY_POINT_GROUP))


def discover_plugins(*, force: bool = False) -> dict[str, str]:
    """Import the ``vision.models`` entry points of installed packages (once), returning ``{name: status}``.

    A plugin that raises is skipped with a ``RuntimeWarning`` naming the entry point, its distribution and the error.
    """
    if _plugins_state["done"] and not force:
        return {**_plugins_state["loaded"], **_plugins_state["failed"]}
    _plugins_state["done"] = True
    for ep in _entry_points():
        label = ep.name
        dist = getattr(getattr(ep, "dist", None), "name", None)
        if label in _plugins_state["loaded"] and not force:
            continue
        try:
            obj = ep.load()
            if callable(obj) and not isinstance(obj, type(importlib)):
                obj()
            _plugins_state["loaded"][label] = "ok"
            _plugins_state["failed"].pop(label, None)
        except Exception as err:  # a broken third-party package must not break vision
            _plugins_state["failed"][label] = f"failed: {type(err).__name__}: {err}"
            warnings.warn(
                f"vision plugin {label!r} (entry point {ep.value!r}"
                f"{f' of distribution {dist!r}' if dist else ''}) failed to load and was skipped: "
                f"{type(err).__name__}: {err}",
                RuntimeWarning,
                stacklevel=2,
            )
    return {**_plugins_state["loaded"], **_plugins_state["failed"]}


def _ensure_builtin() -> None:
    """Import the built-in model families so that they register themselves (not the data pipeline, not tasks)."""
    MODELS._load_builtin()
    BACKBONES._load_builtin()


def import_submodules(package: str, path: Iterable[str]) -> None:
    """Import every public module and subpackage below ``package`` (names starting with ``_`` are skipped), so
    that each registers its builders: a new family is a new file or folder, nothing else to edit.

    Call it from the package's ``__init__``: ``import_submodules(__name__, __path__)``.
    """
    for info in pkgutil.walk_packages(list(path), prefix=f"{package}."):
        if not any(part.startswith("_") for part in info.name[len(package) + 1 :].split(".")):
            importlib.import_module(info.name)


def all_entries() -> list[tuple[str, Entry]]:
    """Every model-like entry: ``MODELS`` plus backbones that can classify, as ``(registry kind, entry)``."""
    _ensure_builtin()
    out = [("models", e) for e in MODELS.entries()]
    out += [("backbones", e) for e in BACKBONES.entries() if e.name not in MODELS._entries]
    return out


def resolve_entry(name: str) -> Entry:
    """The registry entry behind a model name: ``MODELS`` first, then classification-capable ``BACKBONES``."""
    _ensure_builtin()
    arch, _ = split_name(name)
    for registry in (MODELS, BACKBONES):
        try:
            entry = registry.get(arch)
        except UnknownNameError:
            continue
        if registry is MODELS or "classification" in entry.tags:
            return entry
    if any(arch.startswith(p) for p in BACKBONES.prefixes()):  # timm/<name>: timm's names, not ours
        raise UnknownNameError(BACKBONES.unknown_message(arch))
    names = [e.name for _, e in all_entries()]
    raise UnknownNameError(MODELS.unknown_message(arch, extra=[n for n in names if n not in MODELS._entries]))
