# SPDX-License-Identifier: BSD-3-Clause
"""The training history (CSV), the loss curve (the paper's Fig. 5) and the comparison figure
(the paper's Fig. 6: label | networks | FBP input, one row per set).

matplotlib is imported inside the functions, with the non-interactive Agg backend.
"""
from __future__ import annotations

import csv
from pathlib import Path
from typing import Dict, List, Sequence, Tuple

import numpy as np

#: columns of ``metrics.csv``: seconds is the wall time of the epoch (training + validation),
#: throughput the training crops per second over all processes
HISTORY_COLUMNS = ("epoch", "train_loss", "val_loss", "lr", "seconds", "throughput")


def write_history(path: Path, rows: Sequence[Dict[str, float]]) -> None:
    """Write the per-epoch rows to ``path`` (atomically: a temporary file, then a rename)."""
    from tomodl.io.atomic import temp_then_rename

    with temp_then_rename(path) as tmp, open(tmp, "w", newline="") as f:
        w = csv.DictWriter(f, fieldnames=HISTORY_COLUMNS)
        w.writeheader()
        for r in rows:
            w.writerow({k: r[k] for k in HISTORY_COLUMNS})


def read_history(path: Path) -> List[Dict[str, float]]:
    """Rows of a ``metrics.csv`` (``[]`` when the file does not exist)."""
    path = Path(path)
    if not path.is_file():
        return []
    with open(path, newline="") as f:
        return [{k: (int(v) if k == "epoch" else float(v)) for k, v in r.items()}
                for r in csv.DictReader(f)]


def _save(fig, path: Path) -> None:
    """Save and close ``fig`` atomically (a temporary file, then a rename)."""
    from tomodl.io.atomic import temp_then_rename

    try:
        with temp_then_rename(path) as tmp:
            fig.savefig(tmp, format=Path(path).suffix.lstrip(".") or "png")
    finally:
        _pyplot().close(fig)


def _pyplot():
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    return plt


def plot_loss(rows: Sequence[Dict[str, float]], path: Path, *, title: str = "") -> None:
    """Training (blue) and validation (orange) loss per epoch, as the paper's Fig. 5."""
    plt = _pyplot()
    epochs = [r["epoch"] for r in rows]
    fig, ax = plt.subplots(figsize=(6, 4), dpi=120)
    ax.plot(epochs, [r["train_loss"] for r in rows], "o-", color="tab:blue", ms=3,
            label="training loss")
    ax.plot(epochs, [r["val_loss"] for r in rows], "o-", color="tab:orange", ms=3,
            label="validation loss")
    ax.set_xlabel("epoch")
    ax.set_ylabel("MSE loss (normalized units)")
    if rows and min(min(r["train_loss"], r["val_loss"]) for r in rows) > 0:
        ax.set_yscale("log")
    ax.grid(True, alpha=0.3)
    ax.legend()
    if title:
        ax.set_title(title)
    fig.tight_layout()
    _save(fig, path)


def comparison_figure(rows: Sequence[Tuple[str, Dict[str, np.ndarray]]], path: Path) -> None:
    """Save a grid: one row per ``(row_label, {panel_title: image})``, shared grey scale per row.

    The grey scale of a row is the range of its first panel (the label), as in the 8-bit
    protocol of the evaluation.
    """
    plt = _pyplot()
    ncol = max(len(panels) for _, panels in rows)
    fig, axes = plt.subplots(len(rows), ncol, figsize=(2.6 * ncol, 2.7 * len(rows)), dpi=120,
                             squeeze=False)
    for i, (row_label, panels) in enumerate(rows):
        images = list(panels.values())
        lo, hi = float(np.min(images[0])), float(np.max(images[0]))
        for j, ax in enumerate(axes[i]):
            ax.set_xticks([])
            ax.set_yticks([])
            if j >= len(images):
                ax.set_visible(False)
                continue
            ax.imshow(images[j], cmap="gray", vmin=lo, vmax=hi if hi > lo else lo + 1)
            if i == 0:
                ax.set_title(list(panels)[j], fontsize=10)
        axes[i][0].set_ylabel(row_label, fontsize=10)
    fig.tight_layout()
    _save(fig, path)
