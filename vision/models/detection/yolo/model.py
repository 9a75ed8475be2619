"""YOLO: an anchor-free, one-stage detector: backbone -> PAN-FPN -> decoupled head over P3-P5 (strides 8/16/32).

Papers and published descriptions it is written from: anchor-free dense prediction (FCOS
https://arxiv.org/abs/1904.01355, YOLOX https://arxiv.org/abs/2107.08430), distribution focal loss (Generalized Focal
Loss https://arxiv.org/abs/2006.04388), task-aligned assignment (TOOD https://arxiv.org/abs/2108.07755), Complete-IoU
(https://arxiv.org/abs/1911.08287), and the publicly described YOLOv8 layout (C2f blocks, SPPF, decoupled head). The
code is our own.

Parts (each declares its shapes): :class:`~vision.backbones.csp_darknet.CSPDarknet` (or any registered backbone) ->
:class:`~vision.necks.pafpn.PAFPN` -> :class:`~vision.models.detection.yolo.head.YOLOHead`. Training: task-aligned
assigner (:mod:`vision.models.detection.yolo.assigner`), CIoU + DFL + BCE losses
(:mod:`vision.models.detection.yolo.loss`). Inference: letterbox to a multiple of 32 at ``imgsz``, decode,
:func:`vision.ops.multiclass_nms` (sync-free on CUDA), boxes mapped back to each input image.

Label space: ``num_classes = K`` object classes, labels ``0..K-1`` (no background class).

Registered models: ``yolo_n``, ``yolo_s``, ``yolo_m``, ``yolo_l`` (own CSP-Darknet backbone; parameters and FLOPs of
the common YOLOv8 sizes, checked by ``tests/yolo/test_models.py``), and ``yolo(backbone=NAME, size="n"|"s"|"m"|"l")``
over any registered backbone (``resnet50``, ``efficientnet_b0``, ``vgg16``, ``timm/<name>`` ...; its stride-8/16/32
features feed a PAN-FPN of the size's widths).

Example:
    >>> model = vision.create_model("yolo_n", num_classes=3).eval()
    >>> detections = model([torch.rand(3, 480, 640)])  # list of {"boxes" [N, 4] xyxy pixels, "scores", "labels"}
    >>> model.train()
    >>> losses = model.loss(torch.rand(2, 3, 320, 320), [{"boxes": b0, "labels": l0}, {"boxes": b1, "labels": l1}])
"""

from __future__ import annotations

import contextlib
from collections import OrderedDict
from collections.abc import Hashable, Mapping, Sequence
from typing import Any

import torch
from torch import Tensor, nn

from vision.hub.cards import WeightsCard
from vision.models._predict import detection_predict
from vision.models.detection.common import Detections, check_targets
from vision.models.detection.yolo.decode import decode_boxes, make_anchors
from vision.models.detection.yolo.head import YOLOHead
from vision.models.detection.yolo.loss import yolo_loss
from vision.models.detection.yolo.postprocess import (
    GraphedCall,
    as_float_images,
    cached,
    example_input,
    letterbox,
    pad_to_stride,
    split_detections,
    unletterbox,
)
from vision.ops import multiclass_nms, pad_targets
from vision.utils.fusion import FoldedCopy, fuse_conv_bn
from vision.utils.parallel import split_batch

__all__ = ["YOLO"]

Targets = Sequence[Mapping[str, Tensor]] | Mapping[str, Tensor]


