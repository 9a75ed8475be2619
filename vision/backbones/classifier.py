"""Image classification: a registry backbone with its classification head.

``create_model("resnet50", num_classes=10)`` returns an :class:`ImageClassifier`. Its state dict is the torchvision
(or timm) state dict of the same network, so ``model.load_state_dict(torchvision_model.state_dict())`` works, and its
logits equal torchvision's for the same weights.
"""

from __future__ import annotations

from collections.abc import Callable, Mapping
from typing import Any

import numpy as np
import torch
import torch.nn.functional as F
from torch import Tensor, nn

from vision.backbones._base import Family, FeatureSpec, _Adopted
from vision.backbones._timm_layout import is_size_error, size_error
from vision.hub.cards import Preprocess, WeightsCard
from vision.ops.image_range import check_normalised_range
from vision.utils.keys import positive_integer
from vision.utils.parallel import split_batch

__all__ = [
    "EvalTransform",
    "ImageClassifier",
    "TimmClassifier",
    "adopt_classifier",
    "classification_loss",
    "eval_transforms",
]


class EvalTransform:
    """The evaluation preprocessing of a card: ``uint8 [3, H, W]`` (or ``[1, H, W]``, float in [0, 1], or a data
    set's ``uint8 [H, W, C]`` numpy image) -> normalised ``float32 [3, h, w]``.

    Resize the shorter side to ``resize_size`` (antialiased), centre-crop to ``input_size``, scale to [0, 1],
    normalise with ``mean``/``std``. ``predict``, exported files and a classifier's validation split all go through
    it, so a validation score is the score of what ``predict`` sees. Picklable (data-loader workers).
    """

    def __init__(self, preprocess: Preprocess) -> None:
        self.preprocess = preprocess
        self.mean = torch.tensor(preprocess.mean).view(-1, 1, 1)
        self.std = torch.tensor(preprocess.std).view(-1, 1, 1)

    def __call__(self, image: Tensor | np.ndarray) -> Tensor:
        from torchvision.transforms import InterpolationMode
        from torchvision.transforms import functional as TF

        if isinstance(image, np.ndarray) and image.ndim == 3:
            image = torch.from_numpy(np.ascontiguousarray(image)).permute(2, 0, 1)
        if not isinstance(image, Tensor) or image.dim() != 3 or image.shape[0] not in (1, 3):
            shape = tuple(image.shape) if isinstance(image, Tensor | np.ndarray) else type(image).__name__
            raise ValueError(f"eval transform expects an image tensor [3, H, W], got {shape}")
        if image.shape[-2] == 0 or image.shape[-1] == 0:
            raise ValueError(f"image is empty: shape {tuple(image.shape)}")
        if image.shape[0] == 1:
            image = image.expand(3, -1, -1)
        pre = self.preprocess
        mode = InterpolationMode(pre.interpolation)
        x = image.float() / 255.0 if image.dtype == torch.uint8 else image.float()
        if pre.crop:
            x = TF.resize(x, [pre.resize_size], interpolation=mode, antialias=True)
            x = TF.center_crop(x, list(pre.input_size))
        else:
            x = TF.resize(x, list(pre.input_size), interpolation=mode, antialias=True)
        return (x - self.mean) / self.std

    def __repr__(self) -> str:
        return f"EvalTransform({self.preprocess!r})"


def eval_transforms(preprocess: Preprocess) -> Callable[[Tensor], Tensor]:
    """The :class:`EvalTransform` of ``preprocess``: an image ``uint8 [3, H, W]`` (or float in [0, 1]) ->
    ``float32 [3, h, w]``; an image with an empty side raises ``ValueError``."""
    return EvalTransform(preprocess)


def classification_loss(logits: Tensor, labels: Tensor, *, label_smoothing: float = 0.0) -> Tensor:
    """Cross-entropy of ``logits [B, K]`` against integer ``labels [B]``."""
    return F.cross_entropy(logits.float(), labels, label_smoothing=label_smoothing)


