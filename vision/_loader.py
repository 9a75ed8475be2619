"""The one loader: a training run, a weights file, a tag or a URL -> a ready model with its task, class names and
preprocessing. ``tools/infer.py``, training's ``weights=``/``resume=``, benchmarks and the Python API all use it.

What ``weights`` may be, and what the model gets:

- a run folder (``args.yaml`` + ``weights/``), a file inside a run's ``weights/``, or any ``.safetensors`` file whose
  metadata names its model (a copied ``best.safetensors``): the architecture, its keyword arguments, the class
  names, the label offset and the preprocessing come from the file's metadata (else the run's ``args.yaml``);
  ``model=`` may be left out or repeat that architecture, never replace it (the weights fit no other);
- a plain weights file (safetensors / ``.pt`` / ``.pth``: ours, torchvision's, timm's or lukemelas' layout) or a URL,
  with ``model=``: a copy of a published file (same SHA-256) gets that card (names and preprocessing); a file whose
  classifier has another size than the architecture's default builds the model with the file's class count (never a
  random head); a file with the default head size but no names takes the default card's names and says so;
- a weight tag (``tv2_in1k``) or ``None`` with ``model=``: as :func:`vision.create_model`.

A ``weights`` that looks like a path (a path separator or a weights-file suffix: ``.safetensors``, ``.pt``, ``.pth``,
``.bin``, ``.ckpt``, ``.onnx``) but names nothing is refused as ``weights=PATH: no such file or folder``. An exported
``.onnx`` file is refused with a pointer to :func:`vision.deploy.load_onnx`, and a training-state file
(``weights/last.state.pt``, ``weights/ckpt/<unit>/state.pt``: what ``resume=`` reads) with the ``.safetensors`` weights
to load instead: it holds the raw (not EMA) weights and the optimiser, but no class names or preprocessing.

A file written by ``vision prune`` (metadata ``pruned``) holds fewer channels than the architecture: the model is
built as usual, then every Conv2d (groups included), BatchNorm and Linear is reshaped to the stored shapes before the
weights load. Feature adapters trained for distillation (``distill_adapters.*``) are dropped.
"""

from __future__ import annotations

import os
import re
import sys
import warnings
from pathlib import Path
from typing import Any

import torch
import yaml
from torch import nn

from vision._api import _head_prefixes, _is_url, create_model
from vision.hub.cards import Preprocess, WeightsCard
from vision.hub.metadata import read_safetensors_metadata
from vision.registry import resolve_entry
from vision.utils.pruning import reshape_to_state

__all__ = ["find_trained_file", "load_model", "reshape_to_state"]

_WEIGHT_NAMES = ("best.safetensors", "last.safetensors")
#: suffixes that make a ``weights=`` value a file name rather than a weight tag
_WEIGHT_SUFFIXES = (".safetensors", ".pt", ".pth", ".bin", ".ckpt", ".onnx")


def _looks_like_path(weights: str | os.PathLike[str]) -> bool:
    """Whether ``weights`` names a file or folder (a path object, a path separator or a weights-file suffix), not a
    weight tag (``tv2_in1k``, ``lukemelas_in1k``) or a URL."""
    if isinstance(weights, os.PathLike):
        return True
    text = str(weights)
    if _is_url(text):
        return False
    return "/" in text or "\\" in text or os.sep in text or text.lower().endswith(_WEIGHT_SUFFIXES)


def _is_onnx(weights: str | os.PathLike[str]) -> bool:
    """Whether ``weights`` names an ONNX file (by its suffix; a URL's query and fragment aside)."""
    return os.fspath(weights).split("?", 1)[0].split("#", 1)[0].lower().endswith(".onnx")


def find_trained_file(weights: str | os.PathLike[str] | None) -> tuple[Path, dict[str, Any], Path | None] | None:
    """``(weights file, its metadata, run folder or None)`` when ``weights`` names a file written by training.

    That is a run folder (``args.yaml`` + ``weights/``: its ``best``, else ``last`` weights), any file inside a run's
    ``weights/``, or a ``.safetensors`` file anywhere whose metadata names its model. ``None`` otherwise.

    Raises:
        FileNotFoundError: a run folder without weights; ``weights`` looks like a path (a separator or a weights-file
            suffix, see :func:`_looks_like_path`) and nothing exists there.
        ValueError: a training-state file (``*.state.pt``, ``ckpt/<unit>/state.pt``), naming the weights to use.
    """
    if not weights or (isinstance(weights, str) and _is_url(weights)):
        return None
    p = Path(weights)
    if _looks_like_path(weights) and not p.exists():
        raise FileNotFoundError(f"weights={weights}: no such file or folder")
    if p.is_file():
        _refuse_training_state(p)
    if p.is_dir():
        if not ((p / "args.yaml").is_file() and (p / "weights").is_dir()):
            return None
        found = next((p / "weights" / n for n in _WEIGHT_NAMES if (p / "weights" / n).is_file()), None)
        if found is None:
            raise FileNotFoundError(f"no weights in {p / 'weights'} ({' or '.join(_WEIGHT_NAMES)})")
        return found, read_safetensors_metadata(found), p
    if not p.is_file():
        return None
    meta = read_safetensors_metadata(p) if p.suffix == ".safetensors" else {}
    run = p.parent.parent if p.parent.name == "weights" and (p.parent.parent / "args.yaml").is_file() else None
    if run is None and "model" not in meta:
        return None  # a plain weights file: for create_model(model, weights=path)
    return p, meta, run


