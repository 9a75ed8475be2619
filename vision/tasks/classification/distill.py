"""Knowledge distillation for classifiers: Hinton et al., "Distilling the Knowledge in a Neural Network"
(https://arxiv.org/abs/1503.02531).

The student learns from ``(1 - alpha) * CE(student, labels) + alpha * T^2 * KL(softmax(teacher / T) ||
softmax(student / T))`` on the same augmented batch; the teacher runs in eval mode under ``torch.no_grad`` and inside
the autocast the trainer opened for the student.

Example:
    >>> python tools/train.py recipe=resnet18_digits model=mobilenet_v3_small teacher=runs/classification/train
"""

from __future__ import annotations

from typing import Any

import torch
import torch.nn.functional as F
from torch import Tensor, nn

from vision.tasks._distill import distill_options, load_teacher

__all__ = ["ClassifierDistiller", "kd_loss"]


def kd_loss(student_logits: Tensor, teacher_logits: Tensor, *, temperature: float) -> Tensor:
    """Hinton's soft-target loss ``T^2 * KL(softmax(t / T) || softmax(s / T))``, mean over the batch.

    Args:
        student_logits, teacher_logits: ``[B, K]`` logits (any float dtype; computed in float32).
        temperature: softening temperature ``T > 0``.

    Returns:
        A scalar; 0 when the two logits are equal.
    """
    T = float(temperature)
    log_p_student = F.log_softmax(student_logits.float() / T, dim=-1)
    log_p_teacher = F.log_softmax(teacher_logits.float() / T, dim=-1)
    return F.kl_div(log_p_student, log_p_teacher, reduction="batchmean", log_target=True) * (T * T)


class ClassifierDistiller:
    """The distilling loss of a classification run (``teacher=`` set).

    Args:
        teacher: the frozen teacher (:func:`vision.tasks._distill.load_teacher`), ``[B, 3, H, W] -> [B, K]``.
        alpha: weight of the KD term; the cross-entropy gets ``1 - alpha``.
        temperature: softening temperature.
        label_smoothing: of the cross-entropy term.
    """

    def __init__(self, teacher: nn.Module, *, alpha: float, temperature: float, label_smoothing: float = 0.0) -> None:
        self.teacher = teacher
        self.alpha, self.temperature, self.label_smoothing = float(alpha), float(temperature), float(label_smoothing)

    @classmethod
    def from_args(cls, args: dict[str, Any]) -> ClassifierDistiller:
        """Built from a run's ``teacher=`` and ``distill.*`` keys."""
        opts = distill_options(args)
        teacher = load_teacher(str(args["teacher"]), model=str(opts["teacher_model"] or ""), task="classification")
        return cls(
            teacher,
            alpha=opts["alpha"],
            temperature=opts["temperature"],
            label_smoothing=float(args.get("label_smoothing") or 0.0),
        )

    def loss(self, model: nn.Module, batch: tuple[Tensor, Tensor]) -> dict[str, Tensor]:
        """``{"cls": (1 - alpha) * CE, "kd": alpha * KD}`` for ``(images [B, 3, H, W], labels [B])``."""
        images, labels = batch
        logits = model(images)
        teacher = self.teacher.to(images.device)
        teacher.eval()  # stays in eval mode whatever the trainer does with the student
        with torch.no_grad():
            soft = teacher(images)
        if soft.shape != logits.shape:
            raise ValueError(
                f"teacher gives {tuple(soft.shape[1:])} logits, the student {tuple(logits.shape[1:])}: distillation "
                "needs a teacher trained on the same classes"
            )
        ce = F.cross_entropy(logits.float(), labels, label_smoothing=self.label_smoothing)
        kd = kd_loss(logits, soft, temperature=self.temperature)
        return {"cls": (1.0 - self.alpha) * ce, "kd": self.alpha * kd}