class _ClassifierMixin:
    card: WeightsCard | None
    categories: list[str] | None

    def eval_transforms(self) -> Callable[[Tensor], Tensor]:
        """The evaluation preprocessing of the model's card (ImageNet defaults without a card)."""
        return eval_transforms(self.card.preprocess if self.card is not None else Preprocess())

    def loss(
        self, batch: Mapping[str, Tensor] | tuple[Tensor, Tensor], *, label_smoothing: float = 0.0
    ) -> dict[str, Tensor]:
        """Training loss for a batch ``(images [B,3,H,W], labels [B])`` or ``{"images", "labels"}``."""
        images, labels = (batch["images"], batch["labels"]) if isinstance(batch, Mapping) else batch
        logits = self(images)
        losses = {"cls": classification_loss(logits, labels, label_smoothing=label_smoothing)}
        aux = getattr(self, "_aux_logits", None)
        if aux is not None:
            losses["aux"] = 0.4 * classification_loss(aux, labels, label_smoothing=label_smoothing)
            self._aux_logits = None
        return losses

    @torch.no_grad()
    def predict(self, images: Any, *, topk: int = 5, batch: int = 32) -> Any:
        """Classify a normalised batch or any image source.

        Args:
            images: a normalised batch ``[B, 3, H, W]`` (returns, as always, top-k ``(label, name, probability)``
                per image), or a source (:mod:`vision.results`: path, folder, glob, PIL image, ``uint8 [H, W, 3]``
                array, ``[3, H, W]`` tensor, a list of these): preprocessed with :meth:`eval_transforms`, returns one
                :class:`~vision.results.Results` per image (``probs [K]``, ``topk``).
            topk: how many classes to keep per image.
            batch: images per forward pass (sources only).

        Raises:
            ValueError: a batch whose values cannot be a normalised image (e.g. unnormalised 0..255 floats); the
                message says how to convert (``model.eval_transforms()``); an empty batch or image (``image i is
                empty``); ``topk`` or ``batch`` not a positive integer.
        """
        from vision.results import Results, load_sources

        topk, batch = positive_integer("topk", topk), positive_integer("batch", batch)
        was_training = self.training  # type: ignore[attr-defined]
        self.eval()  # type: ignore[attr-defined]
        try:
            if isinstance(images, Tensor) and images.dim() == 4:
                if images.shape[0] == 0:
                    raise ValueError("got a batch of 0 images")
                if images.shape[-2] == 0 or images.shape[-1] == 0:
                    raise ValueError(f"images have an empty side: shape {tuple(images.shape)}")
                pre = self.card.preprocess if self.card is not None else Preprocess()
                check_normalised_range(images, mean=pre.mean, std=pre.std)  # 0..255 floats are refused
                probs = split_batch(self, images).float().softmax(-1)  # type: ignore[arg-type]
                k = min(topk, probs.shape[-1])
                values, indices = probs.topk(k, dim=-1)
                names = self.categories
                return [
                    [(int(i), names[int(i)] if names else str(int(i)), float(v)) for v, i in zip(vs, idx)]
                    for vs, idx in zip(values, indices)
                ]
            loaded = load_sources(images)
            for i, (img, path) in enumerate(loaded):  # as the detectors say it, before any resize divides by zero
                if img.shape[-2] == 0 or img.shape[-1] == 0:
                    raise ValueError(f"image {i}{f' ({path})' if path else ''} is empty: shape {tuple(img.shape)}")
            transform = self.eval_transforms()
            device = next((p.device for p in self.parameters()), torch.device("cpu"))  # type: ignore[attr-defined]
            out = []
            for start in range(0, len(loaded), max(1, int(batch))):
                chunk = loaded[start : start + max(1, int(batch))]
                x = torch.stack([transform(img) for img, _ in chunk]).to(device)
                probs = split_batch(self, x).float().softmax(-1).cpu()  # type: ignore[arg-type]
                out.extend(
                    Results.from_probs(img, p, self.categories, topk=topk, path=path)
                    for (img, path), p in zip(chunk, probs)
                )
            return out
        finally:
            self.train(was_training)  # type: ignore[attr-defined]


_ADOPTED: dict[type, type] = {}


