"""Time-to-accuracy of a training run: valid mAP50 and view accuracy against training wall time.

Reads a run's training_history.json (written by every train*.py; `elapsed_s` is the wall time
since the first training step, validation included, set-up excluded), writes a CSV and a
plot, and prints when each target was first reached:

    python benchmarks/time_to_accuracy.py runs/records/fast --map50 0.60 --view-acc 0.85 --budget-min 60

With --test-data (the run's dataset YAML, which has a test split) each checkpoint the run saved
(weights/epoch{N}.pt from --save-period, and last.pt) is also evaluated on the test split with
val.py's code, and the test curve is drawn beside the valid one. That reads the test set once per
saved checkpoint: use it on a finished candidate, never to choose one.
"""
from __future__ import annotations

import argparse
import csv
import json
import math
import sys
import tempfile
from pathlib import Path

import matplotlib

matplotlib.use("Agg")
import matplotlib.pyplot as plt  # noqa: E402

ROOT = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(ROOT))
COLUMNS = ("epoch", "elapsed_min", "mAP50", "mAP50_95", "view_accuracy", "view_balanced_accuracy", "validated")
TEST_COLUMNS = ("epoch", "elapsed_min", "checkpoint", "test_mAP50", "test_mAP50_95", "test_view_accuracy")


def elapsed_minutes(history: dict, minutes_per_epoch: float | None = None) -> dict[int, float]:
    """Training minutes at the end of each recorded epoch: the run's own elapsed_s, or (epoch + 1) x a
    per-epoch time measured alone, for a run that shared the CPU (its own clock counts the sharing)."""
    if minutes_per_epoch is not None:
        return {r["epoch"]: (r["epoch"] + 1) * minutes_per_epoch for r in history["epochs"]}
    return {r["epoch"]: r["elapsed_s"] / 60 for r in history["epochs"] if "elapsed_s" in r}


def curve(history: dict, minutes_per_epoch: float | None = None) -> list[dict]:
    """One row per validated epoch: elapsed minutes and the valid metrics."""
    elapsed = elapsed_minutes(history, minutes_per_epoch)
    rows = []
    for record in history["epochs"]:
        if not record.get("validated", True) or record["epoch"] not in elapsed:
            continue
        val = record["val"]
        rows.append({"epoch": record["epoch"], "elapsed_min": elapsed[record["epoch"]], "mAP50": val["mAP_0.5"],
                     "mAP50_95": val["mAP_0.5:0.95"], "view_accuracy": val.get("view_accuracy", float("nan")),
                     "view_balanced_accuracy": val.get("view_balanced_accuracy", float("nan")), "validated": True})
    return rows


def saved_checkpoints(run: Path, history: dict) -> list[tuple[int, Path]]:
    """(epoch, file) of weights/epoch{N}.pt in epoch order, then last.pt at the last recorded epoch."""
    periodic = sorted((int(p.stem[len("epoch"):]), p) for p in (run / "weights").glob("epoch*.pt")
                      if p.stem[len("epoch"):].isdigit())
    last = run / "weights" / "last.pt"
    final = max(r["epoch"] for r in history["epochs"])
    return periodic + ([(final, last)] if last.is_file() and final not in {e for e, _ in periodic} else [])


def test_curve(run: Path, history: dict, data: str, img: int, minutes_per_epoch: float | None = None) -> list[dict]:
    """Each saved checkpoint on the test split (val.py's evaluation), at the elapsed minutes of its epoch."""
    import val

    elapsed = elapsed_minutes(history, minutes_per_epoch)
    rows = []
    with tempfile.TemporaryDirectory(prefix="test_curve_") as tmp:
        for epoch, weights in saved_checkpoints(run, history):
            (result,) = val.main(val.parse_opt(["--weights", str(weights), "--data", data, "--img", str(img),
                                                "--task", "test", "--workers", "1", "--project", tmp,
                                                "--name", f"epoch{epoch}"]))
            view = result.view.accuracy if result.view is not None else math.nan
            rows.append({"epoch": epoch, "elapsed_min": elapsed.get(epoch, math.nan), "checkpoint": weights.name,
                         "test_mAP50": result.map50, "test_mAP50_95": result.map, "test_view_accuracy": view})
    return rows


def write_csv(path: Path, rows: list[dict], columns: tuple[str, ...]) -> None:
    with open(path, "w", newline="") as f:
        writer = csv.DictWriter(f, fieldnames=columns)
        writer.writeheader()
        writer.writerows({k: (round(v, 4) if isinstance(v, float) else v) for k, v in r.items()} for r in rows)


def first_reached(rows: list[dict], key: str, target: float) -> dict | None:
    return next((r for r in rows if r[key] >= target), None)


