"""Any timm model as a backbone or classifier: ``timm/<timm name>`` (e.g. ``timm/convnext_tiny``).

Paper list: https://github.com/huggingface/pytorch-image-models#models.

- ``create_backbone("timm/<name>")`` uses timm's own ``features_only`` extraction (every timm model that supports it);
  the declared specs come from timm's ``feature_info``. Features are named ``C{log2 stride}`` when the strides are
  distinct powers of two, else ``C{i}_s{stride}`` (:func:`~vision.backbones._base.level_names`).
- Any input size: models with a dynamic image size (ViT, DeiT, EVA ...) are built with timm's
  ``dynamic_img_size=True, dynamic_img_pad=True`` (position embeddings interpolated to the input's patch grid, the
  input padded to the patch size), and every level is returned at ``ceil(H/stride) x ceil(W/stride)`` like every
  other backbone. A single-scale model (every level at one stride, e.g. a plain ViT) returns its last block by
  default; the detectors put a simple feature pyramid (:mod:`vision.necks.simple_pyramid`) on it.
- ``create_model("timm/<name>", num_classes=...)`` wraps the timm classifier (:class:`TimmClassifier`).
- Pretrained weights: ``weights=True`` or a timm tag (``timm/resnet50.a1_in1k``) are fetched by timm itself from the
  Hugging Face hub, whose client verifies each file against the hub's SHA-256; ``weights=<path>`` loads a local file
  through :func:`vision.load_weights` like any other model.
"""

from __future__ import annotations

import math
from collections.abc import Mapping, Sequence
from typing import Any

from torch import Tensor, nn

from vision.backbones._base import FeatureInfoMixin, FeatureSpec, align_to_strides, freeze_batch_norm, level_names
from vision.hub.cards import Preprocess, WeightsCard, imagenet_categories
from vision.registry import BACKBONES, Entry

__all__ = ["TimmFeatureExtractor"]

PREFIX = "timm/"


class TimmFeatureExtractor(FeatureInfoMixin, nn.Module):
    """A timm ``features_only`` network with the :class:`~vision.backbones.FeatureExtractor` interface.

    ``forward(x [B, 3, H, W]) -> dict[name, Tensor]``; the timm network is the child ``body``.
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
        import timm

        name = _timm_name(arch, pretrained)

        dynamic = {"dynamic_img_size": True, "dynamic_img_pad": True}
        if any(k in kwargs for k in (*dynamic, "img_size")):
            dynamic = {}

        def make(indices: Sequence[int] | None) -> nn.Module:
            nonlocal dynamic
            extra = {"out_indices": tuple(indices)} if indices is not None else {}
            if dynamic:
                try:  # only models with position embeddings take these
                    return timm.create_model(
                        name, pretrained=bool(pretrained), features_only=True, **extra, **dynamic, **kwargs
                    )
                except TypeError:
                    dynamic = {}
            return timm.create_model(name, pretrained=bool(pretrained), features_only=True, **extra, **kwargs)

        wanted = None if out_indices is None else tuple(int(i) for i in out_indices)
        body = make(wanted if wanted is None or min(wanted) >= 0 else None)
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
        if norm not in ("bn", "frozen_bn"):
            raise ValueError(f"norm must be 'bn' or 'frozen_bn', got {norm!r}")
        if not 0 <= frozen_stages <= n:
            raise ValueError(f"frozen_stages must be in [0, {n}], got {frozen_stages}")
        self.out_indices = tuple(sorted(resolved))
        if tuple(body.feature_info.out_indices) != self.out_indices:
            body = make(self.out_indices)
        self.body = body
        if norm == "frozen_bn":
            self.body = freeze_batch_norm(self.body)
        self.card = card
        cfg = getattr(getattr(body, "pretrained_cfg", None) or getattr(body, "default_cfg", None), "copy", dict)()
        self.default_preprocess = _card_from_cfg(cfg, body).preprocess if cfg else None
        self.name = f"{PREFIX}{arch}"
        self.pruned: tuple[str, ...] = ()
        self.frozen_stages = frozen_stages
        self._frozen_modules: list[nn.Module] = []
        if frozen_stages:
            module_names = [i["module"].replace(".", "_") for i in info]
            last = module_names[frozen_stages - 1]
            for child_name, child in self.body.named_children():
                self._frozen_modules.append(child)
                for p in child.parameters():
                    p.requires_grad_(False)
                if child_name == last or child_name == last.split("_")[0]:
                    break

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
        outs = self.body(x)
        feats = {self.feature_info[i].name: o for i, o in zip(self.out_indices, outs)}
        return align_to_strides(feats, self.specs, x.shape[-2:])


def _timm_name(arch: str, pretrained: bool | str) -> str:
    if isinstance(pretrained, str) and pretrained not in ("", "True"):
        return f"{arch}.{pretrained}"
    return arch


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
        import timm

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
        model = timm.create_model(_timm_name(arch, pretrained), pretrained=bool(pretrained), **extra, **kwargs)
        classes = int(getattr(model, "num_classes", 0))
        categories = list(imagenet_categories()) if classes == 1000 else None
        cfg = getattr(model, "pretrained_cfg", {}) or {}
        if card is None and cfg:
            card = _card_from_cfg(cfg, model)
        return TimmClassifier(model, card=card, name=f"{PREFIX}{arch}", categories=categories)

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
