"""Plots a person would rather look at than read. Matplotlib with the non-interactive backend;
every figure is written atomically as PNG."""
from __future__ import annotations

from pathlib import Path

import matplotlib

matplotlib.use("Agg")
import matplotlib.pyplot as plt  # noqa: E402
import matplotlib.ticker  # noqa: E402,F401

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
        ax.xaxis.set_major_locator(matplotlib.ticker.MaxNLocator(integer=True))
        ax.set_xlabel("epoch")
        ax.set_ylabel(metric)
        ax.grid(alpha=0.3)
    axes[0][0].legend(fontsize=7)
    fig.suptitle(title or "learning curves")
    return save_figure(fig, path)


# --- comparison report figures (pipelines.common.compare) -------------------------------------------------

MODEL_COLOR = "#4C72B0"
BLEND_COLOR = "#DD8452"
STALE_COLOR = "#B0B0B0"
REFERENCE_STYLES = ("--", ":", "-.")
REFERENCE_COLORS = ("#C44E52", "#555555", "#8172B3")


def plot_model_scores(bars: list[dict], references: list[dict], path: Path, title: str = "") -> Path:
    """Horizontal bars of each model's OOF log loss (best on top), fold spread (± std) as error bars,
    reference baselines as vertical lines.

    bars: [{"model", "log_loss", "std", "kind": "model"|"blend", "stale": bool}] in display order (best first);
    references: [{"label", "log_loss"}].
    """
    n = max(len(bars), 1)
    fig, ax = plt.subplots(figsize=(8, 1.2 + 0.45 * n))
    ypos = list(range(len(bars)))[::-1]  # best model on top
    values = [b["log_loss"] for b in bars]
    stds = [b.get("std") or 0.0 for b in bars]
    ref_values = [r["log_loss"] for r in references]
    # A broken model (log loss far above the baselines) must not squash every other bar into a sliver.
    worst_reference = max(ref_values) if ref_values else max(values, default=1.0)
    xmax = min(max([v + s for v, s in zip(values, stds)] + ref_values + [1e-3]), 1.6 * worst_reference) * 1.12
    colors = []
    for b in bars:
        colors.append(STALE_COLOR if b.get("stale") else BLEND_COLOR if b.get("kind") == "blend" else MODEL_COLOR)
    shown = [min(v, xmax) for v in values]
    stds = [0.0 if v > xmax else s for v, s in zip(values, stds)]  # a cut bar's spread would mislead
    ax.barh(ypos, shown, xerr=stds, color=colors, height=0.6, error_kw={"ecolor": "black", "capsize": 3, "lw": 1})
    for y, v, s in zip(ypos, values, stds):
        label = f"{v:.4f}" + (f" ± {s:.4f}" if s else "")
        if v > xmax:
            ax.text(xmax * 0.98, y, f"{v:.4f} (axis cut) →", va="center", ha="right", fontsize=8, color="white",
                    fontweight="bold")
        else:
            ax.text(min(v + s, xmax) + xmax * 0.01, y, label, va="center", ha="left", fontsize=8)
    for style, color, ref in zip(REFERENCE_STYLES * 3, REFERENCE_COLORS * 3, references):
        ax.axvline(ref["log_loss"], color=color, ls=style, lw=1.4,
                   label=f"reference: {ref['label']} ({ref['log_loss']:.4f})")
    ax.set_yticks(ypos)
    ax.set_yticklabels([b["model"] + (" (stale)" if b.get("stale") else "") for b in bars])
    ax.set_xlim(0, xmax * 1.18)  # room for the value labels
    ax.set_xlabel("out-of-fold log loss (lower is better); error bar: ± std over folds")
    ax.grid(axis="x", alpha=0.3)
    if references:  # below the axis, where it can hide no bar
        from matplotlib.transforms import offset_copy

        below_label = offset_copy(ax.transAxes, fig=fig, y=-0.45, units="inches")
        ax.legend(loc="upper center", bbox_to_anchor=(0.5, 0), bbox_transform=below_label, ncol=len(references),
                  fontsize=8, frameon=False)
    ax.set_title(title or "model comparison")
    return save_figure(fig, path)


