"""Plots of the detection task: precision-recall curves from COCOeval."""

from __future__ import annotations

import os
from collections.abc import Sequence
from pathlib import Path

import numpy as np

__all__ = ["plot_pr_curves"]


def plot_pr_curves(
    precision: np.ndarray, recall: np.ndarray, names: Sequence[str], path: str | os.PathLike[str]
) -> Path:
    """Precision-recall curves from COCOeval's ``eval["precision"]`` (``[T, R, K, A, M]``): per class at IoU 0.5 and
    the class mean at IoU 0.5 and over 0.5:0.95 (all areas, 100 detections)."""
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    p = np.asarray(precision, dtype=np.float64)[:, :, :, 0, -1]  # [T, R, K]
    p = np.where(p < 0, np.nan, p)
    fig, ax = plt.subplots(figsize=(6, 5), dpi=100)
    K = p.shape[2]
    for k in range(K):
        if np.isnan(p[0, :, k]).all():
            continue
        label = names[k] if k < len(names) else str(k)
        ax.plot(recall, p[0, :, k], linewidth=1, alpha=0.6, label=f"{label} AP50 {np.nanmean(p[0, :, k]):.3f}")
    with np.errstate(all="ignore"):
        mean50 = np.nanmean(p[0], axis=1)
        mean_all = np.nanmean(p, axis=(0, 2))
    ax.plot(recall, mean50, color="black", linewidth=2.5, label=f"all AP50 {np.nanmean(mean50):.3f}")
    ax.plot(recall, mean_all, color="grey", linewidth=2, linestyle="--", label=f"all AP {np.nanmean(mean_all):.3f}")
    ax.set_xlabel("recall")
    ax.set_ylabel("precision")
    ax.set_xlim(0, 1)
    ax.set_ylim(0, 1.02)
    ax.grid(alpha=0.3)
    ax.legend(fontsize=7, loc="lower left")
    ax.set_title("precision-recall (COCOeval)")
    fig.tight_layout()
    out = Path(path)
    fig.savefig(out)
    plt.close(fig)
    return out
