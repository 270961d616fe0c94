"""PNG plots written into run folders (matplotlib, Agg backend)."""

from __future__ import annotations

from pathlib import Path

import numpy as np


def _pyplot():
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    return plt


def plot_history(history_csv: str | Path, out_png: str | Path) -> None:
    """Learning curves from ``history.csv``: every ``X`` / ``val_X`` pair in one panel."""
    import csv

    rows = list(csv.DictReader(open(history_csv)))
    if not rows:
        return
    keys = [k for k in rows[0] if k != "epoch" and not k.startswith("val_")
            and k != "learning_rate"]
    plt = _pyplot()
    fig, axes = plt.subplots(1, len(keys), figsize=(4 * len(keys), 3.2), squeeze=False)
    epochs = [int(r["epoch"]) + 1 for r in rows]
    for ax, key in zip(axes[0], keys):
        for name in (key, f"val_{key}"):
            if name in rows[0]:
                values = [float(r[name]) if r[name] not in ("", None) else np.nan for r in rows]
                ax.plot(epochs, values, marker=".", label=name)
        ax.set_xlabel("epoch")
        ax.set_title(key)
        ax.legend()
    fig.tight_layout()
    fig.savefig(out_png, dpi=100)
    plt.close(fig)


def plot_confusion_matrix(matrix: np.ndarray, class_names, out_png: str | Path) -> None:
    plt = _pyplot()
    n = len(class_names)
    size = max(4.0, 0.45 * n + 2)
    fig, ax = plt.subplots(figsize=(size, size))
    ax.imshow(matrix, cmap="Blues")
    ax.set_xticks(range(n), class_names, rotation=90 if n > 10 else 0)
    ax.set_yticks(range(n), class_names)
    ax.set_xlabel("predicted")
    ax.set_ylabel("true")
    if n <= 30:
        threshold = matrix.max() / 2 if matrix.size else 0
        for i in range(n):
            for j in range(n):
                ax.text(j, i, int(matrix[i, j]), ha="center", va="center", fontsize=8,
                        color="white" if matrix[i, j] > threshold else "black")
    ax.set_title("confusion matrix (test split)")
    fig.tight_layout()
    fig.savefig(out_png, dpi=100)
    plt.close(fig)
