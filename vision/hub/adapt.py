"""Key adapters: load checkpoints written in another library's key layout.

Supported conversions (detected automatically from the keys, or forced with ``layout=``):

- wrapper prefixes: ``module.`` (DDP), ``_orig_mod.`` (``torch.compile``), and a prefix the target model uses for
  its own wrapped module (``model.`` / ``body.``), added or removed;
- EfficientNet between three layouts: lukemelas ``efficientnet_pytorch`` (``_blocks.N._expand_conv``), timm
  (``blocks.S.J.conv_pw``) and torchvision (``features.S.J.block.K``), through one canonical block description;
- VGG from timm (``pre_logits.fc1`` as a 7x7 convolution, ``head.fc``) to torchvision (``classifier.0/3/6``).

ResNet, ResNeXt, Wide ResNet and Inception v3 share their key names between timm and torchvision and need no
conversion. After conversion :func:`match_state_dict` drops a classifier whose shape differs from the model's (a new
``num_classes``) with a warning, and reports missing and unexpected keys.
"""

from __future__ import annotations

import re
import warnings
from collections.abc import Callable, Iterable, Mapping
from dataclasses import dataclass, field

import torch
from torch import nn

__all__ = ["LoadReport", "WeightsMismatchError", "adapt_state_dict", "load_into", "match_state_dict"]


class WeightsMismatchError(RuntimeError):
    """A weights file does not fit the model (another architecture): the message names the file and the keys."""


StateDict = dict[str, torch.Tensor]


@dataclass
class LoadReport:
    """What happened when a state dict was loaded into a model."""

    layout: str = "native"
    missing: list[str] = field(default_factory=list)
    unexpected: list[str] = field(default_factory=list)
    dropped_head: list[str] = field(default_factory=list)
    mismatched: list[str] = field(default_factory=list)

    @property
    def ok(self) -> bool:
        return not (self.missing or self.unexpected or self.mismatched)

    def __str__(self) -> str:
        parts = [f"layout={self.layout}"]
        for label, keys in (
            ("missing", self.missing),
            ("unexpected", self.unexpected),
            ("shape mismatch", self.mismatched),
            ("dropped classifier", self.dropped_head),
        ):
            if keys:
                shown = ", ".join(keys[:8]) + (f", ... ({len(keys)} in all)" if len(keys) > 8 else "")
                parts.append(f"{label}: {shown}")
        return "; ".join(parts)


# --------------------------------------------------------------------------------------------------------------------
# Prefixes


def _strip_prefix(state: StateDict, prefix: str) -> StateDict:
    if state and all(k.startswith(prefix) for k in state):
        return {k[len(prefix) :]: v for k, v in state.items()}
    return state


def _reconcile_prefix(state: StateDict, target: Iterable[str]) -> StateDict:
    """Add or remove one leading component so that the checkpoint's keys meet the target's."""
    target = set(target)
    if not state or not target or set(state) & target:
        return state
    first_src = {k.split(".", 1)[0] for k in state}
    first_tgt = {k.split(".", 1)[0] for k in target}
    if len(first_tgt) == 1:
        (prefix,) = first_tgt
        added = {f"{prefix}.{k}": v for k, v in state.items()}
        if set(added) & target:
            return added
    if len(first_src) == 1:
        (prefix,) = first_src
        removed = _strip_prefix(state, prefix + ".")
        if set(removed) & target:
            return removed
    return state


# --------------------------------------------------------------------------------------------------------------------
# EfficientNet: lukemelas <-> canonical <-> timm / torchvision
#
# Canonical names: "stem.conv|bn", "head.conv|bn", "fc", and per block i (in network order)
# "b{i}.expand.conv|bn", "b{i}.dw.conv|bn", "b{i}.se.reduce|expand", "b{i}.project.conv|bn".

_LUKE_BLOCK = {
    "_expand_conv": "expand.conv",
    "_bn0": "expand.bn",
    "_depthwise_conv": "dw.conv",
    "_bn1": "dw.bn",
    "_se_reduce": "se.reduce",
    "_se_expand": "se.expand",
    "_project_conv": "project.conv",
    "_bn2": "project.bn",
}
_LUKE_TOP = {"_conv_stem": "stem.conv", "_bn0": "stem.bn", "_conv_head": "head.conv", "_bn1": "head.bn", "_fc": "fc"}

_TIMM_DS = {"conv_dw": "dw.conv", "bn1": "dw.bn", "conv_pw": "project.conv", "bn2": "project.bn"}
_TIMM_IR = {
    "conv_pw": "expand.conv",
    "bn1": "expand.bn",
    "conv_dw": "dw.conv",
    "bn2": "dw.bn",
    "conv_pwl": "project.conv",
    "bn3": "project.bn",
}
_TIMM_SE = {"se.conv_reduce": "se.reduce", "se.conv_expand": "se.expand"}
_TIMM_TOP = {"conv_stem": "stem.conv", "bn1": "stem.bn", "conv_head": "head.conv", "bn2": "head.bn", "classifier": "fc"}


