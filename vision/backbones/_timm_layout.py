"""What a timm network returns and which of its modules a stage is, for :mod:`vision.backbones.timm`.

- Layout: timm declares the layout of its feature maps (``output_fmt``): ``NCHW``, or ``NHWC`` for channels-last
  models (Swin); :func:`channels_last` reads it, the extractor permutes ``NHWC`` maps, and any other layout is refused.
- Frozen stages (:func:`freeze`): ``frozen_stages=k`` freezes the stem and the first ``k`` stages, as for the built-in
  families (``resnet18``: conv1/bn1 + layer1 for ``k=1``). The stages are timm's feature levels, less the leading
  levels that hold only stem parameters (timm's ``group_matcher`` names the stem: ResNet's ``act1`` level at stride
  2); a level ends at its module (``feature_info`` ``module``: ``blocks.1``, ``layer2``), and everything registered
  up to the end of that module is frozen.
- Input sizes: :func:`is_size_error` tells timm's size refusals (shape asserts, mismatched tensor sizes) from other
  failures, and :func:`size_error` words them as one error naming the model, the input size and what it needs.
"""

from __future__ import annotations

import re
from collections.abc import Sequence

import torch
from torch import nn

__all__ = ["built_size", "channels_last", "freeze", "is_size_error", "size_error"]

_SIZE_WORDS = re.compile(r"size|shape|match|divisible|height|width|window|kernel|dimension", re.IGNORECASE)


def channels_last(body: nn.Module, name: str) -> bool:
    """Whether the timm ``features_only`` network ``body`` returns ``[B, H, W, C]`` maps (timm's ``output_fmt``).

    Raises:
        ValueError: a layout that is not an image map (token sequences ``NLC``/``NCL``).
    """
    from timm.layers import Format

    fmt = Format(getattr(body, "output_fmt", "NCHW")).value
    if fmt not in ("NCHW", "NHWC"):
        raise ValueError(f"{name}: timm returns its features as {fmt}; a backbone needs NCHW or NHWC maps")
    return fmt == "NHWC"


def built_size(cfg: dict, kwargs: dict) -> tuple[int, int]:
    """The input size ``(H, W)`` a timm model is built for: its ``img_size`` keyword, else its pretrained config's."""
    size = kwargs.get("img_size") or tuple(cfg.get("input_size", (3, 224, 224)))[-2:]
    h, w = (size, size) if isinstance(size, int) else tuple(size)
    return int(h), int(w)


def is_size_error(err: BaseException) -> bool:
    """Whether ``err`` is a network refusing its input size (not memory, dtype or device trouble)."""
    return (
        isinstance(err, RuntimeError | AssertionError)
        and not isinstance(err, torch.OutOfMemoryError)
        and bool(_SIZE_WORDS.search(str(err)))
    )


def size_error(
    name: str,
    size: Sequence[int],
    err: BaseException,
    *,
    built: tuple[int, int],
    fixed: bool,
    padded: tuple[int, int, int] | None = None,
) -> ValueError:
    """One error for a size a timm model refuses: ``name``, the input ``size`` ``(H, W)``, what it needs (the
    ``built`` size when the model is ``fixed`` to it) and timm's own words; ``padded`` ``(Hp, Wp, multiple)`` when
    the input was also tried padded."""
    H, W = int(size[0]), int(size[1])
    tried = f", nor padded to {padded[0]}x{padded[1]} (multiples of its stride {padded[2]})" if padded else ""
    if fixed:
        need = (
            f"it takes only the size it is built for, {built[0]}x{built[1]} (build it for another with "
            "img_size=(H, W); model_kwargs.img_size= on the command line)"
        )
    else:
        need = f"it is built for {built[0]}x{built[1]}"
    said = " ".join(str(err).split())[:200] or type(err).__name__
    return ValueError(f"{name} cannot take a {H}x{W} input{tried}: {need}; timm: {said}")


def _resolve(paths: dict[str, nn.Module], module: str) -> str | None:
    """The path in a timm feature wrapper of a ``feature_info`` module (wrappers flatten ``stages.0`` to
    ``stages_0`` or hold the model as ``model``)."""
    for candidate in (module, module.replace(".", "_", 1), f"model.{module}", module.replace(".", "_")):
        if candidate in paths:
            return candidate
    return None


def freeze(
    body: nn.Module,
    modules: Sequence[str],
    k: int,
    *,
    last: int,
    stem: str | None,
    name: str,
) -> list[nn.Module]:
    """Freeze the stem and the first ``k`` stages of the timm ``features_only`` network ``body`` (module docstring);
    ``modules`` are the ``feature_info`` module names of every level, ``last`` the deepest level the body keeps,
    ``stem`` timm's stem regex. Returns the largest submodules whose parameters are all frozen (kept in eval mode).

    Raises:
        ValueError: ``k`` beyond the number of stages, or levels that name no module of ``body``.
    """
    order = list(body.named_modules())
    paths = dict(order)
    index = {path: i for i, (path, _) in enumerate(order)}

    def end(level: int) -> int:
        path = _resolve(paths, modules[level])
        if path is None:
            raise ValueError(
                f"frozen_stages is not supported by {name}: timm's feature levels {list(modules)} do not name "
                "modules of its feature network"
            )
        return max(i for p, i in index.items() if p == path or p.startswith(f"{path}."))

    params = [(n, p, index[n.rpartition(".")[0]]) for n, p in body.named_parameters()]
    pattern = re.compile(stem) if stem else None

    def is_stem(pname: str) -> bool:
        names = (pname, pname.removeprefix("model."), pname.replace("_", ".", 1))
        return pattern is not None and any(pattern.match(n) for n in names)

    stems = 0
    while stems <= last and stems < len(modules):
        upto = [n for n, _, rank in params if rank <= end(stems)]
        if not upto or not all(is_stem(n) for n in upto):
            break
        stems += 1
    stages = len(modules) - stems
    if not 0 <= k <= stages:
        raise ValueError(f"frozen_stages must be in [0, {stages}] for {name} (its stages after the stem), got {k}")
    if k == 0:
        return []
    limit = end(min(stems + k - 1, last))
    for _, p, rank in params:
        if rank <= limit:
            p.requires_grad_(False)
    frozen: list[nn.Module] = []
    covered: list[str] = []
    for path, module in order:
        own = list(module.parameters())
        if not path or not own or any(p.requires_grad for p in own):
            continue
        if not any(path.startswith(f"{c}.") for c in covered):
            frozen.append(module)
            covered.append(path)
    return frozen
