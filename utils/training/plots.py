"""Training plots: results.png from results.csv, the task weights of adaptive balancers, gradient interference."""
from __future__ import annotations

import json
from pathlib import Path

import matplotlib.pyplot as plt
import pandas as pd

from utils.plots import save_figure
from utils.training.interference import OVERALL, summarize_interference

_RESULTS_LAYOUT = [
    "train/box_loss", "train/obj_loss", "train/cls_loss", "metrics/precision", "metrics/recall",
    "val/box_loss", "val/obj_loss", "val/cls_loss", "metrics/mAP_0.5", "metrics/mAP_0.5:0.95",
]  # fmt: skip


def plot_results(csv_path: str | Path) -> Path:
    """results.png next to results.csv: a 2x5 grid of the training curves, raw values plus a smoothed line."""
    csv_path = Path(csv_path)
    data = pd.read_csv(csv_path)
    data.columns = [str(c).strip() for c in data.columns]
    x = data["epoch"] if "epoch" in data.columns else pd.Series(range(len(data)))
    columns = [c for c in _RESULTS_LAYOUT if c in data.columns] or [c for c in data.columns if c != "epoch"][:10]
    fig, axes = plt.subplots(2, 5, figsize=(12, 6), tight_layout=True)
    for ax, column in zip(axes.ravel(), columns):
        values = pd.to_numeric(data[column], errors="coerce")
        ax.plot(x, values, marker=".", linewidth=2, markersize=8, label="results")
        window = max(3, len(values) // 10)
        smoothed = values.rolling(window, center=True, min_periods=1).mean()
        ax.plot(x, smoothed, ":", linewidth=2, label="smooth")
        ax.set_title(column, fontsize=12)
    axes.ravel()[1].legend()
    for ax in axes.ravel()[len(columns):]:
        ax.axis("off")
    return save_figure(fig, csv_path.with_name("results.png"), dpi=200)


def plot_gradnorm(history_path: str | Path, save_path: str | Path | None = None) -> Path:
    """gradnorm_weights.png from training_history.json steps: the task weights, and beside them what drives them.

    GradNorm: the weighted gradient-norm ratio G_view/G_det on W; uncertainty weighting: the learned
    log-variances; PCGrad: the fraction of steps whose task gradients conflicted.
    """
    history_path = Path(history_path)
    steps = [s for s in json.loads(history_path.read_text()).get("steps", []) if "weights" in s]
    save_path = Path(save_path) if save_path else history_path.parent / "gradnorm_weights.png"
    fig, (ax_w, ax_g) = plt.subplots(1, 2, figsize=(12, 4), tight_layout=True)
    title = "weighted gradient-norm ratio on W"
    if steps:
        x = [s["step"] for s in steps]
        for name in steps[0]["weights"]:
            ax_w.plot(x, [s["weights"][name] for s in steps], label=f"w_{name}")
        if "grad_norm" in steps[0]:
            names = list(steps[0]["grad_norm"])
            if len(names) == 2:
                ratio = [s["grad_norm"][names[1]] / max(s["grad_norm"][names[0]], 1e-12) for s in steps]
                ax_g.plot(x, ratio, label=f"G_{names[1]} / G_{names[0]}")
                ax_g.axhline(1.0, color="grey", linestyle="--", linewidth=1)
                ax_g.set_yscale("log")
        elif "log_var" in steps[0]:
            title = "learned log-variances s_i"
            for name in steps[0]["log_var"]:
                ax_g.plot(x, [s["log_var"][name] for s in steps], label=f"s_{name}")
        elif "conflict_fraction" in steps[0]:
            title = "fraction of steps with conflicting task gradients"
            ax_g.plot(x, [s["conflict_fraction"] for s in steps], label="conflict fraction")
    ax_w.set(xlabel="optimizer step (iteration)", ylabel="task weight", title="task weights")
    ax_g.set(xlabel="optimizer step (iteration)", ylabel="value", title=title)
    for ax in (ax_w, ax_g):
        ax.legend() if ax.get_legend_handles_labels()[0] else None
        ax.grid(alpha=0.3)
    fig.savefig(save_path, dpi=150)
    plt.close(fig)
    return save_path


def plot_interference(history_path: str | Path, save_path: str | Path | None = None) -> Path:
    """interference.png: cosine of the detection and view gradients (per stage and overall) and their norm ratio."""
    history_path = Path(history_path)
    records = json.loads(history_path.read_text()).get("interference", [])
    save_path = Path(save_path) if save_path else history_path.parent / "interference.png"
    fig, (ax_c, ax_r) = plt.subplots(1, 2, figsize=(12, 4), tight_layout=True)
    if records:
        x = [r["step"] for r in records]
        summary = summarize_interference(records)
        for stage in [*records[0]["stages"], OVERALL]:
            values = [r[OVERALL]["cosine"] if stage == OVERALL else r["stages"][stage]["cosine"] for r in records]
            style = {"color": "black", "linewidth": 2} if stage == OVERALL else {"linewidth": 1, "alpha": 0.8}
            ax_c.plot(x, values, label=f"{stage} (conflict {summary[stage]['conflict_fraction']:.0%})", **style)
        ax_r.plot(x, [r[OVERALL]["norm_ratio"] for r in records], color="black")
        ax_r.set_yscale("log")
        tasks = records[0].get("tasks", ["a", "b"])
        ax_r.set_ylabel(f"‖g_{tasks[1]}‖ / ‖g_{tasks[0]}‖")
    ax_c.axhline(0.0, color="grey", linestyle="--", linewidth=1)
    ax_c.set(xlabel="iteration", ylabel="cosine", title="cosine of task gradients on shared parameters")
    ax_r.set(xlabel="iteration", title="gradient norm ratio (weighted losses)")
    for ax in (ax_c, ax_r):
        ax.legend(fontsize=7) if ax.get_legend_handles_labels()[0] else None
        ax.grid(alpha=0.3)
    fig.savefig(save_path, dpi=150)
    plt.close(fig)
    return save_path
