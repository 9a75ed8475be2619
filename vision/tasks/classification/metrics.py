"""Classification metrics: top-k accuracy, macro precision/recall/F1, one-vs-rest ROC-AUC, confusion matrix.

Definitions follow scikit-learn (tests compare against it): precision/recall/F1 are per-class then averaged with
equal weight ("macro") over the classes that occur in the labels or the predictions, a class with no
predictions (or no samples) counting 0; ROC-AUC is the one-vs-rest macro
average of per-class AUCs computed from ranks (ties get average ranks), over the classes present in the labels.
"""

from __future__ import annotations

import numpy as np

__all__ = ["classification_metrics", "confusion_matrix", "roc_auc_ovr", "topk_accuracy"]


def topk_accuracy(scores: np.ndarray, labels: np.ndarray, k: int) -> float:
    """Fraction of samples whose label is among the ``k`` highest ``scores [N, C]``.

    ``k == 1`` uses ``argmax`` (ties: the lowest class index, like the predictions); larger ``k`` break ties like
    scikit-learn's ``top_k_accuracy_score`` (the higher class index first).
    """
    if not len(labels):
        return 0.0
    if k == 1:
        return float((scores.argmax(axis=1) == labels).mean())
    k = min(k, scores.shape[1])
    top = np.argsort(scores, axis=1, kind="mergesort")[:, ::-1][:, :k]
    return float((top == labels[:, None]).any(axis=1).mean())


def confusion_matrix(labels: np.ndarray, predictions: np.ndarray, num_classes: int) -> np.ndarray:
    """``[C, C]`` counts, rows = true class, columns = predicted class."""
    index = labels.astype(np.int64) * num_classes + predictions.astype(np.int64)
    return np.bincount(index, minlength=num_classes * num_classes).reshape(num_classes, num_classes)


def _auc(scores: np.ndarray, positive: np.ndarray) -> float:
    n_pos = int(positive.sum())
    n_neg = len(positive) - n_pos
    order = np.argsort(scores, kind="mergesort")
    sorted_scores = scores[order]
    ranks = np.empty(len(scores), dtype=np.float64)
    i = 0
    while i < len(scores):  # average ranks over ties
        j = i
        while j + 1 < len(scores) and sorted_scores[j + 1] == sorted_scores[i]:
            j += 1
        ranks[order[i : j + 1]] = 0.5 * (i + j) + 1.0
        i = j + 1
    return float((ranks[positive].sum() - n_pos * (n_pos + 1) / 2.0) / (n_pos * n_neg))


def roc_auc_ovr(probs: np.ndarray, labels: np.ndarray) -> float:
    """Macro one-vs-rest ROC-AUC of ``probs [N, C]``; NaN when fewer than two classes are present."""
    present = [c for c in range(probs.shape[1]) if 0 < (labels == c).sum() < len(labels)]
    if len(present) < 2:
        return float("nan")
    return float(np.mean([_auc(probs[:, c], labels == c) for c in present]))


def classification_metrics(probs: np.ndarray, labels: np.ndarray) -> dict[str, float | np.ndarray]:
    """All classification metrics of ``probs [N, C]`` (softmax outputs) against integer ``labels [N]``.

    Returns ``top1``, ``top5``, ``precision``, ``recall``, ``f1`` (macro), ``auc`` (macro one-vs-rest) and
    ``confusion`` (``[C, C]`` array).
    """
    probs = np.asarray(probs, dtype=np.float64)
    labels = np.asarray(labels, dtype=np.int64)
    num_classes = probs.shape[1]
    predictions = probs.argmax(axis=1)
    cm = confusion_matrix(labels, predictions, num_classes)
    tp = np.diag(cm).astype(np.float64)
    predicted = cm.sum(axis=0).astype(np.float64)
    actual = cm.sum(axis=1).astype(np.float64)
    precision = np.divide(tp, predicted, out=np.zeros_like(tp), where=predicted > 0)
    recall = np.divide(tp, actual, out=np.zeros_like(tp), where=actual > 0)
    denom = precision + recall
    f1 = np.divide(2 * precision * recall, denom, out=np.zeros_like(tp), where=denom > 0)
    seen = (actual > 0) | (predicted > 0)  # like scikit-learn, average over classes in the labels or predictions
    return {
        "top1": topk_accuracy(probs, labels, 1),
        "top5": topk_accuracy(probs, labels, 5),
        "precision": float(precision[seen].mean()),
        "recall": float(recall[seen].mean()),
        "f1": float(f1[seen].mean()),
        "auc": roc_auc_ovr(probs, labels),
        "confusion": cm,
    }
