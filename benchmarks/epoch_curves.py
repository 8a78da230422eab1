"""Test figures of every saved epoch of several comparison runs, grouped by strategy: where a task peaks on new
patients, and whether best.pt (picked on val) or last.pt reads it fairly.

    python benchmarks/time_to_accuracy.py runs/compare/NAME/SPLIT/view_only_s0 --test-data SPLIT.yaml \\
        --out benchmarks/results/NAME/test_curves/view_only_s0          # once per run: writes view_only_s0_test.csv
    python benchmarks/epoch_curves.py benchmarks/results/NAME/test_curves --view-ceiling 0.682

Reads each `<strategy>_s<seed>_test.csv` in the folder (time_to_accuracy.py's test curve: weights/epoch{N}.pt of
--save-period, then last.pt), prints per strategy the mean over seeds at each saved epoch as a markdown table, and
draws test mAP50 and test view accuracy against the epoch (one thin line per seed, the mean thick) into
epoch_curves.png in the same folder, and each strategy's late phase: every run's mean over its saved epochs from
--late-from on, then mean ± sd over seeds. Descriptive only: these figures read the test set at every saved epoch, so
they explain a choice made on val and never make one.
"""
from __future__ import annotations

import argparse
import re
import sys
from pathlib import Path

import matplotlib

matplotlib.use("Agg")
import matplotlib.pyplot as plt  # noqa: E402
import pandas as pd  # noqa: E402

sys.path.insert(0, str(Path(__file__).resolve().parents[1]))
from utils.compare.columns import not_applicable  # noqa: E402
from utils.compare.report import markdown_table  # noqa: E402

TEST_CURVE = re.compile(r"(?P<strategy>.+)_s(?P<seed>\d+)_test\.csv")
METRICS = {"test_mAP50": "test mAP50", "test_view_accuracy": "test view accuracy"}


def read_curves(folder: Path) -> pd.DataFrame:
    """Every run's test curve in the folder, one row per (run, saved epoch), with strategy and seed columns."""
    frames = []
    for path in sorted(folder.glob("*_test.csv")):
        match = TEST_CURVE.fullmatch(path.name)
        if not match:
            continue
        frame = pd.read_csv(path)
        missing = {"epoch", *METRICS} - set(frame.columns)
        if missing:
            raise SystemExit(f"{path}: no column {', '.join(sorted(missing))} (benchmarks/time_to_accuracy.py "
                             "--test-data writes these files)")
        frames.append(frame.assign(strategy=match["strategy"], seed=int(match["seed"])))
    if not frames:
        raise SystemExit(f"{folder}: no <strategy>_s<seed>_test.csv (benchmarks/time_to_accuracy.py --test-data)")
    return pd.concat(frames, ignore_index=True)


def with_figure(curves: pd.DataFrame, metric: str) -> pd.DataFrame:
    """The rows with a value of the metric, without the strategies it means nothing for (view accuracy of
    detection_only, mAP50 of view_only)."""
    present = curves.dropna(subset=[metric])
    return present[[not not_applicable(s, metric) for s in present.strategy]]


def mean_by_epoch(curves: pd.DataFrame, metric: str) -> pd.DataFrame:
    """strategy x epoch: the metric's mean over the seeds that saved that epoch."""
    return with_figure(curves, metric).pivot_table(index="strategy", columns="epoch", values=metric, aggfunc="mean")


def late_means(curves: pd.DataFrame, metric: str, late_from: int) -> pd.DataFrame:
    """Per strategy, mean and sd over seeds (and the seed count) of each run's mean over its saved epochs >=
    late_from: a reading of the late phase that no single epoch's swing decides."""
    late = with_figure(curves[curves.epoch >= late_from], metric)
    per_run = late.groupby(["strategy", "seed"])[metric].mean()
    return per_run.groupby("strategy").agg(["mean", "std", "count"])


def markdown(table: pd.DataFrame, title: str) -> str:
    """A GitHub table, strategies as rows and epochs as columns, three decimals."""
    rows = [[str(strategy), *("" if pd.isna(v) else f"{v:.3f}" for v in values)]
            for strategy, values in table.iterrows()]
    return markdown_table([title, *[str(c) for c in table.columns]], rows)


def plot(curves: pd.DataFrame, out: Path, view_ceiling: float | None) -> None:
    colors = {strategy: f"C{i}" for i, strategy in enumerate(sorted(set(curves.strategy)))}  # one per strategy
    fig, axes = plt.subplots(1, len(METRICS), figsize=(12, 4.5), tight_layout=True)
    for ax, (metric, label) in zip(axes, METRICS.items()):
        means = mean_by_epoch(curves, metric)
        for strategy, row in means.iterrows():
            color = colors[strategy]
            for _, run in curves[curves.strategy == strategy].groupby("seed"):
                ax.plot(run["epoch"], run[metric], color=color, alpha=0.3, linewidth=1)
            ax.plot(row.index, row.values, "o-", color=color, ms=4, linewidth=2, label=f"{strategy} (mean)")
        if metric == "test_view_accuracy" and view_ceiling is not None:
            ax.axhline(view_ceiling, color="grey", linestyle="-.", linewidth=1,
                       label=f"copy of the nearest train frame {view_ceiling:.3f}")
        ax.set(xlabel="epoch of the saved checkpoint (the last point: last.pt)", ylabel=label, title=label)
        ax.grid(alpha=0.3)
        ax.legend(fontsize=8)
    fig.savefig(out, dpi=120)
    plt.close(fig)


def main(argv: list[str] | None = None) -> None:
    p = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    p.add_argument("folder", type=Path, help="folder of time_to_accuracy.py's <run>_test.csv files")
    p.add_argument("--view-ceiling", type=float, default=None, help="the test split's nearest-frame copy (a line)")
    p.add_argument("--late-from", type=int, default=25,
                   help="first epoch of the late phase: each run's mean over its saved epochs from here on")
    opt = p.parse_args(argv)
    curves = read_curves(opt.folder)
    for metric, label in METRICS.items():
        print(markdown(mean_by_epoch(curves, metric), f"{label}, mean over seeds; epoch"), end="\n\n")
        late = late_means(curves, metric, opt.late_from)
        print(f"{label}, each run's mean over its saved epochs >= {opt.late_from}, then mean ± sd over seeds:")
        for strategy, row in late.iterrows():
            sd = "" if pd.isna(row["std"]) else f" ± {row['std']:.3f}"
            print(f"  {strategy}: {row['mean']:.3f}{sd} (n {int(row['count'])})")
        print()
    plot(curves, opt.folder / "epoch_curves.png", opt.view_ceiling)
    print(f"wrote {opt.folder / 'epoch_curves.png'}")


if __name__ == "__main__":
    main(sys.argv[1:])
