"""Any timm model as a backbone or classifier: ``timm/<timm name>`` (e.g. ``timm/convnext_tiny``).

Paper list: https://github.com/huggingface/pytorch-image-models#models.

- ``create_backbone("timm/<name>")`` uses timm's own ``features_only`` extraction (every timm model that supports it);
  the declared specs come from timm's ``feature_info``. Features are named ``C{log2 stride}`` when the strides are
  distinct powers of two, else ``C{i}_s{stride}`` (:func:`~vision.backbones._base.level_names`). Maps timm returns
  channels-last (its declared ``output_fmt`` ``NHWC``: Swin, MambaOut) are permuted to ``[B, C, H, W]``, and every
  map's channels are checked against its spec (a mismatch raises, naming the backbone).
- Any input size: models with a dynamic image size are built with timm's ``dynamic_img_size=True`` (ViT, DeiT, EVA
  also ``dynamic_img_pad=True``; Swin: attention masks built per input), and every level is returned at
  ``ceil(H/stride) x ceil(W/stride)`` like every other backbone. A network that refuses a size (DLA and HRNet want
  multiples of 32, Swin of 4) runs on the input zero-padded to a multiple of its largest stride, its maps cropped back;
  a hybrid ViT always does (timm's token grid is wrong otherwise). A model built for one size (LeViT, MaxViT, CoAtNet,
  EfficientFormerV2) takes that size (``img_size=(H, W)`` builds it for another); any other raises ``ValueError``
  naming the model, the size and what it needs. A single-scale model (every level at one stride, e.g. a plain ViT)
  returns its last block by default; the detectors put a simple feature pyramid (:mod:`vision.necks.simple_pyramid`)
  on it.
- ``frozen_stages=k`` freezes the stem and the first ``k`` stages as for the built-in families (a timm level holding
  only the stem, like ResNet's ``act1``, is part of the stem): :mod:`vision.backbones._timm_layout`.
- ``create_model("timm/<name>", num_classes=...)`` wraps the timm classifier (:class:`TimmClassifier`), built with the
  same dynamic-size keywords; a weights file with another number of classes loads with its head dropped.
- Pretrained weights: ``weights=True`` or a timm tag (``timm/resnet50.a1_in1k``) are fetched by timm itself from the
  Hugging Face hub, whose client verifies each file against the hub's SHA-256; with ``VISION_OFFLINE=1`` only the
  local cache is read (:mod:`vision.backbones._timm_build`). ``weights=<path>`` loads a local file through
  :func:`vision.load_weights` like any other model.
"""

from __future__ import annotations

import math
from collections.abc import Mapping, Sequence
from typing import Any

from torch import Tensor, nn
from torch.nn import functional as F

from vision.backbones import _timm_build
from vision.backbones._base import FeatureInfoMixin, FeatureSpec, align_to_strides, freeze_batch_norm, level_names
from vision.backbones._timm_layout import built_size, channels_last, freeze, is_size_error, size_error
from vision.hub.cards import Preprocess, WeightsCard, imagenet_categories
from vision.registry import BACKBONES, Entry

__all__ = ["TimmFeatureExtractor"]

PREFIX = "timm/"


