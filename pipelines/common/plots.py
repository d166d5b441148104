"""Plots a person would rather look at than read. Matplotlib with the non-interactive backend;
every figure is written atomically as PNG."""
from __future__ import annotations

from pathlib import Path

import matplotlib

matplotlib.use("Agg")
import matplotlib.pyplot as plt  # noqa: E402

from pipelines.common.io import atomic_path  # noqa: E402


def save_figure(fig, path: Path) -> Path:
    with atomic_path(path, suffix=".png") as tmp:
        fig.savefig(tmp, dpi=110, bbox_inches="tight", format="png")
    plt.close(fig)
    return Path(path)


def plot_learning_curves(histories: dict, path: Path, title: str = "") -> Path:
    """histories: fold -> {metric name -> per-epoch values} (Keras History.history)."""
    metrics = sorted({m for h in histories.values() for m in h if not m.startswith("val_") and m != "lr"})
    metrics = [m for m in metrics if m != "learning_rate"] or ["loss"]
    fig, axes = plt.subplots(1, len(metrics), figsize=(5 * len(metrics), 3.5), squeeze=False)
    for ax, metric in zip(axes[0], metrics):
        for fold, hist in sorted(histories.items()):
            if metric in hist:
                line, = ax.plot(range(1, len(hist[metric]) + 1), hist[metric], label=f"fold {fold} train")
                if f"val_{metric}" in hist:
                    ax.plot(range(1, len(hist[f"val_{metric}"]) + 1), hist[f"val_{metric}"], "--",
                            color=line.get_color(), label=f"fold {fold} valid")
        ax.set_xlabel("epoch")
        ax.set_ylabel(metric)
        ax.grid(alpha=0.3)
    axes[0][0].legend(fontsize=7)
    fig.suptitle(title or "learning curves")
    return save_figure(fig, path)
