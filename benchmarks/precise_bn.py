"""How much do stale BatchNorm statistics cost? Each epoch's weights, validated as saved and recalibrated.

Takes a run trained with --save-period 1 (weights/epoch*.pt), validates every epoch's EMA
weights twice on the dataset's val split: with the BatchNorm statistics the checkpoint holds,
and after recomputing them on N training images (utils/training/precise_bn.py).
The weights are the same in both columns, so the difference is the statistics alone. Writes
precise_bn.csv and precise_bn.png into --out and prints the table.

    python benchmarks/precise_bn.py --run runs/train/exp --data data/med.yaml --img 320

The recalibration images are the first N of the train split in a seeded shuffle, without
augmentation.
"""
from __future__ import annotations

import argparse
import random
import re
import sys
from pathlib import Path

import pandas as pd
import torch
from tqdm import tqdm

ROOT = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(ROOT))

from models.yolo_cls import build_model  # noqa: E402
from utils.checkpoints import inference_state, load_checkpoint  # noqa: E402
from utils.data.dataset_yaml import check_dataset  # noqa: E402
from utils.data.loaders import create_dataloader  # noqa: E402
from utils.data.sources import find_images  # noqa: E402
from utils.evaluation.validation import evaluate  # noqa: E402
from utils.training.precise_bn import recalibrate_batchnorm  # noqa: E402


def epoch_checkpoints(run: Path) -> list[tuple[int, Path]]:
    """(epoch, path) of every weights/epoch<N>.pt, in epoch order."""
    found = [(int(m.group(1)), p) for p in (run / "weights").glob("epoch*.pt")
             if (m := re.fullmatch(r"epoch(\d+)\.pt", p.name))]
    if not found:
        raise SystemExit(f"{run / 'weights'}: no epoch<N>.pt files; train with --save-period 1")
    return sorted(found)


def figures(result) -> dict[str, float]:
    view = result.view_summary() or {}
    return {"mAP50": result.map50, "view_accuracy": view.get("view_accuracy", float("nan")),
            "view_loss": view.get("view_loss", float("nan"))}


def main(argv: list[str] | None = None) -> pd.DataFrame:
    p = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    p.add_argument("--run", type=Path, required=True, help="run folder with weights/epoch*.pt")
    p.add_argument("--data", required=True, help="dataset YAML: its val split is validated, its train split recalibrates")
    p.add_argument("--img", type=int, default=320)
    p.add_argument("--images", type=int, default=256, help="training images to recalibrate on")
    p.add_argument("--batch-size", type=int, default=16, help="recalibration batch (the training batch)")
    p.add_argument("--out", type=Path, default=None, help="folder for precise_bn.csv/.png (default: --run)")
    opt = p.parse_args(argv)
    out = opt.out or opt.run
    out.mkdir(parents=True, exist_ok=True)

    data = check_dataset(opt.data)
    view_names = data.get("cls_names")
    n_views = len(view_names) if view_names else None
    names = data["names"]
    train_images = find_images(data["train"])
    random.Random(0).shuffle(train_images)
    calib_loader, _ = create_dataloader(train_images[:opt.images], opt.img, opt.batch_size, 32, rect=True, workers=0,
                                        nc=len(names), n_views=n_views, prefix="recalibration: ")
    calib = [imgs for imgs, *_ in calib_loader]
    val_loader, _ = create_dataloader(data["val"], opt.img, 32, 32, rect=True, pad=0.5, workers=0, nc=len(names),
                                      n_views=n_views, prefix="val: ")
    device = torch.device("cpu")

    rows = []
    for epoch, path in tqdm(epoch_checkpoints(opt.run), desc="epochs"):
        ckpt = load_checkpoint(path)
        model = build_model(ckpt["model_yaml"], nc=len(ckpt["names"]))
        model.load_state_dict(inference_state(ckpt))
        model.eval()
        row = {"epoch": epoch}
        for label in ("as_saved", "recalibrated"):
            if label == "recalibrated":
                recalibrate_batchnorm(model, calib, lambda x: x.float() / 255)
            result = evaluate(model, val_loader, names=names, device=device, view_names=view_names)
            row.update({f"{k}_{label}": v for k, v in figures(result).items()})
        rows.append(row)
    table = pd.DataFrame(rows)
    table.to_csv(out / "precise_bn.csv", index=False, float_format="%.4f")
    print(table.to_string(index=False, float_format=lambda v: f"{v:.3f}"))
    for column in ("mAP50", "view_accuracy"):
        saved, recal = table[f"{column}_as_saved"], table[f"{column}_recalibrated"]
        print(f"{column}: mean over epochs {saved.mean():.3f} as saved, {recal.mean():.3f} recalibrated; "
              f"epoch-to-epoch change (median |diff|) {saved.diff().abs().median():.3f} vs {recal.diff().abs().median():.3f}")
    plot(table, out / "precise_bn.png", opt)
    return table


def plot(table: pd.DataFrame, path: Path, opt: argparse.Namespace) -> None:
    import matplotlib
    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    fig, axes = plt.subplots(1, 2, figsize=(10, 3.6), tight_layout=True)
    for ax, column in zip(axes, ("view_accuracy", "mAP50")):
        ax.plot(table["epoch"], table[f"{column}_as_saved"], "o-", label="as saved (running statistics)")
        ax.plot(table["epoch"], table[f"{column}_recalibrated"], "s-", label=f"recalibrated on {opt.images} train images")
        ax.set_xlabel("epoch")
        ax.set_ylabel(f"val {column}")
        ax.grid(alpha=0.3)
    axes[0].legend(fontsize=8)
    fig.suptitle(f"Same weights, two sets of BatchNorm statistics: {opt.run}", fontsize=9)
    fig.savefig(path, dpi=120)
    plt.close(fig)


if __name__ == "__main__":
    main()
