"""The public entry points: ``create_model``, ``create_backbone``, ``list_models``, ``get_card``, ``load_weights``."""

from __future__ import annotations

import fnmatch
import os
import re
from pathlib import Path
from typing import Any

from torch import nn

from vision.hub.adapt import LoadReport, load_into
from vision.hub.cards import WeightsCard
from vision.hub.download import download, load_state_dict_file
from vision.registry import BACKBONES, Entry, all_entries, resolve_entry, split_name

__all__ = ["create_backbone", "create_model", "get_card", "list_models", "load_weights", "resolve_entry"]

WeightsArg = bool | str | os.PathLike[str] | None


def _is_url(value: str) -> bool:
    return bool(re.match(r"^(https?|file)://", value))


def _hash_from_filename(url: str) -> str | None:
    """The SHA-256 prefix that torchvision's convention puts at the end of a file name (``resnet18-f37072fd.pth`` ->
    ``"f37072fd"``), or ``None``.

    Only a suffix that can plausibly be one counts: 8-64 lower-case hex digits, and when they are all decimal digits
    (``efficientnet-lite0-57934424.pth`` is a real one) neither a zero-padded counter (``ckpt-00050000.pt``) nor
    starting with a date (``r18-20240101.pth``, ``-20240101120000``).
    """
    m = re.search(r"-([0-9a-f]{8,64})\.[A-Za-z]+$", url.split("?", 1)[0].split("#", 1)[0])
    if m is None:
        return None
    digits = m[1]
    if not digits.isdigit():
        return digits
    year, month, day = int(digits[:4]), int(digits[4:6]), int(digits[6:8])
    is_date = 1900 <= year <= 2199 and 1 <= month <= 12 and 1 <= day <= 31
    return None if digits.startswith("0") or is_date else digits


def _download_url(url: str, *, progress: bool | None = None) -> Path:
    """The cached copy of ``url``'s file (see :func:`vision.hub.download.download`), checked against the hash its file
    name carries by torchvision's convention (:func:`_hash_from_filename`), if any; a mismatch says where that hash
    came from."""
    expected = _hash_from_filename(url)
    origin = f"the -{expected} suffix of the file name, torchvision's convention" if expected else None
    return download(url, sha256=expected, sha256_from=origin, progress=progress)


def _resolve_weights(entry: Entry, tag: str | None, weights: WeightsArg) -> tuple[WeightsCard | None, Any]:
    """Return ``(card, source)``: ``source`` is ``None``, a card, a URL or a local path."""
    if tag is not None:
        if weights not in (None, True):
            raise ValueError(f"name {entry.name}.{tag} already selects weights; do not also pass weights={weights!r}")
        weights = tag
    if weights is None or weights is False:
        return None, None
    if weights is True:
        if "self-weights" in entry.tags:
            return None, True
        if entry.default_tag is None:
            raise ValueError(f"{entry.name} has no published weights; pass weights=<path or url>")
        card = entry.card()
        return card, card
    if isinstance(weights, os.PathLike):
        return None, Path(weights)
    if isinstance(weights, str):
        if weights in entry.cards:
            card = entry.cards[weights]
            return card, card
        if "self-weights" in entry.tags and not _is_url(weights) and not os.path.exists(weights):
            return None, weights  # a timm pretrained tag
        if _is_url(weights):
            return None, weights
        if os.path.exists(weights):
            return None, Path(weights)
        known = ", ".join(sorted(entry.cards)) or "none"
        raise FileNotFoundError(
            f"weights={weights!r} for {entry.name} is neither a weight tag ({known}), a URL, nor an existing file"
        )
    raise TypeError(f"weights must be None, True, a tag, a path or a URL; got {type(weights).__name__}")


def _head_prefixes(model: nn.Module) -> tuple[str, ...]:
    family = getattr(model, "family", None)
    if family is not None:
        return tuple(family.classifier)
    return tuple(getattr(model, "classifier_prefixes", ()))