def plot_roc_curves(curves: list[dict], path: Path, title: str = "") -> Path:
    """curves: [{"model", "fpr", "tpr", "auc"}], drawn best AUC first in the legend."""
    fig, ax = plt.subplots(figsize=(6, 6))
    for c in sorted(curves, key=lambda c: -c["auc"]):
        ax.plot(c["fpr"], c["tpr"], lw=1.5, label=f"{c['model']} (AUC {c['auc']:.4f})")
    ax.plot([0, 1], [0, 1], color="grey", ls="--", lw=1, label="chance (AUC 0.5)")
    ax.set_xlim(0, 1)
    ax.set_ylim(0, 1.01)
    ax.set_xlabel("false positive rate")
    ax.set_ylabel("true positive rate")
    ax.set_aspect("equal")
    ax.grid(alpha=0.3)
    ax.legend(loc="lower right", fontsize=8)
    ax.set_title(title or "ROC curves (out-of-fold)")
    return save_figure(fig, path)


def plot_confusion_matrices(panels: list[dict], class_names, path: Path, title: str = "") -> Path:
    """panels: [{"model", "matrix" (rows: true class, columns: predicted), "subtitle"}], one panel each.
    Cells are coloured by the share of the true class and show that share and the count."""
    import numpy as np

    n = max(len(panels), 1)
    cols = n if n <= 3 else 2 if n == 4 else 3
    rows = (n + cols - 1) // cols
    fig, axes = plt.subplots(rows, cols, figsize=(4.2 * cols, 4.0 * rows), squeeze=False)
    for ax in axes.flat[len(panels):]:
        ax.axis("off")
    for ax, panel in zip(axes.flat, panels):
        cm = np.asarray(panel["matrix"], dtype=np.float64)
        share = cm / np.maximum(cm.sum(axis=1, keepdims=True), 1)
        ax.imshow(share, cmap="Blues", vmin=0, vmax=1)
        for i in range(cm.shape[0]):
            for j in range(cm.shape[1]):
                ax.text(j, i, f"{share[i, j]:.0%}\n({int(cm[i, j])})", ha="center", va="center", fontsize=9,
                        color="white" if share[i, j] > 0.6 else "black")
        ax.set_xticks(range(len(class_names)))
        ax.set_xticklabels(class_names, fontsize=8)
        ax.set_yticks(range(len(class_names)))
        ax.set_yticklabels(class_names, fontsize=8)
        ax.set_xlabel("predicted (argmax)", fontsize=8)
        ax.set_ylabel("true", fontsize=8)
        ax.set_title(f"{panel['model']}\n{panel.get('subtitle', '')}", fontsize=9)
    fig.suptitle(title or "confusion matrices (out-of-fold)")
    fig.tight_layout()
    return save_figure(fig, path)


def plot_calibration_curves(curves: list[dict], path: Path, title: str = "") -> Path:
    """Reliability diagram: each curve's mean predicted probability against the observed frequency per
    (quantile) bin, the diagonal of perfect calibration, and below it the share of predictions per
    probability bin. The legend gives each curve's expected calibration error (ECE: the bins' gaps
    weighted by their size).

    curves: [{"model", "kind": "model"|"blend", "prob_pred", "prob_true", "gap", "hist_edges", "hist_fraction"}].
    """
    import numpy as np

    fig, (ax, hist) = plt.subplots(2, 1, figsize=(6.5, 7.5), sharex=True, gridspec_kw={"height_ratios": [3, 1]})
    ax.plot([0, 1], [0, 1], color="grey", ls="--", lw=1, label="perfectly calibrated")
    for c in curves:
        blend = c.get("kind") == "blend"
        line, = ax.plot(c["prob_pred"], c["prob_true"], marker="o", ms=3.5, lw=2.2 if blend else 1.4,
                        label=f"{c['model']} (ECE {c['gap']:.3f})")
        hist.stairs(np.asarray(c["hist_fraction"]), np.asarray(c["hist_edges"]), color=line.get_color(),
                    lw=2.2 if blend else 1.2)
    ax.set_xlim(0, 1)
    ax.set_ylim(0, 1)
    ax.set_ylabel("observed frequency of the class")
    ax.grid(alpha=0.3)
    ax.legend(loc="upper left", fontsize=8)
    ax.set_title(title or "calibration (out-of-fold)")
    hist.set_xlabel("mean predicted probability (per quantile bin); histogram: predicted probability")
    hist.set_ylabel("share of\npredictions")
    hist.grid(alpha=0.3)
    fig.tight_layout()
    return save_figure(fig, path)


