"""What a run writes besides checkpoints: ``metrics.csv``, TensorBoard events, PNG plots, the epoch table."""

from __future__ import annotations

import csv
import math
import os
from collections.abc import Mapping, Sequence
from pathlib import Path
from typing import Any

import numpy as np
from torch.utils.data import Subset

__all__ = [
    "MetricsLogger",
    "closing_lines",
    "data_summary",
    "expectation_lines",
    "format_table",
    "is_better",
    "plot_confusion",
    "plot_curves",
]


def data_summary(dataset: Any) -> str | None:
    """The data set's ``summary()`` line (looked up through ``Subset``-style wrappers), or ``None``. When a
    ``torch.utils.data.Subset`` on the way takes part of it (a split held out by ``val_fraction``), the line says how
    many images this split uses: the summary counts the whole folder."""
    used: int | None = None
    for _ in range(8):
        if dataset is None:
            return None
        if callable(getattr(dataset, "summary", None)):
            line = str(dataset.summary())
            return line if used is None or used == len(dataset) else f"{line}; this split uses {used} of them"
        if used is None and isinstance(dataset, Subset):
            used = len(dataset)
        dataset = getattr(dataset, "dataset", None)
    return None


def expectation_lines(
    expected: Mapping[str, Any], *, data: Any, metric: str, best: float | None, maximize: bool
) -> list[str]:
    """Lines reporting a recipe's ``expected:`` value of ``metric`` against the run's ``best``; skipped (and said so)
    when the run's ``data`` is not the data set the expectation was measured on (``expected["data"]``)."""
    if not expected or best is None or metric not in expected:
        return []
    measured_on = expected.get("data")
    if measured_on is not None and str(measured_on) != str(data or ""):
        return [f"recipe expectations skipped: measured on data={measured_on}, this run used data={data}"]
    target = float(expected[metric])
    ok = best >= target if maximize else best <= target
    return [f"recipe expects {metric} {'>=' if maximize else '<='} {target}: {'reached' if ok else 'NOT reached'}"]


class MetricsLogger:
    """Append one row per epoch to ``metrics.csv`` (columns grow as new keys appear) and to TensorBoard if present."""

    def __init__(self, run_dir: str | os.PathLike[str], *, tensorboard: bool = True) -> None:
        self.path = Path(run_dir) / "metrics.csv"
        self.rows: list[dict[str, Any]] = []
        if self.path.is_file():
            with open(self.path, newline="", encoding="utf-8") as f:
                self.rows = [dict(r) for r in csv.DictReader(f)]
        self.writer = None
        if tensorboard:
            try:
                from torch.utils.tensorboard import SummaryWriter

                self.writer = SummaryWriter(log_dir=str(Path(run_dir) / "tensorboard"))
            except (ImportError, ModuleNotFoundError):
                self.writer = None

    def truncate(self, epochs_done: int) -> None:
        """Drop rows after ``epochs_done`` (a resumed run rewrites the epochs it repeats)."""
        self.rows = [r for r in self.rows if int(float(r["epoch"])) <= epochs_done]
        self._write()

    def log(self, row: Mapping[str, Any]) -> None:
        self.rows.append({k: _scalar(v) for k, v in row.items()})
        self._write()
        if self.writer is not None:
            step = int(row["epoch"])
            for key, value in row.items():
                if key != "epoch" and isinstance(value, int | float) and math.isfinite(float(value)):
                    self.writer.add_scalar(key, float(value), step)
            self.writer.flush()

    def _write(self) -> None:
        keys: list[str] = []
        for row in self.rows:
            keys += [k for k in row if k not in keys]
        tmp = self.path.with_name(self.path.name + ".tmp")
        with open(tmp, "w", newline="", encoding="utf-8") as f:
            writer = csv.DictWriter(f, fieldnames=keys)
            writer.writeheader()
            writer.writerows(self.rows)
        os.replace(tmp, self.path)

    def close(self) -> None:
        if self.writer is not None:
            self.writer.close()


def is_better(value: float | None, best: float | None, *, maximize: bool) -> bool:
    """Whether an epoch's main metric ``value`` makes a new best checkpoint (a non-finite value never does; without
    a metric only the first epoch does)."""
    if value is not None and not math.isfinite(value):
        return False
    if value is None:
        return best is None
    if best is None:
        return True
    return value > best if maximize else value < best