def adopt_classifier(model: nn.Module, *, num_classes: int | None = None) -> nn.Module:
    """Give a plain classification module (``images [B, 3, H, W] -> logits [B, K]``, e.g. a plugin's own network) the
    interface of the zoo's classifiers, in place: ``loss``, ``predict``, ``eval_transforms`` and the ``card``,
    ``categories`` and ``num_classes`` attributes. Its class becomes a subclass of its own class and the mixin, so
    its forward, its own methods (a ``loss`` it has wins) and its state dict are unchanged. A model that already has
    the interface is returned as it is.

    Example:
        >>> net = adopt_classifier(MyNet(), num_classes=10)  # now trains, predicts and exports like resnet18
    """
    if isinstance(model, _ClassifierMixin) or all(hasattr(model, m) for m in ("loss", "predict", "eval_transforms")):
        return model
    cls = type(model)
    if cls not in _ADOPTED:
        attrs = {"__module__": cls.__module__, "__qualname__": cls.__qualname__, "__doc__": cls.__doc__}
        _ADOPTED[cls] = type(cls.__name__, (cls, _ClassifierMixin), attrs)
    model.__class__ = _ADOPTED[cls]
    for name in ("card", "categories"):
        if not hasattr(model, name):
            setattr(model, name, None)
    if num_classes is not None and not hasattr(model, "num_classes"):
        model.num_classes = int(num_classes)
    return model


class ImageClassifier(_ClassifierMixin, _Adopted):
    """A classifier over a staged network: ``forward(x [B, 3, H, W] normalised) -> logits [B, num_classes]``.

    ``forward_features(x)`` returns every stage's feature map by spec name (``feature_info`` declares them), so the
    same object serves as a classifier and as a feature trunk.

    Example:
        >>> model = vision.create_model("resnet18.tv_in1k").eval()
        >>> x = model.eval_transforms()(image_uint8)[None]
        >>> model.predict(x, topk=3)
    """

    def __init__(
        self,
        net: nn.Module,
        family: Family,
        *,
        num_classes: int,
        card: WeightsCard | None = None,
        name: str = "",
        categories: list[str] | None = None,
    ) -> None:
        super().__init__()
        self.stages = family.stages(net)
        self._adopt(net, family, ())
        self.feature_info: list[FeatureSpec] = [s.spec for s in self.stages]
        self.num_classes = num_classes
        self.card = card
        self.name = name
        self.categories = categories
        self._aux_logits: Tensor | None = None

    def forward_features(self, x: Tensor) -> dict[str, Tensor]:
        outs = self._run_stages(x, len(self.stages) - 1)
        return {s.spec.name: o for s, o in zip(self.stages, outs)}

    def forward(self, x: Tensor) -> Tensor:
        outs = self._run_stages(x, len(self.stages) - 1)
        return self.family.head(self, outs)


class TimmClassifier(_ClassifierMixin, nn.Module):
    """A timm model as a classifier: ``forward(x [B, 3, H, W] normalised) -> logits [B, num_classes]``; the timm model
    is the child ``model`` (its keys carry ``model.``).

    ``classifier_prefixes`` are the keys of timm's classifier (its pretrained config's ``classifier``, e.g.
    ``model.fc.``), so a weights file with another number of classes loads with its head dropped and a warning, as
    for the built-in classifiers. Models that take any input size (ViT, Swin: built with timm's
    ``dynamic_img_size``) do; a size the model refuses raises ``ValueError`` naming the model, the size and what it
    needs (``input_size``, the size it is built for, when it is ``fixed_size``).
    """

    def __init__(
        self,
        model: nn.Module,
        *,
        card: WeightsCard | None,
        name: str,
        categories: list[str] | None,
        input_size: tuple[int, int] = (224, 224),
        fixed_size: bool = False,
    ) -> None:
        super().__init__()
        self.model = model
        self.card = card
        self.name = name
        self.categories = categories
        self.num_classes = int(getattr(model, "num_classes", 0))
        self.feature_info = []
        cfg = getattr(model, "pretrained_cfg", None) or getattr(model, "default_cfg", None) or {}
        heads = cfg.get("classifier") or ()
        heads = (heads,) if isinstance(heads, str) else tuple(heads)
        self.classifier_prefixes = tuple(f"model.{h}." for h in heads)
        self.input_size = (int(input_size[0]), int(input_size[1]))
        self.fixed_size = fixed_size

    def forward(self, x: Tensor) -> Tensor:
        if x.dim() != 4:
            raise ValueError(f"{self.name}: expected images [B, C, H, W], got shape {tuple(x.shape)}")
        try:
            return self.model(x)
        except (RuntimeError, AssertionError) as err:
            size = (int(x.shape[-2]), int(x.shape[-1]))
            if not is_size_error(err) or size == self.input_size:  # at its own size, the size is not the cause
                raise
            raise size_error(self.name, size, err, built=self.input_size, fixed=self.fixed_size) from err

    def forward_features(self, x: Tensor) -> Any:
        return self.model.forward_features(x)