class TimmFeatureExtractor(FeatureInfoMixin, nn.Module):
    """A timm ``features_only`` network with the :class:`~vision.backbones.FeatureExtractor` interface.

    ``forward(x [B, 3, H, W]) -> dict[name, Tensor [B, C, ceil(H/s), ceil(W/s)]]``; the timm network is the child
    ``body``. Channels-last maps (Swin) are permuted to ``NCHW``; every map's channels are checked against its spec.
    A network that refuses the input size is run once more on the input zero-padded (bottom, right) to a multiple of
    its largest stride, its maps cropped back, and from then on padded directly (DLA, HRNet, Swin at any size); a
    size it refuses even so raises ``ValueError`` naming it, the size and what it needs (a model built for one size,
    e.g. LeViT or MaxViT, needs that size).
    """

    def __init__(
        self,
        arch: str,
        *,
        out_indices: Sequence[int] | None = None,
        frozen_stages: int = 0,
        norm: str = "bn",
        pretrained: bool | str = False,
        card: WeightsCard | None = None,
        **kwargs: Any,
    ) -> None:
        super().__init__()
        from timm.layers import HybridEmbed

        self.name = f"{PREFIX}{arch}"
        if norm not in ("bn", "frozen_bn"):
            raise ValueError(f"norm must be 'bn' or 'frozen_bn', got {norm!r}")
        if frozen_stages < 0:
            raise ValueError(f"frozen_stages must be >= 0, got {frozen_stages}")

        def make(indices: Sequence[int] | None) -> tuple[nn.Module, bool]:
            extra = {"out_indices": tuple(indices)} if indices is not None else {}
            return _timm_build.create(arch, pretrained=pretrained, features_only=True, **extra, **kwargs)

        wanted = None if out_indices is None else tuple(int(i) for i in out_indices)
        body, dynamic = make(wanted if wanted is None or min(wanted) >= 0 else None)
        info = list(body.feature_info.info)
        n = len(info)
        raw = [(int(i["num_chs"]), int(i["reduction"])) for i in info]
        self.feature_info = [FeatureSpec(nm, c, s) for nm, (c, s) in zip(level_names([s for _, s in raw]), raw)]
        single_scale = len({s for _, s in raw}) == 1
        if wanted is None:
            resolved = (n - 1,) if single_scale else tuple(range(n))
        else:
            resolved = tuple(i + n if i < 0 else i for i in wanted)
        if not resolved or any(i < 0 or i >= n for i in resolved) or len(set(resolved)) != len(resolved):
            raise ValueError(f"timm/{arch}: out_indices must be distinct stage indices in [0, {n}), got {out_indices}")
        self.out_indices = tuple(sorted(resolved))
        if tuple(body.feature_info.out_indices) != self.out_indices:
            body, dynamic = make(self.out_indices)
        self.body = body
        self._nhwc = channels_last(body, self.name)
        if norm == "frozen_bn":
            self.body = freeze_batch_norm(self.body)
        self.card = card
        cfg = getattr(getattr(body, "pretrained_cfg", None) or getattr(body, "default_cfg", None), "copy", dict)()
        self.default_preprocess = _card_from_cfg(cfg, body).preprocess if cfg else None
        self._built = built_size(cfg, kwargs)
        self._fixed = bool(cfg.get("fixed_input_size")) and not dynamic
        # a hybrid ViT floors its CNN's map size where the CNN rounds up (wrong token grid, wrong channels): pad
        self._pad_to = max(s for _, s in raw) if any(isinstance(m, HybridEmbed) for m in body.modules()) else 0
        self.pruned: tuple[str, ...] = ()
        self.frozen_stages = frozen_stages
        self._frozen_modules: list[nn.Module] = []
        if frozen_stages:
            modules = [str(i["module"]) for i in info]
            stem = _timm_build.stem_pattern(arch)
            last = max(self.out_indices)
            self._frozen_modules = freeze(self.body, modules, frozen_stages, last=last, stem=stem, name=self.name)

    def train(self, mode: bool = True) -> TimmFeatureExtractor:
        super().train(mode)
        if mode:
            for m in self._frozen_modules:
                m.eval()
        return self

    def adapt_checkpoint(self, state: Mapping[str, Tensor]) -> dict[str, Tensor]:
        """A timm classifier's state dict (timm's own keys, or a :class:`TimmClassifier` file's ``model.`` keys) in
        this extractor's layout: timm's feature wrappers add ``body.`` (``body.model.``) and flatten the first
        level (``stem.0`` -> ``stem_0``). Keys with no place here (the classifier head) are left out; a checkpoint
        of another network leaves this extractor's keys missing, which the loader reports."""
        target = set(self.state_dict())
        if target & set(state):
            return dict(state)
        out: dict[str, Tensor] = {}
        for key, value in state.items():
            for prefix in ("module.", "_orig_mod.", "model."):
                key = key.removeprefix(prefix)
            for candidate in (f"body.{key}", f"body.{key.replace('.', '_', 1)}", f"body.model.{key}"):
                if candidate in target:
                    out[candidate] = value
                    break
        return out

    def forward(self, x: Tensor) -> dict[str, Tensor]:
        if x.dim() != 4:
            raise ValueError(f"{self.name} expects images [B, C, H, W], got shape {tuple(x.shape)}")
        H, W = int(x.shape[-2]), int(x.shape[-1])
        outs, padded = self._run(x, H, W)
        feats: dict[str, Tensor] = {}
        for i, o in zip(self.out_indices, outs):
            spec = self.feature_info[i]
            if self._nhwc and o.dim() == 4:
                o = o.permute(0, 3, 1, 2)
            if o.dim() != 4 or o.shape[1] != spec.channels:
                raise RuntimeError(
                    f"{self.name}: timm returned {spec.name} with shape {tuple(o.shape)} for a {H}x{W} input; its "
                    f"feature_info declares {spec.channels} channels [B, C, H, W]"
                )
            if padded:  # the map of the padded input, cropped to the input's cells
                o = o[..., : -(-H // spec.stride), : -(-W // spec.stride)]
            feats[spec.name] = o
        return align_to_strides(feats, self.specs, x.shape[-2:])

    def _run(self, x: Tensor, H: int, W: int) -> tuple[list[Tensor], bool]:
        """The body's maps for ``x``, and whether they were computed on ``x`` zero-padded to a multiple of the
        largest stride (:class:`TimmFeatureExtractor`)."""
        stride = self._pad_to or max(s.stride for s in self.feature_info)
        padded = (-(-H // stride) * stride, -(-W // stride) * stride, stride)
        first: BaseException | None = None
        if not self._pad_to or padded[:2] == (H, W):
            try:
                return list(self.body(x)), False
            except (RuntimeError, AssertionError) as err:
                if not is_size_error(err) or self._built == (H, W):  # at its own size, the size is not the cause
                    raise
                if padded[:2] == (H, W):
                    raise size_error(self.name, (H, W), err, built=self._built, fixed=self._fixed) from err
                first = err
        try:
            outs = list(self.body(_pad(x, stride)))
        except (RuntimeError, AssertionError) as err:
            if not is_size_error(err):
                raise
            said = first or err
            raise size_error(self.name, (H, W), said, built=self._built, fixed=self._fixed, padded=padded) from err
        self._pad_to = stride  # this network needs it: pad directly from now on
        return outs, True


def _pad(x: Tensor, multiple: int) -> Tensor:
    """``x [B, C, H, W]`` zero-padded at the bottom and right to multiples of ``multiple``."""
    return F.pad(x, (0, -x.shape[-1] % multiple, 0, -x.shape[-2] % multiple))


def _builder(arch: str):
    def build(
        *,
        features: bool = False,
        num_classes: int | None = None,
        out_indices: Sequence[int] | None = None,
        frozen_stages: int = 0,
        norm: str = "bn",
        pretrained: bool | str = False,
        card: WeightsCard | None = None,
        **kwargs: Any,
    ) -> nn.Module:
        if features:
            return TimmFeatureExtractor(
                arch,
                out_indices=out_indices,
                frozen_stages=frozen_stages,
                norm=norm,
                pretrained=pretrained,
                card=card,
                **kwargs,
            )
        from vision.backbones.classifier import TimmClassifier

        extra = {"num_classes": num_classes} if num_classes is not None else {}
        model, dynamic = _timm_build.create(arch, pretrained=pretrained, **extra, **kwargs)
        classes = int(getattr(model, "num_classes", 0))
        categories = list(imagenet_categories()) if classes == 1000 else None
        cfg = getattr(model, "pretrained_cfg", {}) or {}
        if card is None and cfg:
            card = _card_from_cfg(cfg, model)
        return TimmClassifier(
            model,
            card=card,
            name=f"{PREFIX}{arch}",
            categories=categories,
            input_size=built_size(cfg, kwargs),
            fixed_size=bool(cfg.get("fixed_input_size")) and not dynamic,
        )

    build.__name__ = f"timm_{arch}"
    build.__module__ = __name__
    return build


def _card_from_cfg(cfg: dict, model: nn.Module) -> WeightsCard:
    size = tuple(cfg.get("input_size", (3, 224, 224)))[-2:]
    crop_pct = float(cfg.get("crop_pct", 0.875) or 0.875)
    interpolation = cfg.get("interpolation", "bilinear")
    if interpolation not in ("nearest", "bilinear", "bicubic"):
        interpolation = "bilinear"
    hub = cfg.get("hf_hub_id")
    return WeightsCard(
        url=cfg.get("url") or (f"https://huggingface.co/{hub}" if hub else ""),
        sha256=None,
        num_params=sum(p.numel() for p in model.parameters()),
        num_classes=int(cfg.get("num_classes", 0)) or None,
        preprocess=Preprocess(
            input_size=(int(size[0]), int(size[1])),
            resize_size=math.floor(int(size[0]) / crop_pct),
            interpolation=interpolation,
            mean=tuple(cfg.get("mean", (0.485, 0.456, 0.406))),
            std=tuple(cfg.get("std", (0.229, 0.224, 0.225))),
        ),
        license=str(cfg.get("license", "see timm")),
        source=f"timm pretrained config {cfg.get('architecture', '')}.{cfg.get('tag', '')}",
        layout="timm",
    )


_cache: dict[str, Entry] = {}


def _resolve(name: str) -> Entry | None:
    arch = name[len(PREFIX) :]
    if name in _cache:
        return _cache[name]
    import timm

    if not arch or not timm.is_model(arch):
        return None
    entry = Entry(
        name=name,
        builder=_builder(arch),
        tags=frozenset({"classification", "features", "timm", "self-weights"}),
        task="classification",
        source="timm",
    )
    _cache[name] = entry
    return entry


def list_timm(pattern: str = "*") -> list[str]:
    """``timm/<name>`` for every timm architecture matching ``pattern`` (without the prefix)."""
    import timm

    return [PREFIX + n for n in timm.list_models(pattern)]


BACKBONES.register_prefix(PREFIX, _resolve)
