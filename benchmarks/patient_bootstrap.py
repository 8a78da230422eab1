"""Would a strategy's lead on test survive other patients? A patient bootstrap of a comparison's test figures.

Seeds measure how much training varies; the test set (17 patients on the patient split) varies too. Every finished
run of one split of a comparison is evaluated once on the test set with each image's predictions kept
(utils.evaluation.validation.ImageMatches, cached in the run folder); then the test patients are drawn with
replacement --resamples times, the same draw for every run, and mAP50, view accuracy and delta_m are recomputed
from the kept matches (utils.compare.bootstrap). Per joint strategy, the mean over its seeds, it prints and writes:
mAP50 minus detection_only's, view accuracy minus view_only's, delta_m, and delta_m minus --reference's, each on
the whole test set (as the report) with the 2.5-97.5 percentile interval over resamples and the share of
resamples above 0; then the same with each strategy's seeds also drawn with replacement in every resample, an
interval that covers the seed spread as well as patient sampling.

    python benchmarks/patient_bootstrap.py runs/compare/patient_e40/med_patient_s0 \\
        --data runs/splits/med_patient_s0/med_patient_s0.yaml --img 320 --epochs 40 --checkpoint best \\
        --out benchmarks/results/compare_patient_e40/bootstrap

Writes patient_bootstrap_<checkpoint>.csv / .md / .png into --out; `compare.py --patient-bootstrap CSV` quotes the
CSV in the report's conclusion.
"""
from __future__ import annotations

import argparse
import sys
import time
from pathlib import Path

import matplotlib

matplotlib.use("Agg")
import matplotlib.pyplot as plt  # noqa: E402
import numpy as np  # noqa: E402
import pandas as pd  # noqa: E402

sys.path.insert(0, str(Path(__file__).resolve().parents[1]))
from utils.compare.bootstrap import (bootstrap, check_same_images, differences, interval,  # noqa: E402
                                     patient_groups, seed_means)
from utils.compare.evaluation import EvalSettings  # noqa: E402
from utils.compare.image_matches import test_matches  # noqa: E402
from utils.compare.report import markdown_table  # noqa: E402
from utils.compare.records import recorded  # noqa: E402
from utils.compare.runs import parse_run_name, run_finished  # noqa: E402
from utils.compare.strategies import parse_fixed_weight  # noqa: E402

def finished_runs(split_dir: Path, epochs: int, records: Path | None = None) -> dict[str, list[Path]]:
    """{strategy: folders of its finished seeds (complete, or stopped early by --patience, as the report counts
    them)}: the other strategies by name, then the fixed weights ascending. A run whose folder is gone or unfinished
    counts through its record in `records` (the split's records folder, compare.py --records), so that it is not
    silently missing from the table: a record keeps no weights, and test_matches stops there."""
    runs: dict[str, dict[int, Path]] = {}
    for folder, finished in ((records, recorded), (split_dir, run_finished)):  # a live run folder wins
        for path in sorted(p for p in folder.iterdir() if p.is_dir()) if folder and folder.is_dir() else []:
            parsed = parse_run_name(path.name)
            if parsed and finished(path, epochs):
                runs.setdefault(parsed[0], {})[parsed[1]] = path
    runs = {s: [seeds[k] for k in sorted(seeds)] for s, seeds in runs.items()}
    weight = {s: parse_fixed_weight(s) for s in runs}
    return {s: runs[s] for s in sorted(runs, key=lambda s: (weight[s] is not None, weight[s] or 0, s))}


def summary_rows(per_seed: dict[str, np.ndarray], reference: str | None, about: dict, seed: int) -> list[dict]:
    """One row per strategy and difference: the interval over patient draws (low, high, share_above_zero) and over
    patient and seed draws (*_seeds). `about` (split, checkpoint, resamples, groups) is added to each row, so that
    compare.py --patient-bootstrap can tell which report it belongs to."""
    patients = differences(seed_means(per_seed), reference)
    both = differences(seed_means(per_seed, np.random.default_rng(seed + 1)), reference)
    rows = []
    for (strategy, comparison), values in patients.items():
        alone, mixed = interval(values), interval(both[(strategy, comparison)])
        rows.append({**about, "strategy": strategy, "seeds": per_seed[strategy].shape[1], "comparison": comparison,
                     "observed": alone.observed, "low": alone.low, "high": alone.high,
                     "share_above_zero": alone.share_above_zero, "low_seeds": mixed.low, "high_seeds": mixed.high,
                     "share_above_zero_seeds": mixed.share_above_zero})
    return rows