def _split_param(key: str) -> tuple[str, str]:
    module, _, param = key.rpartition(".")
    return module, param


def _blocks_of(keys: Iterable[str], pattern: str) -> list[tuple[int, int]]:
    found = {(int(m[1]), int(m[2])) for k in keys if (m := re.match(pattern, k))}
    return sorted(found)


def _luke_to_canonical(state: StateDict) -> StateDict:
    out: StateDict = {}
    for key, value in state.items():
        m = re.match(r"_blocks\.(\d+)\.(\w+)\.(\w+)$", key)
        if m:
            out[f"b{int(m[1])}.{_LUKE_BLOCK[m[2]]}.{m[3]}"] = value
            continue
        module, param = _split_param(key)
        out[f"{_LUKE_TOP[module]}.{param}"] = value
    return out


def _canonical_to_luke(state: StateDict, target: Iterable[str]) -> StateDict:
    inv_block = {v: k for k, v in _LUKE_BLOCK.items()}
    inv_top = {v: k for k, v in _LUKE_TOP.items()}
    out: StateDict = {}
    for key, value in state.items():
        module, param = _split_param(key)
        m = re.match(r"b(\d+)\.(.+)$", module)
        out[f"_blocks.{m[1]}.{inv_block[m[2]]}.{param}" if m else f"{inv_top[module]}.{param}"] = value
    return out


def _timm_to_canonical(state: StateDict) -> StateDict:
    blocks = _blocks_of(state, r"blocks\.(\d+)\.(\d+)\.")
    index = {sj: i for i, sj in enumerate(blocks)}
    out: StateDict = {}
    for key, value in state.items():
        module, param = _split_param(key)
        m = re.match(r"blocks\.(\d+)\.(\d+)\.(.+)$", module)
        if m:
            s, j, sub = int(m[1]), int(m[2]), m[3]
            ds = f"blocks.{s}.{j}.conv_pwl.weight" not in state
            name = _TIMM_SE.get(sub) or (_TIMM_DS if ds else _TIMM_IR)[sub]
            out[f"b{index[(s, j)]}.{name}.{param}"] = value
        else:
            out[f"{_TIMM_TOP[module]}.{param}"] = value
    return out


def _canonical_to_timm(state: StateDict, target: Iterable[str]) -> StateDict:
    target = set(target)
    blocks = _blocks_of(target, r"blocks\.(\d+)\.(\d+)\.")
    inv_top = {v: k for k, v in _TIMM_TOP.items()}
    inv_se = {v: k for k, v in _TIMM_SE.items()}
    out: StateDict = {}
    for key, value in state.items():
        module, param = _split_param(key)
        m = re.match(r"b(\d+)\.(.+)$", module)
        if not m:
            out[f"{inv_top[module]}.{param}"] = value
            continue
        i, sub = int(m[1]), m[2]
        if i >= len(blocks):
            raise KeyError(f"checkpoint has block {i}, the model only {len(blocks)} blocks")
        s, j = blocks[i]
        ds = f"blocks.{s}.{j}.conv_pwl.weight" not in target
        table = {v: k for k, v in (_TIMM_DS if ds else _TIMM_IR).items()}
        out[f"blocks.{s}.{j}.{inv_se.get(sub) or table[sub]}.{param}"] = value
    return out


def _tv_head_index(keys: Iterable[str]) -> int:
    return max(int(m[1]) for k in keys if (m := re.match(r"features\.(\d+)\.", k)))


def _tv_block_subs(expanded: bool) -> dict[str, str]:
    if expanded:
        return {
            "0.0": "expand.conv",
            "0.1": "expand.bn",
            "1.0": "dw.conv",
            "1.1": "dw.bn",
            "2.fc1": "se.reduce",
            "2.fc2": "se.expand",
            "3.0": "project.conv",
            "3.1": "project.bn",
        }
    return {
        "0.0": "dw.conv",
        "0.1": "dw.bn",
        "1.fc1": "se.reduce",
        "1.fc2": "se.expand",
        "2.0": "project.conv",
        "2.1": "project.bn",
    }


def _tv_expanded(keys: set[str], s: int, j: int) -> bool:
    return any(k.startswith(f"features.{s}.{j}.block.3.") for k in keys)


