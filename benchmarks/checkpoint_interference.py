"""Direction or magnitude? The two tasks' gradients on the shared layers, measured on saved checkpoints.

For every weights/epoch<N>.pt and last.pt of each run folder given: the raw (non-EMA) weights, in train mode as
the optimizer saw them, on the same training batches for every run (a seeded shuffle of the train split, no
augmentation). On each batch the unweighted task losses of training (utils.training.step.task_losses) give
g_det and g_view on the shared parameters (utils.training.interference, the machinery of --interference-every);
per checkpoint: their mean cosine (direction; < 0 is conflict), the share of batches in conflict, and the median
norm ratio ||w_view g_view|| / ||w_det g_det|| with the task weights the checkpoint's balancer held (magnitude:
what the optimizer sees). The same images for every run, so runs compare directly; --interference-every during
training samples whatever batch comes and costs training time, this costs none.

    python benchmarks/checkpoint_interference.py --data runs/splits/med_patient_s0/med_patient_s0.yaml \
        --runs runs/compare/patient_e40/med_patient_s0/gradnorm_s0 ... --out benchmarks/results/interference_e40

Writes checkpoint_interference.csv (one row per run and checkpoint) and checkpoint_interference.png into --out
and prints the mean over checkpoints per run. Runs without a shared task pair (dual, single-task) are skipped.
Checkpoints already in --out's CSV (same settings) are kept, not measured again, so it grows as runs finish.
"""
from __future__ import annotations

import argparse
import json
import random
import re
import sys
from pathlib import Path

import pandas as pd
import torch
from tqdm import tqdm

ROOT = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(ROOT))

from models.yolo_cls import JointModel, build_model  # noqa: E402
from utils.checkpoints import load_checkpoint  # noqa: E402
from utils.compare.interference_table import split_and_strategy  # noqa: E402
from utils.data.dataset_yaml import check_dataset  # noqa: E402
from utils.data.loaders import create_dataloader  # noqa: E402
from utils.data.sources import find_images  # noqa: E402
from utils.training.interference import OVERALL, InterferenceMonitor, summarize_interference  # noqa: E402
from utils.training.loss import ComputeLoss  # noqa: E402
from utils.training.step import task_losses  # noqa: E402

TASKS = ("det", "view")


def run_checkpoints(run: Path) -> list[tuple[int, Path]]:
    """(epoch, path) of weights/epoch<N>.pt in epoch order, then last.pt (epoch read from the file)."""
    found = sorted((int(m.group(1)), p) for p in (run / "weights").glob("epoch*.pt")
                   if (m := re.fullmatch(r"epoch(\d+)\.pt", p.name)))
    last = run / "weights" / "last.pt"
    if last.is_file():  # a finished run's last.pt says epoch -1 (YOLOv5's convention); its history knows
        history = json.loads((run / "training_history.json").read_text()) if (run / "training_history.json").is_file() \
            else {}
        found.append((max((e["epoch"] for e in history.get("epochs", [])), default=-1), last))
    return found


def checkpoint_weights(ckpt: dict) -> dict[str, float] | None:
    """The task weights in force when the checkpoint was saved: the balancer's, else the hyp's fixed ones."""
    state = ckpt.get("balancer") or {}
    if list(state.get("task_names", [])) == list(TASKS):
        return dict(zip(TASKS, (float(w) for w in state["weights"])))
    hyp = ckpt.get("hyp") or {}
    if "det_task" in hyp and "view_task" in hyp:
        return {"det": float(hyp["det_task"]), "view": float(hyp["view_task"])}
    return None


def measure(ckpt: dict, batches: list, n_views: int, seed: int = 0) -> dict | None:
    """Mean cosine, conflict share and median norm ratios over the batches for one checkpoint; None if the model
    has no two tasks sharing parameters (dual, detection only).

    Train mode, as in training: BatchNorm on batch statistics and the view head's dropout on, its masks seeded the
    same way for every checkpoint so that runs and epochs see the same draw.
    """
    model = build_model(ckpt["model_yaml"], nc=len(ckpt["names"]), n_views=n_views)
    if not isinstance(model, JointModel):
        return None
    model.load_state_dict(ckpt["model"])  # the raw weights: what the optimizer stepped, not the EMA
    model.float().train()
    weights = checkpoint_weights(ckpt)
    if weights is None or not weights["det"]:
        return None
    monitor = InterferenceMonitor(model, TASKS, every=1)
    compute_loss = ComputeLoss(model, ckpt["hyp"])  # the checkpoint's hyp is already scaled to model and size
    records = []
    torch.manual_seed(seed)
    for imgs, targets, views in batches:
        losses, _ = task_losses(model(imgs.float() / 255), targets, views, compute_loss, imgs.shape[0])
        record = monitor.measure(losses, iteration=len(records), epoch=int(ckpt.get("epoch", -1)))
        if record is not None:
            records.append(record)
        model.zero_grad(set_to_none=True)
    if not records:
        return None
    summary = summarize_interference(records)[OVERALL]
    scale = weights["view"] / weights["det"]
    return {"weight_det": weights["det"], "weight_view": weights["view"],
            "batches_measured": summary["n"], "mean_cosine": summary["mean_cosine"],
            "conflict_fraction": summary["conflict_fraction"], "median_ratio_unweighted": summary["median_norm_ratio"],
            "median_ratio_weighted": summary["median_norm_ratio"] * scale}