def load_weights(
    model: nn.Module,
    weights: str | os.PathLike[str] | WeightsCard,
    *,
    strict: bool = True,
    layout: str = "auto",
    progress: bool | None = None,
) -> LoadReport:
    """Load weights into ``model`` from a card, a URL (downloaded and verified) or a local file.

    Foreign layouts (lukemelas EfficientNet, timm, DDP/``torch.compile`` prefixes) are converted; a classifier of
    another size is dropped with a warning (and ``model.new_head_prefixes`` names that new head); other
    missing/unexpected keys raise (``strict=True``) naming them.

    Example:
        >>> model = vision.create_model("efficientnet_lite0")
        >>> vision.load_weights(model, "efficientnet-lite0-57934424.pth")   # lukemelas layout, adapted
    """
    source = str(weights)
    if isinstance(weights, WeightsCard):
        card = weights
        path = _packaged_file(card) or download(
            card.url, sha256=card.sha256, filename=card.cache_name, progress=progress
        )
        layout = card.layout if layout == "auto" and card.layout != "native" else layout
        source = f"{card.url} ({path})"
    elif isinstance(weights, str) and _is_url(weights):
        path = _download_url(weights, progress=progress)
        source = f"{weights} ({path})"
    else:
        path = Path(weights)
    state = load_state_dict_file(path)
    adapt = getattr(model, "adapt_checkpoint", None)  # a model whose keys differ from its checkpoints' (timm features)
    if callable(adapt):
        state = adapt(state)
    heads = _head_prefixes(model)
    report = load_into(
        model,
        state,
        layout=layout,
        strict=strict,
        head_prefixes=heads,
        ignore_prefixes=tuple(f"{p}." for p in getattr(model, "pruned", ())),
        source=source,
    )
    if report.dropped_head:  # pretrained body, newly initialised head: training reads this (fine-tuning defaults)
        new = [h.rstrip(".") for h in heads if any(k.startswith(h) for k in report.dropped_head)]
        model.new_head_prefixes = tuple(new)
    return report


def _packaged_file(card: WeightsCard) -> Path | None:
    """The copy of the card's file inside an installed package, verified, or ``None`` when not installed."""
    if not card.package_file:
        return None
    import importlib.util

    from vision.hub.download import ChecksumError, sha256_file

    module, _, relative = card.package_file.partition(":")
    spec = importlib.util.find_spec(module)
    if spec is None or not spec.submodule_search_locations:
        return None
    path = Path(next(iter(spec.submodule_search_locations))) / relative
    if not path.is_file():
        return None
    if card.sha256 and not sha256_file(path).startswith(card.sha256):
        raise ChecksumError(f"SHA-256 mismatch for {path} (packaged copy of {card.url}); reinstall {module}")
    return path


def _takes_weights(entry: Entry) -> bool:
    """Whether the builder takes torchvision's ``weights`` argument (and then configures and loads itself)."""
    import inspect

    try:
        return "weights" in inspect.signature(entry.builder).parameters
    except (TypeError, ValueError):  # builtins / C callables without a signature
        return False