def _tv_to_canonical(state: StateDict) -> StateDict:
    keys = set(state)
    blocks = _blocks_of(keys, r"features\.(\d+)\.(\d+)\.block\.")
    index = {sj: i for i, sj in enumerate(blocks)}
    head = _tv_head_index(keys)
    out: StateDict = {}
    for key, value in state.items():
        module, param = _split_param(key)
        if m := re.match(r"features\.(\d+)\.(\d+)\.block\.(.+)$", module):
            s, j = int(m[1]), int(m[2])
            out[f"b{index[(s, j)]}.{_tv_block_subs(_tv_expanded(keys, s, j))[m[3]]}.{param}"] = value
        elif m := re.match(r"features\.(\d+)\.([01])$", module):
            part = "stem" if int(m[1]) == 0 else "head" if int(m[1]) == head else None
            if part is None:
                raise KeyError(f"unexpected torchvision EfficientNet key {key}")
            out[f"{part}.{'conv' if m[2] == '0' else 'bn'}.{param}"] = value
        elif module == "classifier.1":
            out[f"fc.{param}"] = value
        else:
            raise KeyError(f"unexpected torchvision EfficientNet key {key}")
    return out


def _canonical_to_tv(state: StateDict, target: Iterable[str]) -> StateDict:
    keys = set(target)
    blocks = _blocks_of(keys, r"features\.(\d+)\.(\d+)\.block\.")
    head = _tv_head_index(keys)
    out: StateDict = {}
    for key, value in state.items():
        module, param = _split_param(key)
        if m := re.match(r"b(\d+)\.(.+)$", module):
            i = int(m[1])
            if i >= len(blocks):
                raise KeyError(f"checkpoint has block {i}, the model only {len(blocks)} blocks")
            s, j = blocks[i]
            inv = {v: k for k, v in _tv_block_subs(_tv_expanded(keys, s, j)).items()}
            out[f"features.{s}.{j}.block.{inv[m[2]]}.{param}"] = value
        elif module == "fc":
            out[f"classifier.1.{param}"] = value
        else:
            part, kind = module.split(".")
            out[f"features.{0 if part == 'stem' else head}.{0 if kind == 'conv' else 1}.{param}"] = value
    return out


_EFFNET_LAYOUTS: dict[str, tuple[Callable[[StateDict], bool], Callable, Callable]] = {
    "lukemelas": (lambda k: "_conv_stem.weight" in k, _luke_to_canonical, _canonical_to_luke),
    "timm": (
        lambda k: "conv_stem.weight" in k and any(x.startswith("blocks.") for x in k),
        _timm_to_canonical,
        _canonical_to_timm,
    ),
    "torchvision": (
        lambda k: "features.0.0.weight" in k and any(".block." in x for x in k),
        _tv_to_canonical,
        _canonical_to_tv,
    ),
}


def _effnet_layout(keys: Iterable[str]) -> str | None:
    keys = set(keys)
    for name, (detect, _, _) in _EFFNET_LAYOUTS.items():
        if detect(keys):
            return name
    return None


# --------------------------------------------------------------------------------------------------------------------
# VGG: timm -> torchvision


def _timm_vgg_to_tv(state: StateDict, target: Mapping[str, torch.Tensor]) -> StateDict:
    out: StateDict = {}
    for key, value in state.items():
        if key.startswith("features."):
            out[key] = value
        elif key.startswith("pre_logits.fc1."):
            param = key.rsplit(".", 1)[1]
            out[f"classifier.0.{param}"] = value.flatten(1) if param == "weight" else value
        elif key.startswith("pre_logits.fc2."):
            param = key.rsplit(".", 1)[1]
            out[f"classifier.3.{param}"] = value.flatten(1) if param == "weight" else value
        elif key.startswith("head.fc."):
            out[f"classifier.6.{key.rsplit('.', 1)[1]}"] = value
        else:
            out[key] = value
    return out


# --------------------------------------------------------------------------------------------------------------------


