"""Inception v3 over torchvision's implementation.

Paper: https://arxiv.org/abs/1512.00567.

Stages end at each stride change: ``C1`` (64 ch, after Conv2d_2b), ``C2`` (192, after Conv2d_4a), ``C3`` (288, after
Mixed_5d), ``C4`` (768, after Mixed_6e), ``C5`` (2048, after Mixed_7c). Inception's unpadded convolutions make the
raw maps a little smaller than H/stride (299 px -> 8x8 at stride 32); the strides are nominal and the extractor
returns each map at ``ceil(H/stride)`` (:mod:`vision.backbones._base`).

Input sizes: the unpadded layers need at least 75 px per side to reach ``C5`` (torchvision's own limit; 43 for
``C4``, 27 for ``C3``, 19 for ``C2``, 7 for ``C1``); a smaller input raises ``ValueError`` naming the size. In
training mode the classifier also computes the auxiliary logits on the ``C4`` map (kept for
:meth:`ImageClassifier.loss`), as torchvision's model does. The auxiliary head's 5x5 pool and 5x5 convolution need a
17x17 ``C4`` map (a 299 px input); below that the map is resized (bilinear) to at least 17x17 for the auxiliary head
only, so training works at any size the trunk takes (and every parameter gets a gradient, as DDP wants), and at
299 px and more the auxiliary logits are torchvision's.
"""

from __future__ import annotations

import torch
from torch import Tensor, nn
from torch.nn import functional as F
from torchvision import models as tvm

from vision.backbones._base import Family, stages_from
from vision.backbones._factory import register_variant
from vision.backbones._torchvision import tv_cards

__all__: list[str] = []

_GROUPS = (
    ("Conv2d_1a_3x3", "Conv2d_2a_3x3", "Conv2d_2b_3x3"),
    ("maxpool1", "Conv2d_3b_1x1", "Conv2d_4a_3x3"),
    ("maxpool2", "Mixed_5b", "Mixed_5c", "Mixed_5d"),
    ("Mixed_6a", "Mixed_6b", "Mixed_6c", "Mixed_6d", "Mixed_6e"),
    ("Mixed_7a", "Mixed_7b", "Mixed_7c"),
)


#: the smallest input side that reaches each stage (C1 ... C5) through the unpadded convolutions and pools
_MIN_SIDE = (7, 19, 27, 43, 75)
#: the auxiliary head's input: 17x17 at 299 px, the least its 5x5 pool (stride 3) and 5x5 convolution take
_AUX_SIDE = 17


def _transform_input(m: nn.Module, x: Tensor) -> Tensor:
    """torchvision's ``transform_input``: ImageNet-normalised input -> the (x - 0.5) / 0.5 the Google weights want.
    Checks first that the input reaches the deepest stage the module runs (``_MIN_SIDE``)."""
    need = _MIN_SIDE[len(m.stages) - 1]
    if x.shape[-2] < need or x.shape[-1] < need:
        raise ValueError(
            f"inception_v3 needs inputs of at least {need}x{need} px to reach {m.stages[-1].spec.name} (its unpadded "
            f"convolutions), got {x.shape[-2]}x{x.shape[-1]}"
        )
    if not m.transform_input:
        return x
    x0 = x[:, 0:1] * (0.229 / 0.5) + (0.485 - 0.5) / 0.5
    x1 = x[:, 1:2] * (0.224 / 0.5) + (0.456 - 0.5) / 0.5
    x2 = x[:, 2:3] * (0.225 / 0.5) + (0.406 - 0.5) / 0.5
    return torch.cat((x0, x1, x2), 1)


def _head(m: nn.Module, outs: list[Tensor]) -> Tensor:
    aux = getattr(m, "AuxLogits", None)
    if m.training and aux is not None:
        c4 = outs[3]
        h, w = c4.shape[-2:]
        if h < _AUX_SIDE or w < _AUX_SIDE:  # below 299 px: resized for the auxiliary head only
            c4 = F.interpolate(c4, size=(max(h, _AUX_SIDE), max(w, _AUX_SIDE)), mode="bilinear", align_corners=False)
        m._aux_logits = aux(c4)
    x = torch.flatten(m.dropout(m.avgpool(outs[-1])), 1)
    return m.fc(x)


def _make(*, num_classes: int, **kwargs) -> nn.Module:
    kwargs.setdefault("init_weights", True)
    return tvm.inception_v3(num_classes=num_classes, **kwargs)


FAMILY = Family(
    stages=lambda net: stages_from(_GROUPS, (64, 192, 288, 768, 2048), (2, 4, 8, 16, 32)),
    head_modules=("AuxLogits", "avgpool", "dropout", "fc"),
    head=_head,
    classifier=("fc.", "AuxLogits.fc."),
    preprocess_input=_transform_input,
    attributes=("transform_input",),
)

_cards, _default = tv_cards("inception_v3", transform_input=True)
register_variant("inception_v3", _make, FAMILY, cards=_cards, default=_default)
