"""The backbone contract: a network cut into stages, each declaring the feature map it returns.

A family file describes its network once as a :class:`Family`: which submodules make up each stage, what each stage
returns (:class:`FeatureSpec`: name, channels, stride), and how the classification head runs. From that one
description the same underlying torchvision/timm network becomes

- a :class:`FeatureExtractor` (``create_backbone``): ``forward(x) -> dict[str, Tensor]`` keyed by spec name, head
  modules removed; or
- an :class:`~vision.backbones.classifier.ImageClassifier` (``create_model``): ``forward(x) -> logits``.

Both *adopt* the network's submodules under their original names, so their state dicts are the torchvision/timm
state dicts and published weights load unchanged.

Feature sizes (one rule for every backbone): a level declared at stride ``s`` is returned at exactly
``ceil(H / s) x ceil(W / s)`` for an input ``[B, C, H, W]`` of any size. Declared strides are *nominal*: a few
families' raw maps are not exact divisions of the input (AlexNet's and Inception v3's unpadded convolutions and
pools, ConvNeXt's floor-rounded patchify stem), so the backbone wrapper (:meth:`FeatureExtractor.forward`,
``TimmFeatureExtractor.forward``) resizes such a map bilinearly to the declared size (:func:`align_to_strides`);
maps that already have that size are returned untouched, so exact families pay nothing. Necks and heads can
therefore upsample by 2 and concatenate without depending on the input size.
"""

from __future__ import annotations

import math
from collections.abc import Callable, Sequence
from dataclasses import dataclass, field
from typing import Any

import torch
from torch import Tensor, nn
from torch.nn import functional as F

from vision.hub.cards import IMAGENET_MEAN, IMAGENET_STD, WeightsCard

__all__ = [
    "Family",
    "FeatureExtractor",
    "FeatureInfoMixin",
    "FeatureSpec",
    "SpecsMixin",
    "Stage",
    "align_to_strides",
    "freeze_batch_norm",
    "input_mean_std",
    "level_names",
    "levels_by_stride",
    "spec_name",
]


@dataclass(frozen=True)
class FeatureSpec:
    """A feature map a backbone returns: ``[B, channels, ceil(H/stride), ceil(W/stride)]`` under key ``name``
    (``stride`` is nominal: see the module docstring)."""

    name: str
    channels: int
    stride: int


@dataclass(frozen=True)
class Stage:
    """A stage: the submodules (dotted paths) run in order, and the feature it produces."""

    spec: FeatureSpec
    modules: tuple[str, ...]


def level_names(strides: Sequence[int], prefix: str = "C") -> list[str]:
    """The one naming rule for feature levels (backbones ``C``, necks ``P``): ``{prefix}{log2 stride}`` when the
    strides are distinct powers of two (stride 8 -> ``"C3"``), else ``{prefix}{i}_s{stride}`` by position (several
    levels of a single-scale body such as a ViT: ``C0_s16``, ``C1_s16`` ...).
    """
    powers = all(s > 0 and 2 ** round(math.log2(s)) == s for s in strides)
    if powers and len(set(strides)) == len(strides):
        return [f"{prefix}{round(math.log2(s))}" for s in strides]
    return [f"{prefix}{i}_s{s}" for i, s in enumerate(strides)]


def spec_name(stride: int) -> str:
    """Conventional name of a feature at a power-of-two stride: ``C{log2(stride)}`` (stride 8 -> ``"C3"``)."""
    level = round(math.log2(stride))
    if 2**level != stride:
        raise ValueError(f"stride {stride} is not a power of two")
    return level_names([stride])[0]


_STRIDE_TOLERANCE = math.log2(1.2)