def plot_correlation_heatmap(names: list[str], matrix, path: Path, title: str = "") -> Path:
    """Annotated heatmap of a symmetric correlation matrix, one row and column per run."""
    import numpy as np

    matrix = np.asarray(matrix, dtype=np.float64)
    n = max(len(names), 1)
    size = 1.6 + 0.62 * n
    fig, ax = plt.subplots(figsize=(size + 1.2, size))
    low = float(np.nanmin(matrix)) if matrix.size else 0.0
    image = ax.imshow(matrix, cmap="viridis", vmin=min(low, 0.99), vmax=1.0)
    threshold = (min(low, 0.99) + 1.0) / 2
    for i in range(len(names)):
        for j in range(len(names)):
            ax.text(j, i, f"{matrix[i, j]:.3f}", ha="center", va="center", fontsize=8 if n <= 10 else 6,
                    color="black" if matrix[i, j] > threshold else "white")
    ax.set_xticks(range(len(names)))
    ax.set_xticklabels(names, rotation=45, ha="right", fontsize=8)
    ax.set_yticks(range(len(names)))
    ax.set_yticklabels(names, fontsize=8)
    fig.colorbar(image, ax=ax, fraction=0.046, pad=0.04, label="Pearson correlation")
    ax.set_title(title or "correlation of the out-of-fold predictions")
    fig.tight_layout()
    return save_figure(fig, path)


def plot_feature_importance(features: list[dict], path: Path, title: str = "") -> Path:
    """Horizontal bars of the mean gain over the folds (largest on top), ± std over the folds as error bars.

    features: [{"feature", "gain", "gain_std", "share"}] largest first.
    """
    n = max(len(features), 1)
    fig, ax = plt.subplots(figsize=(8, 1.0 + 0.3 * n))
    ypos = list(range(len(features)))[::-1]
    gains = [f["gain"] for f in features]
    ax.barh(ypos, gains, xerr=[f["gain_std"] for f in features], color=MODEL_COLOR, height=0.7,
            error_kw={"ecolor": "black", "capsize": 2, "lw": 0.8})
    for y, f in zip(ypos, features):
        ax.text(f["gain"] + f["gain_std"], y, f"  {f['share']:.1%}", va="center", ha="left", fontsize=7)
    ax.set_yticks(ypos)
    ax.set_yticklabels([f["feature"] for f in features], fontsize=8)
    ax.set_xlim(0, max([g + f["gain_std"] for g, f in zip(gains, features)] + [1e-9]) * 1.15)
    ax.set_xlabel("total gain, mean over the folds (label: share of all gain); error bar: ± std over folds")
    ax.grid(axis="x", alpha=0.3)
    ax.set_title(title or "feature importance (gain)")
    fig.tight_layout()
    return save_figure(fig, path)


def plot_cv_vs_lb(points: list[dict], path: Path, title: str = "") -> Path:
    """Each submission's public leaderboard score against its blend's CV log loss, with the diagonal
    (LB = CV); points: [{"submission", "cv_log_loss", "public_score"}]."""
    fig, ax = plt.subplots(figsize=(6.5, 6))
    xs = [p["cv_log_loss"] for p in points]
    ys = [p["public_score"] for p in points]
    low, high = min(xs + ys), max(xs + ys)
    pad = max((high - low) * 0.15, 0.005)
    ax.plot([low - pad, high + pad], [low - pad, high + pad], color="grey", ls="--", lw=1, label="LB = CV")
    ax.scatter(xs, ys, color=BLEND_COLOR, zorder=3)
    for p in points:
        ax.annotate(p["submission"], (p["cv_log_loss"], p["public_score"]), textcoords="offset points",
                    xytext=(5, 4), fontsize=8)
    ax.set_xlim(low - pad, high + pad)
    ax.set_ylim(low - pad, high + pad)
    ax.set_aspect("equal")
    ax.set_xlabel("CV log loss of the blend (out-of-fold)")
    ax.set_ylabel("public leaderboard score")
    ax.grid(alpha=0.3)
    ax.legend(loc="upper left", fontsize=8)
    ax.set_title(title or "CV against the public leaderboard")
    return save_figure(fig, path)