def _build(entry: Entry, *, features: bool, card: WeightsCard | None, source: Any, **kwargs: Any) -> nn.Module:
    if features:
        kwargs["features"] = True
    layout = "auto"
    if card is None and isinstance(source, Path):
        card = _known_card(entry, source)  # a local copy of a published file: built exactly as for its tag
        if card is not None and card.layout != "native":
            layout = card.layout
    if card is not None:
        kwargs["card"] = card
    if source is True or (isinstance(source, str) and "self-weights" in entry.tags and not _is_url(source)):
        kwargs["pretrained"] = source
        source = None
    if isinstance(source, Path | str) and _takes_weights(entry):
        # torchvision-style builders (the R-CNNs) build for loaded weights as torchvision does for pretrained ones
        # (frozen BatchNorm, trainable_backbone_layers=3) and load the file themselves
        kwargs["weights"] = str(source)
        source = None
    try:
        model = entry.builder(**kwargs)
    except TypeError as err:  # a keyword the builder (or the class it forwards to) does not take: the caller's mistake
        bad = re.search(r"unexpected keyword argument '(\w+)'", str(err))
        if bad is None or bad.group(1) not in kwargs:
            raise
        # what refused it: "YOLO.__init__() got an unexpected keyword argument 'x'" -> "YOLO.__init__"
        caller = re.search(r"([\w.]+)\(\) got an unexpected keyword argument", str(err))
        where = caller.group(1) if caller else entry.name
        raise ValueError(f"{entry.name} takes no argument {bad.group(1)!r} (model_kwargs.{bad.group(1)}=): {where} "
                         "has no such parameter") from err  # fmt: skip
    if entry.task == "classification" and not features and isinstance(model, nn.Module):
        from vision.backbones.classifier import adopt_classifier

        model = adopt_classifier(model, num_classes=kwargs.get("num_classes"))  # a plugin's plain logits network
    if source is not None and source is not True:
        load_weights(model, source, layout=layout)
    if card is not None and getattr(model, "card", "absent") is None:
        _attach_card(model, card)
    return model


def _known_card(entry: Entry, path: Path) -> WeightsCard | None:
    """The card of the published weight file that ``path`` is a copy of (same SHA-256), or ``None``."""
    if not any(c.sha256 for c in entry.cards.values()):
        return None
    from vision.hub.download import sha256_file

    digest = sha256_file(path)
    return next((c for c in entry.cards.values() if c.sha256 and digest.startswith(c.sha256)), None)


def _attach_card(model: nn.Module, card: WeightsCard) -> None:
    """Give a model its card when the builder did not keep it: class names in the data-set label space."""
    from vision.models.detection.common import label_offset

    model.card = card
    offset = label_offset(model)  # detectors with a background slot: the card names it, the data-set labels do not
    if hasattr(model, "categories") and card.categories and card.num_classes == getattr(model, "num_classes", 0):
        model.categories = list(card.categories[offset:])


def create_model(name: str, *, weights: WeightsArg = None, num_classes: int | None = None, **kwargs: Any) -> nn.Module:
    """Build a registered model by name.

    Args:
        name: registry name, optionally with a weight tag: ``"resnet50"``, ``"resnet50.tv2_in1k"``,
            ``"timm/convnext_tiny"``.
        weights: ``None`` (random init), ``True`` (the default card), a tag, a local path or a URL.
        num_classes: classifier size; with pretrained weights of another size the classifier is re-initialised.
        kwargs: builder arguments (see ``vision info NAME``).

    Returns:
        The model in training mode. Classifiers map ``[B, 3, H, W]`` normalised images to ``[B, num_classes]``
        logits; ``model.eval_transforms()`` gives the matching preprocessing.

    Example:
        >>> model = vision.create_model("resnet50", weights=True, num_classes=10)
    """
    arch, tag = split_name(name)
    entry = resolve_entry(arch)
    card, source = _resolve_weights(entry, tag, weights)
    if num_classes is not None:
        kwargs["num_classes"] = num_classes
    return _build(entry, features=False, card=card, source=source, **kwargs)