def levels_by_stride(
    specs: Sequence[FeatureSpec], strides: Sequence[int], *, model: str = "this head"
) -> tuple[int, ...]:
    """The one stride selection for every head: indices into ``specs`` of the levels at ``strides``.

    Each requested stride takes the level whose declared stride is nearest to it in log scale, within 20 % (declared
    strides are nominal: a family whose deepest map is truly ~37 px per cell at some input sizes declares 32);
    distinct requests must get distinct levels, and anything further is refused, so a head never silently reads
    the wrong scale.

    Raises:
        ValueError: naming the missing strides and the levels the backbone has.
    """
    if not specs:
        raise ValueError(f"{model} got a backbone with no feature levels")
    chosen: list[int] = []
    for want in strides:
        best = min(range(len(specs)), key=lambda i: (abs(math.log2(specs[i].stride / want)), -i))
        if abs(math.log2(specs[best].stride / want)) > _STRIDE_TOLERANCE or best in chosen:
            raise ValueError(
                f"{model} needs features at strides {list(strides)}; the backbone has no level at stride {want} "
                f"(its levels: {[(s.name, s.stride) for s in specs]}); pass out_indices=... to choose levels"
            )
        chosen.append(best)
    return tuple(chosen)


def align_to_strides(
    features: dict[str, Tensor], specs: Sequence[FeatureSpec], size: Sequence[int | Tensor]
) -> dict[str, Tensor]:
    """Each map ``features[spec.name]`` at exactly ``ceil(H / stride) x ceil(W / stride)`` for an input of ``size``
    ``(H, W)``: a map of another size is resized (bilinear), one of that size is returned as it is.

    While tracing (ONNX export) ``size`` holds the input's traced shape and the target size is computed from it, so
    the exported Resize follows the input's size (an R-CNN file takes any image size) instead of keeping the traced
    one. Whether a level is resized is decided at the traced size; an R-CNN pads its input to a multiple of the
    largest stride, where a network's shortfall (unpadded or floor-rounded layers) is the same at every size, so the
    decision holds for every image.
    """
    H, W = size[0], size[1]
    out: dict[str, Tensor] = {}
    for spec in specs:
        x = features[spec.name]
        s = spec.stride
        want = ((H + s - 1) // s, (W + s - 1) // s)  # ceil division on non-negative sizes: ONNX's integer Div
        # truncates, so a traced -(-H // s) would round the wrong way
        if tuple(int(d) for d in x.shape[-2:]) != tuple(int(d) for d in want):
            target = want if torch.jit.is_tracing() else (int(want[0]), int(want[1]))
            x = F.interpolate(x, size=target, mode="bilinear", align_corners=False)
        out[spec.name] = x
    return out


def input_mean_std(body: nn.Module) -> tuple[tuple[float, ...], tuple[float, ...]]:
    """The normalisation ``(mean, std)`` a backbone's weights expect: its card's, else the architecture's own
    (``default_preprocess``, e.g. timm's ``pretrained_cfg``: 0.5/0.5 for ViTs), else ImageNet's statistics."""
    card = getattr(body, "card", None)
    pre = card.preprocess if card is not None else getattr(body, "default_preprocess", None)
    if pre is None:
        return tuple(IMAGENET_MEAN), tuple(IMAGENET_STD)
    return tuple(float(v) for v in pre.mean), tuple(float(v) for v in pre.std)


def stages_from(groups: Sequence[Sequence[str]], channels: Sequence[int], strides: Sequence[int]) -> list[Stage]:
    """Build stages named ``C{log2 stride}`` from parallel lists of module groups, channels and strides."""
    if not len(groups) == len(channels) == len(strides):
        raise ValueError("stages_from needs as many module groups as channels and strides")
    return [Stage(FeatureSpec(spec_name(s), c, s), tuple(g)) for g, c, s in zip(groups, channels, strides)]


@dataclass(frozen=True)
class Family:
    """How one network family is cut into stages and classified.

    Attributes:
        stages: ``net -> list[Stage]``, shallow to deep.
        head_modules: dotted paths used only by the classification head (removed in feature mode).
        head: ``(module, stage_outputs) -> logits``; ``module`` is the adopting module (it holds the net's
            submodules under their original names), ``stage_outputs`` every stage's output in order.
        classifier: key prefixes of the final classification layer (dropped on a ``num_classes`` mismatch).
        preprocess_input: optional ``(module, x) -> x`` applied before the first stage (Inception's
            ``transform_input``).
        attributes: names of non-module attributes of the net that the head or input transform reads.
    """

    stages: Callable[[nn.Module], list[Stage]]
    head_modules: tuple[str, ...]
    head: Callable[[nn.Module, list[Tensor]], Tensor]
    classifier: tuple[str, ...]
    preprocess_input: Callable[[nn.Module, Tensor], Tensor] | None = None
    attributes: tuple[str, ...] = field(default_factory=tuple)


def _delete_path(root: nn.Module, path: str) -> None:
    parent_path, _, leaf = path.rpartition(".")
    parent = root.get_submodule(parent_path) if parent_path else root
    if isinstance(parent, nn.Sequential) and leaf.isdigit():
        # keep the other indices (and so the state-dict keys) unchanged
        parent._modules.pop(leaf)
    else:
        delattr(parent, leaf)


def freeze_batch_norm(module: nn.Module) -> nn.Module:
    """Replace every BatchNorm2d/SyncBatchNorm (and timm's norm+act variants) by its frozen counterpart.

    Frozen norms use the running statistics in training too and have no trainable parameters; their state-dict keys
    are those of BatchNorm2d minus ``num_batches_tracked``.
    """
    from timm.layers import freeze_batch_norm_2d

    return freeze_batch_norm_2d(module)


class SpecsMixin:
    """``channels`` and ``strides`` of the declared output levels ``specs`` (backbones and necks alike)."""

    specs: list[FeatureSpec]

    @property
    def channels(self) -> list[int]:
        return [s.channels for s in self.specs]

    @property
    def strides(self) -> list[int]:
        return [s.stride for s in self.specs]


class FeatureInfoMixin(SpecsMixin):
    """``specs`` (and ``size_divisibility``) from ``feature_info`` and ``out_indices``; ``channels``, ``strides``."""

    feature_info: list[FeatureSpec]
    out_indices: tuple[int, ...]

    @property
    def specs(self) -> list[FeatureSpec]:  # type: ignore[override]
        return [self.feature_info[i] for i in self.out_indices]

    @property
    def size_divisibility(self) -> int:
        return max(self.strides)


class _Adopted(nn.Module):
    """Holds a network's submodules under their original names and runs its stages."""

    family: Family
    stages: list[Stage]

    def _adopt(self, net: nn.Module, family: Family, drop: Sequence[str]) -> None:
        for path in drop:
            _delete_path(net, path)
        for name, child in net.named_children():
            self.add_module(name, child)
        for attr in family.attributes:
            setattr(self, attr, getattr(net, attr))
        self.family = family

    def _run_stages(self, x: Tensor, last: int) -> list[Tensor]:
        if x.dim() != 4:
            raise ValueError(f"{type(self).__name__} expects images [B, C, H, W], got shape {tuple(x.shape)}")
        if self.family.preprocess_input is not None:
            x = self.family.preprocess_input(self, x)
        outs: list[Tensor] = []
        for stage in self.stages[: last + 1]:
            for path in stage.modules:
                x = self.get_submodule(path)(x)
            outs.append(x)
        return outs


class FeatureExtractor(FeatureInfoMixin, _Adopted):
    """A backbone returning named multi-scale features.

    ``forward(x: [B, 3, H, W] float) -> dict[name, Tensor [B, C_i, ceil(H/s_i), ceil(W/s_i)]]`` for the selected stages
    (``out_indices``), shallow to deep. ``feature_info`` lists every stage of the network; ``specs`` the selected
    ones; ``channels`` and ``strides`` their channels and strides; ``size_divisibility`` the largest selected stride.

    Example:
        >>> backbone = vision.create_backbone("resnet50", out_indices=(1, 2, 3))
        >>> feats = backbone(torch.randn(2, 3, 224, 224))
        >>> {k: tuple(v.shape) for k, v in feats.items()}
        {'C3': (2, 512, 28, 28), 'C4': (2, 1024, 14, 14), 'C5': (2, 2048, 7, 7)}
    """

    def __init__(
        self,
        net: nn.Module,
        family: Family,
        *,
        out_indices: Sequence[int] | None = None,
        frozen_stages: int = 0,
        norm: str = "bn",
        card: WeightsCard | None = None,
        name: str = "",
    ) -> None:
        super().__init__()
        all_stages = family.stages(net)
        n = len(all_stages)
        if out_indices is None:
            out_indices = tuple(range(n))
        out_indices = tuple(int(i) + n if int(i) < 0 else int(i) for i in out_indices)
        if not out_indices or any(i < 0 or i >= n for i in out_indices) or len(set(out_indices)) != len(out_indices):
            raise ValueError(
                f"{name or type(net).__name__}: out_indices must be distinct stage indices in [0, {n}), "
                f"got {out_indices}; the stages are {[s.spec.name for s in all_stages]}"
            )
        if not 0 <= frozen_stages <= n:
            raise ValueError(f"frozen_stages must be in [0, {n}], got {frozen_stages}")
        if norm not in ("bn", "frozen_bn"):
            raise ValueError(f"norm must be 'bn' or 'frozen_bn', got {norm!r}")
        last = max(out_indices)
        unused = [p for s in all_stages[last + 1 :] for p in s.modules if p not in _used_paths(all_stages[: last + 1])]
        self.pruned: tuple[str, ...] = tuple(family.head_modules) + tuple(unused)
        self._adopt(net, family, self.pruned)
        self.stages = all_stages[: last + 1]
        self.feature_info: list[FeatureSpec] = [s.spec for s in all_stages]
        self.out_indices = tuple(sorted(out_indices))
        self.card = card
        self.name = name
        if norm == "frozen_bn":
            for child_name, child in list(self.named_children()):
                setattr(self, child_name, freeze_batch_norm(child))
        self.frozen_stages = frozen_stages
        self._freeze(frozen_stages)

    def _freeze(self, k: int) -> None:
        for stage in self.stages[:k]:
            for path in stage.modules:
                for p in self.get_submodule(path).parameters():
                    p.requires_grad_(False)

    def train(self, mode: bool = True) -> FeatureExtractor:
        super().train(mode)
        if mode:  # frozen stages keep their batch statistics fixed
            for stage in self.stages[: self.frozen_stages]:
                for path in stage.modules:
                    self.get_submodule(path).eval()
        return self

    def forward(self, x: Tensor) -> dict[str, Tensor]:
        outs = self._run_stages(x, max(self.out_indices))
        feats = {self.feature_info[i].name: outs[i] for i in self.out_indices}
        return align_to_strides(feats, self.specs, x.shape[-2:])

    def extra_repr(self) -> str:
        return f"name={self.name!r}, specs={self.specs}"


def _used_paths(stages: Sequence[Stage]) -> set[str]:
    return {p for s in stages for p in s.modules}


def check_image_batch(x: Any, *, channels: int | None = 3) -> Tensor:
    """Validate an image batch ``[B, C, H, W]`` floating tensor; raise ``ValueError`` naming the problem."""
    if not isinstance(x, Tensor):
        raise TypeError(f"expected a torch.Tensor of images [B, C, H, W], got {type(x).__name__}")
    if x.dim() != 4:
        raise ValueError(f"expected images [B, C, H, W], got shape {tuple(x.shape)}")
    if channels is not None and x.shape[1] != channels:
        raise ValueError(f"expected {channels} channels, got shape {tuple(x.shape)}")
    if not torch.is_floating_point(x):
        raise ValueError(f"expected floating-point images, got dtype {x.dtype}")
    return x