def markdown(rows: list[dict], groups: int, images: int, resamples: int, checkpoint: str) -> str:
    def signed(x: float, percent: bool) -> str:
        return "n/a" if not np.isfinite(x) else (f"{x * 100:+.1f} %" if percent else f"{x:+.3f}")

    def share(x: float) -> str:
        return "n/a" if not np.isfinite(x) else f"{x:.1%}"

    table = []
    for r in rows:
        percent = r["comparison"].startswith("delta_m")
        table.append([r["strategy"], str(r["seeds"]), r["comparison"], signed(r["observed"], percent),
                      f"{signed(r['low'], percent)} to {signed(r['high'], percent)}", share(r["share_above_zero"]),
                      f"{signed(r['low_seeds'], percent)} to {signed(r['high_seeds'], percent)}",
                      share(r["share_above_zero_seeds"])])
    head = (f"Patient bootstrap, {checkpoint}.pt on test: {images} images of {groups} patients, {resamples} "
            "resamples of the patients (the same draws for every run). Figures are the mean over each strategy's "
            "seeds. The patient interval (2.5-97.5 %) covers which patients were tested; the second one also draws "
            "each strategy's seeds with replacement, so it covers the seed spread too (crudely with 2-3 seeds).\n\n")
    return head + markdown_table(["strategy", "seeds", "difference", "whole test set", "95 % patient interval",
                                  "draws above 0", "95 % patients and seeds", "draws above 0"], table) + "\n"


def plot(rows: list[dict], path: Path, checkpoint: str) -> None:
    frame = pd.DataFrame(rows)
    comparisons = list(dict.fromkeys(frame.comparison))
    fig, axes = plt.subplots(1, len(comparisons), figsize=(4 * len(comparisons), 0.4 * frame.strategy.nunique() + 1.6),
                             sharey=True, squeeze=False)
    order = list(dict.fromkeys(frame.strategy))[::-1]
    seeds = {s: int(n) for s, n in frame.groupby("strategy").seeds.first().items()}
    for ax, comparison in zip(axes[0], comparisons):
        part = frame[frame.comparison == comparison].set_index("strategy").reindex(order)
        y = np.arange(len(order))
        ax.hlines(y, part.low_seeds, part.high_seeds, color="lightgrey", lw=6, label="patients and seeds")
        ax.errorbar(part.observed, y, xerr=[part.observed - part.low, part.high - part.observed], fmt="o", capsize=3,
                    label="patients")
        ax.axvline(0, color="grey", lw=0.8)
        ax.set_title(comparison, fontsize=10)
        ax.set_xlabel("relative change (0.1 = 10 %)" if comparison.startswith("delta_m") else "difference")
        ax.set_yticks(y, [f"{s} ({seeds[s]} seed{'s' * (seeds[s] > 1)})" for s in order])
    axes[0][0].legend(fontsize=8, loc="upper left")
    fig.suptitle(f"test, {checkpoint}.pt: whole test set (dot) and 95 % bootstrap intervals", fontsize=10)
    fig.tight_layout()
    fig.savefig(path, dpi=120)
    plt.close(fig)


def main(argv: list[str] | None = None) -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("split_dir", type=Path, help="runs/compare/NAME/SPLIT: the run folders of one split")
    parser.add_argument("--data", type=Path, required=True, help="that split's dataset YAML (with a test split)")
    parser.add_argument("--img", type=int, default=640, help="evaluation image size (the comparison's --img)")
    parser.add_argument("--epochs", type=int, required=True, help="the comparison's --epochs: only finished runs count")
    parser.add_argument("--checkpoint", choices=("best", "last"), default="best")
    parser.add_argument("--resamples", type=int, default=2000)
    parser.add_argument("--seed", type=int, default=0, help="seed of the patient draws")
    parser.add_argument("--reference", default="gradnorm", help="strategy whose delta_m the others are paired with")
    parser.add_argument("--by", default="patient", choices=("patient", "video", "image"), help="what one draw brings")
    parser.add_argument("--workers", type=int, default=2)
    parser.add_argument("--records", type=Path, default=None,
                        help="the split's records folder (compare.py --records DIR: DIR/<split>): a recorded run "
                             "whose folder is gone stops the bootstrap instead of being left out of its table")
    parser.add_argument("--out", type=Path, required=True)
    opt = parser.parse_args(argv)

    settings = EvalSettings(imgsz=opt.img, workers=opt.workers)
    runs_by_strategy = finished_runs(opt.split_dir, opt.epochs, opt.records)
    if not runs_by_strategy:
        raise SystemExit(f"{opt.split_dir}: no finished <strategy>_s<seed> run of {opt.epochs} epochs")
    runs = {s: [test_matches(d, opt.checkpoint, opt.data, settings) for d in dirs]
            for s, dirs in runs_by_strategy.items()}
    groups = patient_groups(check_same_images(runs), opt.by)
    t0 = time.perf_counter()
    per_seed = bootstrap(runs, groups, opt.resamples, opt.seed)
    print(f"{opt.resamples} resamples of {len(groups)} groups in {time.perf_counter() - t0:.0f} s")
    about = {"split": opt.split_dir.name, "checkpoint": opt.checkpoint, "resamples": opt.resamples,
             "groups": len(groups)}
    rows = summary_rows(per_seed, opt.reference, about, opt.seed)
    opt.out.mkdir(parents=True, exist_ok=True)
    stem = opt.out / f"patient_bootstrap_{opt.checkpoint}"
    pd.DataFrame(rows).to_csv(stem.with_suffix(".csv"), index=False, float_format="%.5f")
    text = markdown(rows, len(groups), sum(len(g) for g in groups), opt.resamples, opt.checkpoint)
    stem.with_suffix(".md").write_text(text)
    plot(rows, stem.with_suffix(".png"), opt.checkpoint)
    print(text)


if __name__ == "__main__":
    main()