def main(argv: list[str] | None = None) -> pd.DataFrame:
    p = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    p.add_argument("--runs", type=Path, nargs="+", required=True, help="run folders with weights/epoch*.pt")
    p.add_argument("--data", required=True, help="dataset YAML whose train split gives the batches")
    p.add_argument("--img", type=int, default=320)
    p.add_argument("--batches", type=int, default=8, help="training batches measured per checkpoint")
    p.add_argument("--batch-size", type=int, default=16, help="the training batch")
    p.add_argument("--seed", type=int, default=0, help="seed of the shuffle that picks the images")
    p.add_argument("--out", type=Path, required=True, help="folder for checkpoint_interference.csv/.png")
    opt = p.parse_args(argv)
    opt.out.mkdir(parents=True, exist_ok=True)

    data = check_dataset(opt.data)
    n_views = len(data["cls_names"])
    images = find_images(data["train"])
    random.Random(opt.seed).shuffle(images)
    loader, _ = create_dataloader(images[:opt.batches * opt.batch_size], opt.img, opt.batch_size, 32, workers=0,
                                  nc=len(data["names"]), n_views=n_views, prefix="batches: ")
    batches = [(imgs, targets, views) for imgs, targets, views, *_ in loader]

    csv_path = opt.out / "checkpoint_interference.csv"
    settings = {"data": Path(opt.data).name, "img": opt.img, "batches": opt.batches, "batch_size": opt.batch_size,
                "seed": opt.seed}
    earlier = pd.read_csv(csv_path) if csv_path.is_file() else pd.DataFrame()
    for key, value in settings.items():
        if not earlier.empty and (key not in earlier or (earlier[key] != value).any()):
            raise SystemExit(f"{csv_path}: measured with other settings ({key}); give another --out")
    done = set() if earlier.empty else set(zip(earlier["run"], earlier["epoch"]))
    rows = []
    for run in opt.runs:
        name = f"{run.parent.name}/{run.name}"  # split/run: the same run name recurs in every split
        for epoch, path in tqdm(run_checkpoints(run), desc=name):
            if (name, epoch) in done:  # measured before, or last.pt repeating an epoch<N>.pt of its final epoch
                continue
            result = measure(load_checkpoint(path), batches, n_views, opt.seed)
            if result is None:
                print(f"{run}: no two tasks share parameters here, skipped")
                break
            rows.append({"run": name, "checkpoint": path.name, **result, "epoch": epoch, **settings})
            done.add((name, epoch))
    table = pd.concat([earlier, pd.DataFrame(rows)], ignore_index=True)
    if table.empty:
        raise SystemExit("no run given has two tasks sharing parameters: nothing to measure")
    table = table.sort_values(["run", "epoch"])
    table.to_csv(csv_path, index=False, float_format="%.5g")
    summary = table.groupby("run")[["mean_cosine", "conflict_fraction", "median_ratio_weighted"]].mean()
    print(summary.to_string(float_format=lambda v: f"{v:.3f}"))
    plot(table, opt.out / "checkpoint_interference.png")
    return table


def plot(table: pd.DataFrame, path: Path) -> None:
    """Cosine (direction) and weighted norm ratio (magnitude) against the epoch: one line per run, one colour per
    strategy (seeds share it), one line style per split."""
    import matplotlib
    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    def split_strategy(run: str) -> tuple[str, str]:
        # a run folder not named <strategy>_s<seed> is a strategy of its own
        return split_and_strategy(run) or (run.split("/")[0], run.split("/")[-1])

    runs = sorted(table["run"])
    colours = {name: f"C{i % 10}" for i, name in enumerate(dict.fromkeys(split_strategy(r)[1] for r in runs))}
    splits = list(dict.fromkeys(split_strategy(r)[0] for r in runs))
    styles = {split: ("-", "--", ":", "-.")[i % 4] for i, split in enumerate(splits)}
    fig, axes = plt.subplots(1, 2, figsize=(11, 4), tight_layout=True)
    labelled = set()
    for run, part in table.sort_values("epoch").groupby("run"):
        split, name = split_strategy(run)
        label = f"{name} ({split})" if len(splits) > 1 else name
        style = dict(color=colours[name], linestyle=styles[split], marker="o", markersize=3,
                     label=None if label in labelled else label)
        labelled.add(label)
        axes[0].plot(part["epoch"], part["mean_cosine"], **style)
        axes[1].plot(part["epoch"], part["median_ratio_weighted"], **style)
    axes[0].axhline(0, color="grey", lw=0.8)
    axes[0].set_ylabel("mean cosine of g_det and g_view (< 0: conflict)")
    axes[1].set_yscale("log")
    axes[1].set_ylabel("median ||w_view g_view|| / ||w_det g_det||")
    for ax in axes:
        ax.set_xlabel("epoch")
        ax.grid(alpha=0.3)
    axes[1].legend(fontsize=7)
    fig.suptitle("Shared-layer gradients on the same training batches, per saved checkpoint (one line per seed)",
                 fontsize=9)
    fig.savefig(path, dpi=120)
    plt.close(fig)


if __name__ == "__main__":
    main()