def _refuse_training_state(path: Path) -> None:
    """Refuse a training-state file (``weights/last.state.pt``, ``weights/ckpt/<unit>/state.pt``: what ``resume=``
    reads, see :mod:`vision.engine.checkpoint`), naming the weights file written beside it.

    Such a file holds the raw weights (not the EMA weights a run evaluates and saves), the optimiser and the RNG states,
    but not the class names, label offset and preprocessing, which are in the ``.safetensors`` header beside it; that
    file is the one to load.
    """
    in_unit = re.fullmatch(r"e\d+-s\d+", path.parent.name) and path.parent.parent.name == "ckpt"  # engine's UNITS
    unit = path.name == "state.pt" and in_unit
    if not (path.name.endswith(".state.pt") or unit):
        return
    weights_dir = path.parents[2] if unit else path.parent
    run = weights_dir.parent if weights_dir.name == "weights" and (weights_dir.parent / "args.yaml").is_file() else None
    beside = [weights_dir / n for n in _WEIGHT_NAMES if (weights_dir / n).is_file()]
    if unit:
        use = f"{path.parent / 'weights.safetensors'} (this checkpoint's weights)"
    elif beside:
        use = " or ".join(map(str, beside))
    else:
        use = f"the run's weights/{' or '.join(_WEIGHT_NAMES)}"
    raise ValueError(
        f"{path} is a training-state file (for resume=); use {use}{f', or the run folder {run}' if run else ''}"
    )


def run_args(run: Path | None) -> dict[str, Any]:
    """The resolved arguments a training run saved (``run/args.yaml``); ``{}`` for ``None`` (a file outside a run)."""
    if run is None:
        return {}
    return dict(yaml.safe_load((Path(run) / "args.yaml").read_text(encoding="utf-8")) or {})


def _card_from_metadata(net: nn.Module, meta: dict[str, Any], classes: list[str] | None, source: str) -> WeightsCard:
    pre = meta["preprocess"]
    return WeightsCard(
        url="",
        sha256=None,
        num_params=sum(p.numel() for p in net.parameters()),
        num_classes=len(classes) if classes else None,
        categories=tuple(classes) if classes else None,
        preprocess=Preprocess(
            input_size=tuple(pre["input_size"]),
            resize_size=int(pre["resize_size"]),
            interpolation=pre.get("interpolation", "bilinear"),
            mean=tuple(pre["mean"]),
            std=tuple(pre["std"]),
            crop=bool(pre.get("crop", True)),
        ),
        source=source,
    )


def _architecture(name: str) -> str:
    """The registry name behind a model name (tags and aliases resolved), the name itself when it is unknown here."""
    from vision.registry import UnknownNameError

    try:
        return resolve_entry(name).name
    except UnknownNameError:
        return name


def _load_trained(path: Path, meta: dict[str, Any], run: Path | None, model: str | None) -> nn.Module:
    from vision.hub.download import load_state_dict_file
    from vision.models.detection.common import label_offset

    args = run_args(run)
    stored = meta.get("model") or args.get("model")
    if model and stored and _architecture(str(model)) != _architecture(str(stored)):
        task = meta.get("task") or args.get("task")
        raise ValueError(
            f"{path} holds a {stored}{f' ({task})' if task else ''} model, not {model}: leave out model= (the file "
            f"names its model) or pass weights of a {model}"
        )
    name = model or stored
    if not name:
        raise ValueError(f"{path} names no model in its metadata; pass model=<architecture>")
    kwargs = dict(meta.get("model_kwargs") or args.get("model_kwargs") or {})
    classes = meta.get("classes")
    offset = int(meta["label_offset"]) if "label_offset" in meta else label_offset(str(name))
    if classes:
        kwargs["num_classes"] = len(classes) + offset
    net = create_model(str(name), **kwargs)
    state = {k: v for k, v in load_state_dict_file(path).items() if not k.startswith("distill_adapters.")}
    if meta.get("pruned"):
        reshape_to_state(net, state)
    missing, unexpected = net.load_state_dict(state, strict=False)
    if missing or unexpected:
        raise RuntimeError(f"{path} does not fit {name}: missing {missing[:5]}, unexpected {unexpected[:5]}")
    if classes and hasattr(net, "categories"):
        net.categories = list(classes)
    if meta.get("category_ids"):  # a detector's COCO category id per label, as in its training data
        net.category_ids = [int(i) for i in meta["category_ids"]]
    if hasattr(net, "card") and meta.get("preprocess"):
        net.card = _card_from_metadata(net, meta, classes, str(run or path))
    net.task = meta.get("task") or args.get("task") or resolve_entry(str(name)).task
    return net