def main() -> None:
    p = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    p.add_argument("run", type=Path, help="run folder holding training_history.json")
    p.add_argument("--map50", type=float, default=0.60)
    p.add_argument("--view-acc", type=float, default=0.85)
    p.add_argument("--budget-min", type=float, default=60.0)
    p.add_argument("--out", type=Path, default=ROOT / "benchmarks" / "time_to_accuracy",
                   help="writes OUT.csv and OUT.png")
    p.add_argument("--test-data", default="", help="dataset YAML with a test split: evaluate saved checkpoints on it")
    p.add_argument("--img", type=int, default=320, help="image size for --test-data")
    p.add_argument("--view-ceiling", type=float, default=None, help="the test split's view-label ceiling (a line)")
    p.add_argument("--minutes-per-epoch", type=float, default=None,
                   help="time axis = (epoch + 1) x this, measured alone, for a run that shared the CPU")
    opt = p.parse_args()

    history = json.loads((opt.run / "training_history.json").read_text())
    rows = curve(history, opt.minutes_per_epoch)
    if not rows:
        raise SystemExit(f"{opt.run}/training_history.json has no validated epoch with elapsed_s")
    opt.out.parent.mkdir(parents=True, exist_ok=True)
    write_csv(opt.out.with_suffix(".csv"), rows, COLUMNS)
    tests = test_curve(opt.run, history, opt.test_data, opt.img, opt.minutes_per_epoch) if opt.test_data else []
    if tests:
        write_csv(opt.out.parent / f"{opt.out.name}_test.csv", tests, TEST_COLUMNS)

    fig, ax = plt.subplots(figsize=(8, 4.5), tight_layout=True)
    t = [r["elapsed_min"] for r in rows]
    ax.plot(t, [r["mAP50"] for r in rows], "o-", ms=3, label="valid mAP50")
    ax.plot(t, [r["view_accuracy"] for r in rows], "s-", ms=3, label="valid view accuracy")
    if tests:
        t_test = [r["elapsed_min"] for r in tests]
        ax.plot(t_test, [r["test_mAP50"] for r in tests], "D--", ms=4, color="C0",
                label="test mAP50 (saved checkpoints)")
        ax.plot(t_test, [r["test_view_accuracy"] for r in tests], "D--", ms=4, color="C1",
                label="test view accuracy (saved checkpoints)")
    if opt.view_ceiling is not None:
        ax.axhline(opt.view_ceiling, color="C1", linestyle="-.", linewidth=1,
                   label=f"test view-label ceiling {opt.view_ceiling:.3f}")
    ax.axhline(opt.map50, color="C0", linestyle=":", linewidth=1, label=f"mAP50 target {opt.map50}")
    ax.axhline(opt.view_acc, color="C1", linestyle=":", linewidth=1, label=f"view accuracy target {opt.view_acc}")
    ax.axvline(opt.budget_min, color="grey", linestyle="--", linewidth=1, label=f"{opt.budget_min:.0f} min budget")
    clock = ("min, validation included" if opt.minutes_per_epoch is None
             else f"min: epochs x {opt.minutes_per_epoch:.2f} measured alone")
    ax.set(xlabel=f"training wall time ({clock})", ylabel="valid (and test) metric", ylim=(0, 1),
           title=f"time to accuracy: {opt.run.name} ({history['run'].get('script', 'train.py')})")
    ax.grid(alpha=0.3)
    ax.legend(fontsize=8)
    fig.savefig(opt.out.with_suffix(".png"), dpi=150)
    plt.close(fig)

    print(f"{opt.run}: {len(rows)} validated epochs, last at {rows[-1]['elapsed_min']:.1f} min")
    for key, target in (("mAP50", opt.map50), ("view_accuracy", opt.view_acc)):
        hit = first_reached(rows, key, target)
        best = max(rows, key=lambda r: r[key])
        first = f"first at epoch {hit['epoch']}, {hit['elapsed_min']:.1f} min" if hit else "not reached"
        print(f"  {key} >= {target}: " + first
              + f"; best {best[key]:.3f} at epoch {best['epoch']} ({best['elapsed_min']:.1f} min)")
    for r in tests:
        print(f"  test, {r['checkpoint']} (epoch {r['epoch']}, {r['elapsed_min']:.1f} min): "
              f"mAP50 {r['test_mAP50']:.3f}, "
              f"mAP50-95 {r['test_mAP50_95']:.3f}, view accuracy {r['test_view_accuracy']:.3f}")
    both = next((r for r in rows if r["mAP50"] >= opt.map50 and r["view_accuracy"] >= opt.view_acc), None)
    print("  both targets in one epoch: " + (f"epoch {both['epoch']}, {both['elapsed_min']:.1f} min" if both else "no"))
    print(f"wrote {opt.out.with_suffix('.csv')} and {opt.out.with_suffix('.png')}")


if __name__ == "__main__":
    main()