class YOLO(nn.Module):
    """Anchor-free one-stage detector (see the module docstring).

    Args:
        backbone: returns named features (``forward(x) -> dict``) declared by ``specs`` (strides 8, 16, 32, ...).
        neck: maps them to the head's levels; declares ``specs``.
        head: :class:`~vision.models.detection.yolo.head.YOLOHead` over the neck's specs.
        imgsz: inference size: the longer image side is scaled to it, the canvas padded to a multiple of the largest
            stride.
        mean, std: input normalisation applied inside the model to images in [0, 1] (``None``: none, as the
            CSP-Darknet is trained on raw [0, 1] input; ImageNet statistics for pretrained registry backbones).
        score_threshold, iou_threshold, max_det, pre_nms_topk: post-processing defaults (class score above the
            threshold; per-class NMS; detections kept per image; candidates entering NMS per image).
        gains: loss weights of the box (CIoU), classification and DFL terms.
        assigner_topk, alpha, beta: task-aligned assigner parameters.
        categories: class names, ``len == num_classes``.
        card: the weight card the model was built for (kept as :attr:`card`; ``None`` for random weights).

    Calls:
        - ``model(images)`` in eval mode, or ``model.predict(images)``: ``images`` is a float ``[B, 3, H, W]`` tensor
          or a list of ``[3, H_i, W_i]`` tensors, RGB in [0, 1], any size; returns one dict per image: ``boxes`` float32
          ``[N, 4]`` xyxy in that image's pixels, ``scores`` ``[N]``, ``labels`` int64 ``[N]`` in ``[0, K)``.
        - ``model.loss(images, targets)`` (or ``model(images, targets)`` in train mode): ``images`` as above, not
          resized (padded at the right/bottom to a multiple of 32 if needed); ``targets`` a list of ``{"boxes" float32
          [N_i, 4] xyxy pixels, "labels" int64 [N_i] in [0, K)}`` or already padded ``{"boxes" [B, M, 4], "labels"
          [B, M], "valid" bool [B, M]}`` (:func:`vision.data.pad_targets`, avoids the per-batch padding);
          returns ``{"box", "cls", "dfl"}`` scalar losses (gains applied). A label outside ``[0, K)`` (on a valid
          row), a box count differing from the label count, or a missing key raises ``ValueError`` naming the
          target.
    """

    #: the trainer keeps it channels_last on the CPU too (``channels_last=auto``): ~15% faster steps there
    prefers_channels_last = True

    #: ``loss`` also takes padded targets (``{"boxes" [B, M, 4], "labels" [B, M], "valid" [B, M]}``)
    accepts_padded_targets = True
    #: labels are ``0..K-1`` (no background class)
    background_class = False

    def __init__(
        self,
        backbone: nn.Module,
        neck: nn.Module,
        head: YOLOHead,
        *,
        imgsz: int = 640,
        mean: Sequence[float] | None = None,
        std: Sequence[float] | None = None,
        score_threshold: float = 0.001,
        iou_threshold: float = 0.7,
        max_det: int = 300,
        pre_nms_topk: int | None = 10000,
        gains: Sequence[float] = (7.5, 0.5, 1.5),
        assigner_topk: int = 10,
        alpha: float = 0.5,
        beta: float = 6.0,
        categories: Sequence[str] | None = None,
        name: str = "yolo",
        card: WeightsCard | None = None,
    ) -> None:
        super().__init__()
        self.backbone, self.neck, self.head = backbone, neck, head
        self.num_classes = head.num_classes
        self.reg_max = head.reg_max
        self.strides = list(head.strides)
        self.size_divisibility = max(max(self.strides), int(getattr(backbone, "size_divisibility", 1)))
        self.imgsz = int(imgsz)
        self.score_threshold, self.iou_threshold = float(score_threshold), float(iou_threshold)
        self.max_det, self.pre_nms_topk = int(max_det), pre_nms_topk
        self.gains = tuple(float(g) for g in gains)
        self.assigner_topk, self.alpha, self.beta = int(assigner_topk), float(alpha), float(beta)
        if categories is not None and len(categories) != self.num_classes:
            raise ValueError(f"{len(categories)} categories for num_classes={self.num_classes}")
        self.categories = list(categories) if categories is not None else None
        self.name = name
        self.card = card
        if (mean is None) != (std is None):
            raise ValueError("give both mean and std, or neither")
        self.normalize = mean is not None
        self.register_buffer("mean", torch.tensor(mean or (0.0,) * 3).view(1, 3, 1, 1), persistent=False)
        self.register_buffer("std", torch.tensor(std or (1.0,) * 3).view(1, 3, 1, 1), persistent=False)
        self._anchors: OrderedDict[Hashable, tuple[Tensor, Tensor]] = OrderedDict()
        self._graphs: OrderedDict[Hashable, GraphedCall] = OrderedDict()
        self._is_channels_last: bool | None = None  # memory format of the first convolution, read once
        self._fused = FoldedCopy()
        self.channels_last_inference = True  #: the folded copy runs channels_last (faster on the CPU and CUDA)

    # ------------------------------------------------------------------------------------------------- network
    def forward_raw(self, x: Tensor, *, fused: bool = False) -> tuple[Tensor, Tensor, list[tuple[int, int]]]:
        """Head outputs for a prepared batch ``x [B, 3, H, W]`` in [0, 1] (``H, W`` multiples of the stride):
        ``(box_logits [B, N, 4 * reg_max], cls_logits [B, N, K], level shapes)``; ``fused=True`` (eval mode, no
        autograd): through :meth:`fused_network` (channels_last if :attr:`channels_last_inference`), same outputs."""
        if self.normalize:
            x = (x - self.mean) / self.std
        if fused and not self.training and not torch.is_grad_enabled():
            cl = torch.channels_last if self.channels_last_inference else torch.contiguous_format
            return self.fused_network()(x.contiguous(memory_format=cl))
        return self.head(self.neck(self.backbone(x)))

    def fused_network(self) -> nn.Module:
        """``backbone -> neck -> head`` with every ``Conv2d -> BatchNorm2d`` pair folded, any backbone (a
        :class:`~vision.utils.fusion.FoldedCopy`: outside the module tree, remade when a weight changes)."""
        x = example_input(self.mean, self.size_divisibility)
        cl, modules = self.channels_last_inference, [self.backbone, self.neck, self.head]
        return self._fused.get(modules, example=x, channels_last=cl, on_remake=self._graphs.clear)

    def anchors(self, shapes: Sequence[tuple[int, int]], device: torch.device) -> tuple[Tensor, Tensor]:
        """Anchor points ``[N, 2]`` (pixels) and strides ``[N]`` for the level shapes (the last :data:`CACHE_SIZE`
        shapes are cached)."""
        return cached(
            self._anchors,
            (tuple(shapes), device),
            lambda: make_anchors(shapes, self.strides, device=device, dtype=torch.float32),
        )

    def forward(self, images: Tensor | Sequence[Tensor], targets: Targets | None = None) -> Any:
        """Eval mode: :meth:`predict`. Train mode: :meth:`loss` with ``targets``, raw head outputs without."""
        if not self.training:
            return self.predict(images)
        if targets is not None:
            return self.loss(images, targets)
        return self.forward_raw(pad_to_stride(as_float_images(images), stride=self.size_divisibility))

    # ------------------------------------------------------------------------------------------------- training
    def loss(self, images: Tensor | Sequence[Tensor], targets: Targets) -> dict[str, Tensor]:
        """Training losses ``{"box", "cls", "dfl"}`` (see the class docstring for the input contract)."""
        x = pad_to_stride(as_float_images(images, check_range=False), stride=self.size_divisibility)
        gt = self._padded_targets(targets, x.shape[0], x.device)
        box_logits, cls_logits, shapes = self.forward_raw(x)
        points, strides = self.anchors(shapes, x.device)
        with torch.autocast(x.device.type, enabled=False):  # assignment and losses in float32 under any autocast
            losses, _ = yolo_loss(
                box_logits.float(),
                cls_logits.float(),
                points,
                strides,
                gt["labels"].to(x.device),
                gt["boxes"].to(x.device, torch.float32),
                gt["valid"].to(x.device),
                reg_max=self.reg_max,
                gains=self.gains,  # type: ignore[arg-type]
                topk=self.assigner_topk,
                alpha=self.alpha,
                beta=self.beta,
            )
        return losses

    def _padded_targets(self, targets: Targets, num_images: int, device: torch.device) -> dict[str, Tensor]:
        """Validated padded targets on ``device``: ``{"boxes" float32 [B, M, 4], "labels" int64 [B, M], "valid" bool
        [B, M]}``; ``ValueError`` naming the target at fault (one host synchronisation for the label range)."""
        if isinstance(targets, Mapping):
            missing = [k for k in ("boxes", "labels", "valid") if k not in targets]
            if missing:
                raise ValueError(
                    f"padded targets miss the keys {missing} (need 'boxes' [B, M, 4], 'labels' [B, M], 'valid' "
                    f"[B, M], as vision.ops.pad_targets makes them); got keys {sorted(targets)}"
                )
            boxes, labels, valid = (torch.as_tensor(targets[k]) for k in ("boxes", "labels", "valid"))
            B = num_images
            if boxes.dim() != 3 or boxes.shape[0] != B or boxes.shape[-1] != 4:
                raise ValueError(f"padded targets: 'boxes' must be [B={B}, M, 4], got {tuple(boxes.shape)}")
            M = boxes.shape[1]
            for key, value in (("labels", labels), ("valid", valid)):
                if tuple(value.shape) != (B, M):
                    raise ValueError(f"padded targets: {key!r} must be [B={B}, M={M}], got {tuple(value.shape)}")
            if labels.is_floating_point() or labels.is_complex():
                raise TypeError(f"padded targets: 'labels' must be an integer tensor, got {labels.dtype}")
            gt = {
                "boxes": boxes.to(device, torch.float32),
                "labels": labels.to(device, torch.int64),
                "valid": valid.to(device, torch.bool),
            }
        else:
            gt = pad_targets(check_targets(targets, num_images), device=device)
        wrong = gt["valid"] & ((gt["labels"] < 0) | (gt["labels"] >= self.num_classes))
        if bool(wrong.any()):
            image = int(wrong.any(1).nonzero()[0, 0])
            bad = gt["labels"][image][wrong[image]].unique().tolist()
            raise ValueError(
                f"target {image}: labels {bad} are outside [0, {self.num_classes}) (num_classes={self.num_classes}; "
                "YOLO labels are the data-set labels 0..K-1, no background class)"
            )
        return gt

    # ------------------------------------------------------------------------------------------------- inference
    def detect(
        self, x: Tensor, *, score_threshold: float, iou_threshold: float, max_det: int, amp: bool
    ) -> tuple[Tensor, Tensor, Tensor, Tensor]:
        """Fixed-shape detection on a prepared batch ``x [B, 3, H, W]`` (no host sync on CUDA): ``(boxes [B, max_det,
        4] on the canvas, scores [B, max_det], labels [B, max_det], counts [B])``, padded as
        :func:`vision.ops.multiclass_nms` returns them. On the CPU, slices of the batch run in parallel threads
        (:func:`vision.utils.parallel.split_batch`: no per-operator barrier between the cores)."""
        if x.device.type == "cpu":
            return split_batch(
                lambda part: self._detect(
                    part, score_threshold=score_threshold, iou_threshold=iou_threshold, max_det=max_det, amp=False
                ),
                x,
            )
        return self._detect(x, score_threshold=score_threshold, iou_threshold=iou_threshold, max_det=max_det, amp=amp)

    def _detect(
        self, x: Tensor, *, score_threshold: float, iou_threshold: float, max_det: int, amp: bool
    ) -> tuple[Tensor, Tensor, Tensor, Tensor]:
        bf16 = amp and x.is_cuda
        with torch.autocast("cuda", dtype=torch.bfloat16, cache_enabled=False) if bf16 else contextlib.nullcontext():
            box_logits, cls_logits, shapes = self.forward_raw(x, fused=True)
        points, strides = self.anchors(shapes, x.device)
        with torch.autocast(x.device.type, enabled=False):  # decoding and NMS in float32 under any autocast
            boxes = decode_boxes(box_logits.float(), points, strides, self.reg_max)
            scores = cls_logits.float().sigmoid()
            return multiclass_nms(
                boxes,
                scores,
                score_threshold=score_threshold,
                iou_threshold=iou_threshold,
                max_det=max_det,
                pre_nms_topk=self.pre_nms_topk,
            )[:4]

    @detection_predict
    @torch.no_grad()
    def predict(
        self,
        images: Tensor | Sequence[Tensor],
        *,
        score_threshold: float | None = None,
        iou_threshold: float | None = None,
        max_det: int | None = None,
        imgsz: int | None = None,
        amp: bool | None = None,
        cuda_graph: bool = False,
    ) -> list[Detections]:
        """Detect objects in images of any size (see the class docstring for the contract).

        Args:
            images: float ``[B, 3, H, W]`` or a list of ``[3, H_i, W_i]``, RGB in [0, 1] (moved to the model's device).
            score_threshold, iou_threshold, max_det: override the model's post-processing defaults.
            imgsz: override the inference size (the longer side; any value, rounded up to the stride).
            amp: bf16 autocast for the network on CUDA (default: on for CUDA; always off on the CPU). Decoding and NMS
                run in float32.
            cuda_graph: letterbox to the fixed square ``imgsz`` canvas and replay the network + decoding + NMS as one
                CUDA graph, captured on the first call for each input shape (CUDA only; ignored elsewhere).

        Returns:
            One dict per image: ``boxes`` float32 ``[N, 4]`` xyxy pixels of that image, ``scores`` float32 ``[N]``
            (sorted decreasing), ``labels`` int64 ``[N]`` in ``[0, num_classes)``.

        Example:
            >>> dets = model.predict(batch, cuda_graph=True)  # batch: [32, 3, 480, 640] on CUDA
        """
        was_training = self.training
        if was_training:
            self.eval()
        try:
            device = self.mean.device
            imgs = as_float_images(images)
            imgs = imgs.to(device) if isinstance(imgs, Tensor) else [im.to(device) for im in imgs]
            graph = cuda_graph and device.type == "cuda"
            x, info, sizes = letterbox(imgs, size=imgsz or self.imgsz, stride=self.size_divisibility, fixed=graph)
            if self._channels_last():
                x = x.contiguous(memory_format=torch.channels_last)
            opts = {
                "score_threshold": self.score_threshold if score_threshold is None else float(score_threshold),
                "iou_threshold": self.iou_threshold if iou_threshold is None else float(iou_threshold),
                "max_det": self.max_det if max_det is None else int(max_det),
                "amp": device.type == "cuda" if amp is None else bool(amp),
            }
            if graph:
                boxes, scores, labels, counts = self._graphed(x, opts)(x)
            else:
                boxes, scores, labels, counts = self.detect(x, **opts)
            return split_detections(unletterbox(boxes.float(), info, sizes), scores, labels, counts)
        finally:
            if was_training:
                self.train()

    def _channels_last(self) -> bool:
        """Whether the weights are channels_last (read from the first convolution once; ``_apply`` and
        :meth:`fuse` forget it)."""
        if self._is_channels_last is None:
            first = next((m.weight for m in self.modules() if isinstance(m, nn.Conv2d)), None)
            self._is_channels_last = bool(
                first is not None and first.is_contiguous(memory_format=torch.channels_last) and first.shape[-1] > 1
            )
        return self._is_channels_last

    def _graphed(self, x: Tensor, opts: dict[str, Any]) -> GraphedCall:
        """The CUDA graph of :meth:`detect` for this input shape and options (the last :data:`CACHE_SIZE` kept)."""
        key = (tuple(x.shape), x.dtype, x.device, tuple(sorted(opts.items())))
        return cached(self._graphs, key, lambda: GraphedCall(lambda inp: self.detect(inp, **opts), x))

    @torch.no_grad()
    def fuse(self) -> YOLO:
        """Fold every batch norm that follows a convolution into it, in place (any backbone; changes the state-dict
        keys). Eval-mode inference already runs a folded copy (:meth:`fused_network`): this only saves its memory."""
        x = example_input(self.mean, self.size_divisibility)
        fuse_conv_bn(self, lambda: self.forward_raw(x))
        self._graphs.clear()
        self._fused.clear()
        self._is_channels_last = None
        return self

    # ------------------------------------------------------------------------------------------------- housekeeping
    def train(self, mode: bool = True) -> YOLO:
        if mode:
            self._graphs.clear()
            self._fused.clear()
        return super().train(mode)

    def _apply(self, fn: Any, recurse: bool = True) -> YOLO:
        self._graphs.clear()
        self._anchors.clear()
        self._is_channels_last = None
        self._fused.clear()
        return super()._apply(fn, recurse)

    def __getstate__(self) -> dict[str, Any]:  # deepcopy (EMA) and pickling skip the caches
        state = dict(self.__dict__)
        state.update(_graphs=OrderedDict(), _anchors=OrderedDict(), _is_channels_last=None, _fused=FoldedCopy())
        return state

    def extra_repr(self) -> str:
        return f"name={self.name!r}, num_classes={self.num_classes}, strides={self.strides}, imgsz={self.imgsz}"