def _file_head_size(net: nn.Module, source: Any) -> int | None:
    """The class count of the classifier stored in ``source`` when it differs from ``net``'s (else ``None``)."""
    from vision.hub.adapt import adapt_state_dict
    from vision.hub.download import load_state_dict_file

    prefixes = _head_prefixes(net)
    if not prefixes:
        return None
    target = net.state_dict()
    state, _ = adapt_state_dict(load_state_dict_file(source), target, layout="auto")
    for key, value in state.items():
        if key.startswith(prefixes) and key in target and value.dim() == 2 and value.shape != target[key].shape:
            return int(value.shape[0])
    return None


def _load_plain(model: str, weights: Any) -> nn.Module:
    entry = resolve_entry(model)
    if isinstance(weights, str) and _is_url(weights):
        from vision._api import _download_url

        weights = _download_url(weights)  # a local copy: its card is found by hash
    with warnings.catch_warnings(record=True) as caught:
        warnings.simplefilter("always")
        net = create_model(model, weights=weights)
    dropped = [w for w in caught if "another number of classes" in str(w.message)]
    for w in caught:
        if w not in dropped:
            warnings.warn_explicit(w.message, w.category, w.filename, w.lineno)
    if dropped:
        size = _file_head_size(net, weights)
        if size is None:
            raise RuntimeError(f"{weights}: {dropped[0].message}")
        print(f"note: {weights} holds a {size}-class classifier; {model} was built with num_classes={size}",
              file=sys.stderr)  # fmt: skip
        net = create_model(model, weights=weights, num_classes=size)
    card = getattr(net, "card", None) or (entry.card() if entry.default_tag else None)
    if (
        weights is not None
        and getattr(net, "card", None) is None
        and card is not None
        and card.categories
        and card.num_classes == getattr(net, "num_classes", None)
    ):
        from vision._api import _attach_card

        _attach_card(net, card)
        print(f"note: {weights} carries no class names; using those of {model}.{entry.default_tag} "
              f"({card.num_classes} classes, same head size)", file=sys.stderr)  # fmt: skip
    if getattr(net, "categories", None) is None and card is not None and card.categories:
        from vision.models.detection.common import label_offset

        if card.num_classes == getattr(net, "num_classes", None):
            net.categories = list(card.categories[label_offset(net) :])
    net.task = entry.task or "classification"
    return net


def load_model(
    weights: str | os.PathLike[str] | None = None,
    *,
    model: str | None = None,
    device: torch.device | str | None = None,
) -> nn.Module:
    """A model ready for inference, in eval mode, from a run, a weights file, a tag or a URL (module docstring).

    Args:
        weights: a run folder, a weights file, a URL, a weight tag of ``model``, or ``None`` (random init). Not an
            exported ``.onnx`` file (load that with :func:`vision.deploy.load_onnx`) nor a training-state file
            (``*.state.pt``, for ``resume=``: load the ``.safetensors`` weights beside it).
        model: the architecture; required unless ``weights`` is a run or a file written by training, which names its
            own: then leave it out or give that same architecture (trained weights load only into the architecture
            they were trained as; another one is refused, naming the stored one).
        device: where to put the model (default: stay on the CPU).

    Raises:
        ValueError: ``model=`` missing for plain weights, or another architecture than a trained file's; an ONNX or a
            training-state file (the message says what to load instead).
        FileNotFoundError: ``weights`` looks like a path and names nothing.

    Returns:
        The model with ``model.task`` set, ``model.categories`` (data-set class names, when known) and ``model.card``
        (preprocessing) when the weights bring one.

    Example:
        >>> model = vision.load_model("runs/detection/train")                  # a training run
        >>> model = vision.load_model("resnet18-ft.pth", model="resnet18")      # a fine-tuned plain file
    """
    if weights is not None and _is_onnx(weights) and (_is_url(os.fspath(weights)) or Path(weights).is_file()):
        path = os.fspath(weights)  # also one in a run's weights/, where vision export writes it
        how = "download it and load it with vision.deploy.load_onnx(path)" if _is_url(path) else (
            f"load it with vision.deploy.load_onnx({path!r})")  # fmt: skip
        raise ValueError(f"{path} is an exported ONNX model, not PyTorch weights: {how}")
    found = find_trained_file(weights)
    if found is not None:
        net = _load_trained(*found, model)
    else:
        if not model:
            raise ValueError(
                "model= is required (e.g. model=resnet50), unless weights= names a training run or a .safetensors "
                "file written by training"
            )
        net = _load_plain(model, weights or None)
    if device is not None:
        net = net.to(device)
    return net.eval()
