"""Knowledge distillation for YOLO detectors: class-score distillation on the assigned anchors, plus optional
feature imitation on the neck levels.

- **Class scores**: the student's class probabilities learn the teacher's, softened by ``T``: ``T^2 * BCE(sigmoid(s
  / T), sigmoid(t / T))`` summed over classes, on the anchors where an object is: each anchor weighs ``max(positive,
  teacher's top probability, student's top probability)`` (1 on the anchors the task-aligned assigner makes positive
  for the student; elsewhere as much as either detector believes in an object there, so the teacher also corrects
  the student's false positives and confirms objects the assignment missed; the thousands of empty background
  anchors weigh ~0), averaged with these weights, times ``distill.alpha`` (the student keeps its own box, class and
  DFL losses). Both detectors see the same prepared batch, so their anchors coincide (same strides 8/16/32).
- **Feature imitation** (``distill.features > 0``; FitNets https://arxiv.org/abs/1412.6550): each student neck
  level goes through a 1x1 convolution to the teacher's width and matches the teacher's level (standardised per
  level) in mean squared error. The adapters live in the student as ``distill_adapters`` so the optimiser, EMA, DDP and
  resume see them; :func:`vision.load_model` drops them, so the trained detector is the plain student.

Teacher and student may have different backbones and widths (``yolo_s`` -> ``yolo_n``, ``yolo(backbone=resnet50)``
-> ``yolo_n``); they must share the class count.
"""

from __future__ import annotations

from typing import Any

import torch
import torch.nn.functional as F
from torch import Tensor, nn

from vision.models.detection.yolo.loss import yolo_loss
from vision.models.detection.yolo.postprocess import as_float_images, pad_to_stride
from vision.tasks._distill import distill_options, load_teacher

__all__ = ["ADAPTERS", "YoloDistiller", "score_kd_loss"]

#: the student's submodule holding the feature adapters (dropped when the trained weights are loaded)
ADAPTERS = "distill_adapters"


def score_kd_loss(student: Tensor, teacher: Tensor, mask: Tensor, *, temperature: float) -> Tensor:
    """Soft class-score loss on the masked anchors.

    Args:
        student, teacher: class logits ``[B, N, K]``.
        mask: ``[B, N]``, the anchors to distil: bool, or float weights in [0, 1].
        temperature: softening temperature ``T > 0``.

    Returns:
        ``T^2 * sum_k BCE(s_k / T, sigmoid(t_k / T))`` averaged over the anchors with the mask's weights (0 without
        any), minus the targets' entropy (so equal scores give 0).
    """
    T = float(temperature)
    target = (teacher.float() / T).sigmoid()
    bce = F.binary_cross_entropy_with_logits(student.float() / T, target, reduction="none").sum(-1)
    # the minimum of the BCE (the target's entropy) is subtracted, so a perfect match gives 0
    entropy = F.binary_cross_entropy(target, target, reduction="none").sum(-1)
    weight = mask.float()
    return (T * T) * ((bce - entropy) * weight).sum() / weight.sum().clamp(min=1.0)


def _neck_features(model: nn.Module, x: Tensor) -> dict[str, Tensor]:
    if model.normalize:
        x = (x - model.mean) / model.std
    return model.neck(model.backbone(x))


def _check_yolo(model: nn.Module, role: str) -> None:
    missing = [a for a in ("backbone", "neck", "head", "anchors", "_padded_targets") if not hasattr(model, a)]
    if missing:
        raise ValueError(f"detection distillation needs YOLO models; the {role} {type(model).__name__} is not one")


class YoloDistiller:
    """The distilling loss of a YOLO run (``teacher=`` set); see the module docstring.

    Args:
        teacher: the frozen teacher YOLO.
        alpha: weight of the class-score term.
        temperature: softening temperature.
        features: weight of the feature-imitation term (0: none, no adapters).
    """

    def __init__(self, teacher: nn.Module, *, alpha: float, temperature: float, features: float = 0.0) -> None:
        _check_yolo(teacher, "teacher")
        self.teacher = teacher
        self.alpha, self.temperature, self.features = float(alpha), float(temperature), float(features)

    @classmethod
    def from_args(cls, args: dict[str, Any]) -> YoloDistiller:
        """Built from a run's ``teacher=`` and ``distill.*`` keys."""
        opts = distill_options(args)
        teacher = load_teacher(str(args["teacher"]), model=str(opts["teacher_model"] or ""))
        return cls(teacher, alpha=opts["alpha"], temperature=opts["temperature"], features=opts["features"])

    def attach(self, student: nn.Module) -> None:
        """Check the pair and give ``student`` its 1x1 adapters (student neck widths -> teacher neck widths)."""
        _check_yolo(student, "student")
        if student.num_classes != self.teacher.num_classes:
            raise ValueError(
                f"the teacher has {self.teacher.num_classes} classes, the student {student.num_classes}: distillation "
                "needs a teacher trained on the same classes"
            )
        if list(student.strides) != list(self.teacher.strides):
            raise ValueError(f"teacher strides {self.teacher.strides} differ from the student's {student.strides}")
        if self.features > 0:
            pairs = zip(student.neck.specs, self.teacher.neck.specs)
            student.add_module(ADAPTERS, nn.ModuleList(nn.Conv2d(s.channels, t.channels, 1) for s, t in pairs))

    def loss(self, model: nn.Module, images: Any, targets: Any) -> dict[str, Tensor]:
        """The student's ``{"box", "cls", "dfl"}`` losses plus ``"kd"`` (and ``"feat"``), for ``images`` and
        targets as :meth:`YOLO.loss <vision.models.detection.yolo.model.YOLO.loss>` takes them."""
        x = pad_to_stride(as_float_images(images), stride=model.size_divisibility)
        gt = model._padded_targets(targets, x.shape[0], x.device)
        feats = _neck_features(model, x)
        box_logits, cls_logits, shapes = model.head(feats)
        teacher = self.teacher.to(x.device)
        teacher.eval()
        with torch.no_grad():
            t_feats = _neck_features(teacher, x)
            _, t_cls, t_shapes = teacher.head(t_feats)
        if list(t_shapes) != list(shapes):
            raise ValueError(f"teacher levels {t_shapes} differ from the student's {shapes}")
        points, strides = model.anchors(shapes, x.device)
        with torch.autocast(x.device.type, enabled=False):
            losses, assigned = yolo_loss(
                box_logits.float(),
                cls_logits.float(),
                points,
                strides,
                gt["labels"],
                gt["boxes"],
                gt["valid"],
                reg_max=model.reg_max,
                gains=model.gains,
                topk=model.assigner_topk,
                alpha=model.alpha,
                beta=model.beta,
            )
            objectness = torch.maximum(t_cls.float().sigmoid().amax(-1), cls_logits.detach().float().sigmoid().amax(-1))
            weight = torch.maximum(assigned.foreground.float(), objectness)
            losses["kd"] = self.alpha * score_kd_loss(cls_logits, t_cls, weight, temperature=self.temperature)
        adapters = getattr(model, ADAPTERS, None)
        if self.features > 0 and adapters is not None:
            terms = []
            for adapter, s_spec, t_spec in zip(adapters, model.neck.specs, teacher.neck.specs):
                target = t_feats[t_spec.name].float()
                target = (target - target.mean((0, 2, 3), keepdim=True)) / target.std((0, 2, 3), keepdim=True).add(1e-6)
                terms.append(F.mse_loss(adapter(feats[s_spec.name]).float(), target))
            losses["feat"] = self.features * torch.stack(terms).mean()
        return losses
