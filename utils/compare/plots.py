"""The comparison's figures: detection vs view trade-off, metric vs train time, and validation curves per epoch."""
from __future__ import annotations

import statistics
from pathlib import Path
from types import ModuleType
from typing import TYPE_CHECKING

from utils.compare.ceilings import is_bound
from utils.compare.columns import LABELS, SINGLE_TASK, TEST_PREFIX, not_applicable
from utils.compare.stats import NO_STAT, Stat, finite_number, has_test_figures
from utils.compare.strategies import parse_fixed_weight

if TYPE_CHECKING:
    from matplotlib.axes import Axes
    from matplotlib.figure import Figure


def pyplot() -> ModuleType:
    """matplotlib.pyplot on the Agg backend, imported on first use so the command line starts without it."""
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    return plt


def save_figure(fig: Figure, path: Path) -> None:
    """Write the figure at the comparison's resolution and free it."""
    fig.savefig(path, dpi=120)
    pyplot().close(fig)


def draw_point(ax: Axes, strategy: str, x: Stat, y: Stat, color: str) -> None:
    """One strategy at its mean, sd error bars on both axes, labelled with its name."""
    ax.errorbar(x.mean, y.mean, xerr=x.sd or 0, yerr=y.sd or 0, fmt="o", capsize=3, color=color, label=strategy)
    ax.annotate(strategy, (x.mean, y.mean), textcoords="offset points", xytext=(4, 4), fontsize=7)


def plot_metric_vs_cost(agg: dict, split: str, strategies: list[str], path: Path) -> None:
    """mAP50 and view accuracy against child wall time, one point per strategy (mean, sd error bars)."""
    plt = pyplot()
    fig, axes = plt.subplots(1, 2, figsize=(11, 4.5), tight_layout=True)
    for ax, column in zip(axes, ("mAP50", "view_accuracy")):
        for i, strategy in enumerate(strategies):
            stats = agg.get((split, strategy))
            if stats is None or not_applicable(strategy, column):
                continue
            x, y = stats["train_time_s"], stats[column]
            if x.mean is None or y.mean is None:
                continue
            draw_point(ax, strategy, x, y, color=f"C{i % 10}")
        ax.set(xlabel="train time (s, child wall time)", ylabel=f"valid {LABELS[column]}", ylim=(0, 1),
               title=f"{split}: {LABELS[column]} vs train time")
        ax.grid(alpha=0.3)
    if axes[0].get_legend_handles_labels()[0]:  # no finished run: an empty plot, no legend warning
        axes[0].legend(fontsize=7)
    save_figure(fig, path)


def tradeoff_panels(agg: dict, split: str, strategies: list[str]) -> list[str]:
    """Metric prefixes to draw the trade-off for: val always, test where some strategy has test figures."""
    return ["", TEST_PREFIX] if has_test_figures(agg, split, strategies) else [""]


def plot_tradeoff(agg: dict, split: str, strategies: list[str], path: Path, ceilings: dict | None = None) -> None:
    """mAP50 against view accuracy per joint strategy, with the single-task runs as reference lines.

    The picture of the dominance check: the fixed-weight sweep is drawn as a line (its Pareto front as far as
    the sweep goes), a point above and right of it beats every fixed weight on both tasks, and the dashed
    lines cross where a joint model would be as good as each task trained alone.
    """
    plt = pyplot()
    panels = tradeoff_panels(agg, split, strategies)
    fig, axes = plt.subplots(1, len(panels), figsize=(6 * len(panels), 5), tight_layout=True, squeeze=False)
    for ax, prefix in zip(axes[0], panels):
        def stat(strategy: str, column: str) -> Stat:
            return (agg.get((split, strategy)) or {}).get(prefix + column, NO_STAT)

        det_ref, view_ref = stat("detection_only", "mAP50").mean, stat("view_only", "view_accuracy").mean
        if det_ref is not None:
            ax.axhline(det_ref, ls="--", color="grey", lw=1, label="detection_only mAP50")
        if view_ref is not None:
            ax.axvline(view_ref, ls=":", color="grey", lw=1, label="view_only view accuracy")
        ceiling = (ceilings or {}).get("test" if prefix else "val")
        if ceiling:
            what = "view-label ceiling" if is_bound(ceiling) else "nearest-train-frame copy (no bound here)"
            ax.axvline(ceiling["accuracy"], ls="-.", color="tab:red", lw=1,
                       label=f"{what} {ceiling['accuracy']:.3f}")
        sweep = sorted((parse_fixed_weight(s), s) for s in strategies if parse_fixed_weight(s) is not None)
        line = [(stat(s, "view_accuracy").mean, stat(s, "mAP50").mean) for _, s in sweep]
        line = [xy for xy in line if None not in xy]
        if len(line) > 1:
            ax.plot(*zip(*line), color="black", lw=1, alpha=0.5, label="fixed-weight sweep")
        for i, strategy in enumerate(strategies):
            if strategy in SINGLE_TASK:
                continue
            x, y = stat(strategy, "view_accuracy"), stat(strategy, "mAP50")
            if x.mean is None or y.mean is None:
                continue
            draw_point(ax, strategy, x, y, color=f"C{i % 10}")
        where = "test" if prefix else "valid"
        ax.margins(0.08)
        ax.set_ylim(bottom=0)  # zoomed to the points: on an honest split mAP50 may be 0.1 and accuracy 0.7
        ax.set(xlabel=f"{where} view accuracy", ylabel=f"{where} mAP50",
               title=f"{split} ({where}): detection vs view, mean ± sd over seeds")
        ax.grid(alpha=0.3)
        if ax.get_legend_handles_labels()[0]:
            ax.legend(fontsize=7, loc="best")
    save_figure(fig, path)


def mean_curves(histories: list[dict], key: str) -> tuple[list[int], list[float]]:
    """Per validated epoch, the mean of epochs[*].val[key] over the runs that have it."""
    by_epoch: dict[int, list[float]] = {}
    for history in histories:
        for record in history.get("epochs", []):
            value = finite_number(record.get("val", {}).get(key))
            if record.get("validated", True) and value is not None:
                by_epoch.setdefault(int(record["epoch"]), []).append(value)
    epochs = sorted(by_epoch)
    return epochs, [statistics.fmean(by_epoch[e]) for e in epochs]


def plot_curves(histories: dict[str, list[dict]], split: str, path: Path) -> None:
    """Valid mAP50 and view accuracy per epoch, mean over seeds, one line per strategy."""
    plt = pyplot()
    from matplotlib.ticker import MaxNLocator

    fig, axes = plt.subplots(1, 2, figsize=(11, 4.5), tight_layout=True)
    for ax, (key, column) in zip(axes, (("mAP_0.5", "mAP50"), ("view_accuracy", "view_accuracy"))):
        for i, (strategy, runs) in enumerate(histories.items()):
            if not_applicable(strategy, column):
                continue
            epochs, values = mean_curves(runs, key)
            if epochs:
                ax.plot(epochs, values, "o-", ms=3, color=f"C{i % 10}", label=strategy)
        ax.set(xlabel="epoch", ylabel=f"valid {LABELS[column]} (mean over seeds)", title=f"{split}: {LABELS[column]}",
               ylim=(0, 1))
        ax.xaxis.set_major_locator(MaxNLocator(integer=True))
        ax.grid(alpha=0.3)
        if ax.get_legend_handles_labels()[0]:
            ax.legend(fontsize=7)
    save_figure(fig, path)