def create_backbone(
    name: str,
    *,
    weights: WeightsArg = None,
    out_indices: tuple[int, ...] | list[int] | None = None,
    frozen_stages: int = 0,
    norm: str = "bn",
    **kwargs: Any,
) -> nn.Module:
    """Build a backbone returning named multi-scale features.

    Args:
        name: backbone name (``"resnet50"``, ``"efficientnet_b0.tv_in1k"``, ``"timm/convnext_tiny"``).
        weights: as for :func:`create_model`; classification weights load with their head ignored.
        out_indices: stages to return (default: all); negative indices count from the deepest.
        frozen_stages: number of leading stages (the stem included in the first) whose parameters are frozen and
            whose norms stay in eval mode.
        norm: ``"bn"`` or ``"frozen_bn"`` (every BatchNorm replaced by a frozen one, as detectors do).

    Returns:
        A module with ``forward(x [B, 3, H, W]) -> dict[str, Tensor]`` and ``specs``, ``channels``, ``strides``,
        ``size_divisibility``, ``feature_info``, ``card``.
    """
    from vision.registry import _ensure_builtin

    _ensure_builtin()
    arch, tag = split_name(name)
    entry = BACKBONES.get(arch)
    if "features" not in entry.tags:
        raise ValueError(f"{arch} cannot return features; see `vision list` for backbones")
    card, source = _resolve_weights(entry, tag, weights)
    return _build(
        entry,
        features=True,
        card=card,
        source=source,
        out_indices=out_indices,
        frozen_stages=frozen_stages,
        norm=norm,
        **kwargs,
    )


def get_card(name: str) -> WeightsCard:
    """The weight card of ``"arch.tag"`` (or the default card of ``"arch"``)."""
    arch, tag = split_name(name)
    return resolve_entry(arch).card(tag)


def list_models(
    pattern: str = "*",
    *,
    task: str | None = None,
    pretrained: bool = False,
    capability: str | None = None,
) -> list[str]:
    """Registered model names matching the fnmatch ``pattern``.

    Args:
        pattern: e.g. ``"resnet*"``; a pattern starting with ``timm/`` lists timm architectures.
        task: keep models of this task (``"classification"``, ``"detection"``, ``"generation"``).
        pretrained: list ``arch.tag`` names, one per published weight file, instead of architectures.
        capability: keep entries with this tag (``"features"``, ``"classification"``, ...).

    A ``timm/`` name is filtered like any registered one, by the entry the registry makes for it: task
    ``"classification"`` and the tags ``classification``, ``features``, ``timm`` and ``self-weights``. ``features``
    means :func:`create_backbone` takes the name (timm's ``features_only`` extraction, which nearly every timm
    architecture supports; timm itself refuses the few that do not when the backbone is built). So
    ``list_models("timm/resnet18*", task="detection")`` is empty.

    Example:
        >>> vision.list_models("resnet1*", capability="features")  # ["resnet101", "resnet152", "resnet18"]
        >>> vision.list_models("timm/resnet18*", task="classification")  # ["timm/resnet18", "timm/resnet18d"]
    """
    if pattern.startswith("timm/"):
        return _list_timm(pattern, task=task, pretrained=pretrained, capability=capability)
    names: list[str] = []
    for _, entry in all_entries():
        if not _keeps(entry, task=task, capability=capability):
            continue
        if pretrained:
            names += [
                f"{entry.name}.{t}"
                for t in entry.cards
                if fnmatch.fnmatchcase(f"{entry.name}.{t}", pattern) or fnmatch.fnmatchcase(entry.name, pattern)
            ]
        elif fnmatch.fnmatchcase(entry.name, pattern):
            names.append(entry.name)
    return sorted(set(names))


def _keeps(entry: Entry, *, task: str | None, capability: str | None) -> bool:
    """Whether ``entry`` passes :func:`list_models`' ``task`` and ``capability`` filters."""
    return (task is None or entry.task == task) and (capability is None or capability in entry.tags)


def _list_timm(pattern: str, *, task: str | None, pretrained: bool, capability: str | None) -> list[str]:
    """:func:`list_models` for a ``timm/`` pattern: timm's names (``timm/arch`` or ``timm/arch.tag``), each kept when
    the registry entry of its architecture passes the ``task`` and ``capability`` filters."""
    import timm

    names = sorted("timm/" + n for n in timm.list_models(pattern[len("timm/") :], pretrained=pretrained))
    if task is None and capability is None:
        return names
    from vision.registry import _ensure_builtin

    _ensure_builtin()
    return [n for n in names if _keeps(BACKBONES.get(split_name(n)[0]), task=task, capability=capability)]
