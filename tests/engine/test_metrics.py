"""Classification metrics against scikit-learn on the same predictions."""

from __future__ import annotations

import numpy as np
import pytest

from vision.tasks.classification.metrics import classification_metrics, topk_accuracy

sk = pytest.importorskip("sklearn.metrics")


@pytest.mark.parametrize("seed", range(6))
def test_metrics_equal_sklearn(seed):
    rng = np.random.default_rng(seed)
    n, c = 300, 7 if seed % 2 else 10
    labels = rng.integers(0, c, n)
    logits = rng.normal(size=(n, c)) + 2.0 * np.eye(c)[labels] * rng.random((n, 1))
    if seed == 3:
        logits = np.round(logits, 1)  # ties in the scores
    probs = np.exp(logits) / np.exp(logits).sum(1, keepdims=True)
    m = classification_metrics(probs, labels)
    pred = probs.argmax(1)
    assert m["top1"] == pytest.approx(sk.accuracy_score(labels, pred))
    assert m["top5"] == pytest.approx(sk.top_k_accuracy_score(labels, probs, k=5, labels=range(c)))
    assert m["precision"] == pytest.approx(sk.precision_score(labels, pred, average="macro", zero_division=0))
    assert m["recall"] == pytest.approx(sk.recall_score(labels, pred, average="macro", zero_division=0))
    assert m["f1"] == pytest.approx(sk.f1_score(labels, pred, average="macro", zero_division=0))
    assert m["auc"] == pytest.approx(sk.roc_auc_score(labels, probs, multi_class="ovr", average="macro"))
    np.testing.assert_array_equal(m["confusion"], sk.confusion_matrix(labels, pred, labels=range(c)))


def test_class_never_predicted_nor_present():
    probs = np.array([[0.9, 0.1, 0.0], [0.2, 0.8, 0.0], [0.6, 0.4, 0.0]])
    labels = np.array([0, 1, 1])
    m = classification_metrics(probs, labels)
    pred = probs.argmax(1)
    assert m["precision"] == pytest.approx(sk.precision_score(labels, pred, average="macro", zero_division=0))
    assert m["f1"] == pytest.approx(sk.f1_score(labels, pred, average="macro", zero_division=0))
    assert topk_accuracy(probs, labels, 2) == 1.0