def adapt_state_dict(
    state: Mapping[str, torch.Tensor], target: Mapping[str, torch.Tensor], *, layout: str = "auto"
) -> tuple[StateDict, str]:
    """Rename a checkpoint's keys to the target state dict's layout.

    Args:
        state: the checkpoint's state dict.
        target: the model's own ``state_dict()`` (only keys and shapes are read).
        layout: ``"auto"`` to detect, or the source layout: ``"native"``, ``"lukemelas"``, ``"timm"``,
            ``"torchvision"``.

    Returns:
        ``(converted state dict, detected source layout)``.
    """
    out = dict(state)
    for wrapper in ("module.", "_orig_mod."):
        out = _strip_prefix(out, wrapper)
    tkeys = set(target)
    if layout in ("auto", "native") and set(out) <= tkeys:
        return out, "native"
    out = _reconcile_prefix(out, tkeys)
    if layout in ("auto", "native") and set(out) <= tkeys:
        return out, "native"

    # A checkpoint for a wrapped model (e.g. ``body.``): convert on the inner keys, then put the prefix back.
    inner_prefix = ""
    firsts = {k.split(".", 1)[0] for k in tkeys}
    if len(firsts) == 1 and not any(k.startswith(next(iter(firsts)) + ".") for k in out):
        inner_prefix = next(iter(firsts)) + "."
        tkeys_inner = {k[len(inner_prefix) :] for k in tkeys}
    else:
        tkeys_inner = tkeys

    src = _effnet_layout(out) if layout == "auto" else layout
    dst = _effnet_layout(tkeys_inner)
    converted: StateDict | None = None
    if src in _EFFNET_LAYOUTS and dst in _EFFNET_LAYOUTS and src != dst:
        canonical = _EFFNET_LAYOUTS[src][1](out)
        converted = _EFFNET_LAYOUTS[dst][2](canonical, tkeys_inner)
    elif (layout in ("auto", "timm")) and "pre_logits.fc1.weight" in out and "classifier.0.weight" in tkeys_inner:
        converted, src = _timm_vgg_to_tv(out, target), "timm"
    if converted is None:
        return out, "native" if layout == "auto" else layout
    if inner_prefix:
        converted = {inner_prefix + k: v for k, v in converted.items()}
    return converted, str(src)


def match_state_dict(
    state: Mapping[str, torch.Tensor],
    target: Mapping[str, torch.Tensor],
    *,
    head_prefixes: Iterable[str] = (),
    ignore_prefixes: Iterable[str] = (),
) -> tuple[StateDict, LoadReport]:
    """Keep the checkpoint entries that fit the target; drop a resized classifier; list what does not fit.

    Args:
        state: checkpoint (already in the target's layout).
        target: the model's ``state_dict()``.
        head_prefixes: key prefixes of the classifier; entries there with another shape are dropped with a warning
            (the model keeps its freshly initialised classifier).
        ignore_prefixes: checkpoint key prefixes to drop silently (e.g. a classifier a headless backbone lacks).
    """
    head_prefixes = tuple(head_prefixes)
    ignore_prefixes = tuple(ignore_prefixes)
    report = LoadReport()
    kept: StateDict = {}
    for key, value in state.items():
        if key not in target:
            if key.endswith("num_batches_tracked") or (ignore_prefixes and key.startswith(ignore_prefixes)):
                continue
            report.unexpected.append(key)
            continue
        if tuple(value.shape) != tuple(target[key].shape):
            if head_prefixes and key.startswith(head_prefixes):
                report.dropped_head.append(key)
            else:
                report.mismatched.append(f"{key} {tuple(value.shape)} vs model {tuple(target[key].shape)}")
            continue
        kept[key] = value
    for key in target:
        if key in kept or key.endswith("num_batches_tracked"):
            continue
        if key in report.dropped_head or any(d == key for d in report.dropped_head):
            continue
        report.missing.append(key)
    return kept, report


def load_into(
    model: nn.Module,
    state: Mapping[str, torch.Tensor],
    *,
    layout: str = "auto",
    strict: bool = True,
    head_prefixes: Iterable[str] = (),
    ignore_prefixes: Iterable[str] = (),
    source: str = "checkpoint",
) -> LoadReport:
    """Adapt ``state`` to ``model``'s layout and load it.

    A classifier of another size is dropped with a warning. With ``strict=True`` any other missing, unexpected or
    mis-shaped key raises ``RuntimeError`` naming them and ``source``; with ``strict=False`` they are reported in the
    returned :class:`LoadReport` and a warning.

    Raises:
        WeightsMismatchError: (a ``RuntimeError``) with ``strict=True``, when the weights do not fit the model.
    """
    target = model.state_dict()
    converted, found_layout = adapt_state_dict(state, target, layout=layout)
    kept, report = match_state_dict(converted, target, head_prefixes=head_prefixes, ignore_prefixes=ignore_prefixes)
    report.layout = found_layout
    if report.dropped_head:
        report.missing.extend(k for k in report.dropped_head if k not in report.missing)
        warnings.warn(
            f"{source}: classifier {', '.join(report.dropped_head)} has another number of classes than the model; "
            "it was not loaded (the model keeps a newly initialised classifier)",
            stacklevel=2,
        )
    problems = not (not report.unexpected and not report.mismatched and set(report.missing) <= set(report.dropped_head))
    if problems:
        message = f"{source} does not fit {type(model).__name__}: {report}"
        if strict:
            raise WeightsMismatchError(message)
        warnings.warn(message, stacklevel=2)
    model.load_state_dict(kept, strict=False)
    return report