def closing_lines(
    task: Any, args: Mapping[str, Any], *, best: float | None, best_epoch: int, skipped: int, run_dir: Any
) -> list[str]:
    """The lines a training run ends with: its best metric, the recipe's expectation, skipped steps, how to run
    inference and, last, where the run is."""
    metric = task.main_metric
    lines = [f"best {metric} {best:.4f} at epoch {best_epoch + 1}"] if best is not None else []
    lines += expectation_lines(
        args.get("expected") or {}, data=args["data"], metric=metric, best=best, maximize=task.maximize
    )
    if skipped:
        lines.append(f"{skipped} step(s) skipped for non-finite losses")
    return [*lines, f"inference: {task.inference_hint(run_dir)}", f"run saved to {run_dir}"]


def _scalar(value: Any) -> Any:
    if hasattr(value, "item"):
        value = value.item()
    if isinstance(value, float):
        return round(value, 6)
    return value


def format_table(row: Mapping[str, Any]) -> str:
    """A two-line table of an epoch's numbers."""
    keys = [k for k, v in row.items() if isinstance(v, int | float | str)]
    cells = [f"{row[k]:.4g}" if isinstance(row[k], float) else str(row[k]) for k in keys]
    widths = [max(len(k), len(c)) for k, c in zip(keys, cells)]
    head = "  ".join(k.rjust(w) for k, w in zip(keys, widths))
    body = "  ".join(c.rjust(w) for c, w in zip(cells, widths))
    return f"{head}\n{body}"


def plot_curves(csv_path: str | os.PathLike[str], out_dir: str | os.PathLike[str]) -> list[Path]:
    """``loss.png`` (every ``*loss*`` column), ``lr.png``, ``metrics.png`` (the other numeric columns) per epoch."""
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    with open(csv_path, newline="", encoding="utf-8") as f:
        rows = list(csv.DictReader(f))
    if not rows:
        return []
    epochs = [float(r["epoch"]) for r in rows]

    def column(key: str) -> list[float]:
        out = []
        for r in rows:
            try:
                out.append(float(r.get(key, "nan") or "nan"))
            except ValueError:
                out.append(float("nan"))
        return out

    keys = [k for k in rows[0] if k not in ("epoch", "time") and not np.isnan(column(k)).all()]
    groups = {
        "loss.png": [k for k in keys if "loss" in k],
        "lr.png": [k for k in keys if k == "lr"],
        "metrics.png": [k for k in keys if "loss" not in k and k != "lr"],
    }
    written = []
    for name, cols in groups.items():
        if not cols:
            continue
        fig, ax = plt.subplots(figsize=(6, 4), dpi=100)
        for key in cols:
            ax.plot(epochs, column(key), marker="o", markersize=3, label=key)
        ax.set_xlabel("epoch")
        ax.grid(alpha=0.3)
        ax.legend(fontsize=8)
        ax.set_title(name.removesuffix(".png"))
        fig.tight_layout()
        path = Path(out_dir) / name
        fig.savefig(path)
        plt.close(fig)
        written.append(path)
    return written


def plot_confusion(cm: np.ndarray, names: Sequence[str], path: str | os.PathLike[str]) -> Path:
    """A confusion-matrix heat map (rows: true class, columns: predicted), counts written in the cells."""
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    n = len(names)
    size = max(4.0, 0.45 * n + 2)
    fig, ax = plt.subplots(figsize=(size, size), dpi=100)
    ax.imshow(cm, cmap="Blues")
    ax.set_xticks(range(n), labels=names, rotation=90, fontsize=7)
    ax.set_yticks(range(n), labels=names, fontsize=7)
    ax.set_xlabel("predicted")
    ax.set_ylabel("true")
    if n <= 30:
        top = cm.max() if cm.size else 0
        for i in range(n):
            for j in range(n):
                ax.text(
                    j,
                    i,
                    int(cm[i, j]),
                    ha="center",
                    va="center",
                    fontsize=6,
                    color="white" if cm[i, j] > top / 2 else "black",
                )
    fig.tight_layout()
    fig.savefig(path)
    plt.close(fig)
    return Path(path)
