"""Which neck levels should the view head pool? A measurement, not a guess.

Trains the joint model once per level set on the med TRAIN split minus a patient-grouped
hold-out (no patient of the hold-out is trained on), and reports view accuracy, balanced
accuracy and detection mAP on that hold-out. The shipped valid split is not used, so the
default is not tuned to it.

    python benchmarks/view_levels.py --epochs 6 --img 320 --levels 2 --levels 0 1 2 --levels 0
"""
from __future__ import annotations

import argparse
import json
import random
import sys
import time
from collections import defaultdict
from pathlib import Path

import yaml

ROOT = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(ROOT))

from utils.cli import train_parser  # noqa: E402
from utils.dataset_yaml import check_dataset  # noqa: E402
from utils.dataloaders import find_images  # noqa: E402
from utils.engine import train  # noqa: E402


def patient_holdout(images: list[str], fraction: float, seed: int) -> tuple[list[str], list[str]]:
    """Split image paths so that no patient (file-name prefix before the first '-') is on both sides."""
    by_patient: dict[str, list[str]] = defaultdict(list)
    for path in images:
        by_patient[Path(path).name.split("-")[0]].append(path)
    patients = sorted(by_patient)
    random.Random(seed).shuffle(patients)
    held, target = [], fraction * len(images)
    for patient in patients:
        if len(held) >= target:
            break
        held += by_patient[patient]
    held_set = set(held)
    return [p for p in images if p not in held_set], held


def main() -> None:
    p = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    p.add_argument("--data", default="data/med.yaml")
    p.add_argument("--levels", nargs="+", type=int, action="append", required=True)
    p.add_argument("--epochs", type=int, default=6)
    p.add_argument("--img", type=int, default=320)
    p.add_argument("--holdout", type=float, default=0.15)
    p.add_argument("--seed", type=int, default=0)
    p.add_argument("--out", default=str(ROOT / "runs" / "view_levels"))
    args = p.parse_args()

    out = Path(args.out)
    out.mkdir(parents=True, exist_ok=True)
    data = check_dataset(args.data)
    train_imgs, held = patient_holdout(find_images(data["train"]), args.holdout, args.seed)
    (out / "train.txt").write_text("\n".join(train_imgs) + "\n")
    (out / "holdout.txt").write_text("\n".join(held) + "\n")
    split_yaml = out / "split.yaml"
    split_yaml.write_text(yaml.safe_dump({"train": str(out / "train.txt"), "val": str(out / "holdout.txt"),
                                          "names": list(data["names"].values()), "cls_names": data["cls_names"]}))
    print(f"train {len(train_imgs)} images, patient-grouped hold-out {len(held)} images")

    rows = []
    for levels in args.levels:
        name = "levels_" + "_".join(map(str, levels))
        opt = train_parser().parse_args([
            "--data", str(split_yaml), "--cfg", "models/yolov5n.yaml", "--weights", "", "--img", str(args.img),
            "--hyp", "data/hyps/hyp.medical.yaml", "--epochs", str(args.epochs), "--batch-size", "16",
            "--workers", "2", "--noplots", "--seed", str(args.seed), "--project", str(out), "--name", name,
            "--exist-ok", "--view-levels", *map(str, levels)])
        t0 = time.time()
        result = train(opt)
        history = json.loads((Path(result["save_dir"]) / "training_history.json").read_text())
        last = history["epochs"][-1]["val"]
        rows.append((levels, last["view_accuracy"], last["view_balanced_accuracy"], last["mAP_0.5"],
                     last["mAP_0.5:0.95"], time.time() - t0))

    print(f"\n{'levels':>10} {'view acc':>9} {'bal acc':>8} {'mAP50':>7} {'mAP50-95':>9} {'time s':>7}")
    for levels, acc, bal, m50, m, secs in rows:
        print(f"{str(levels):>10} {acc:9.3f} {bal:8.3f} {m50:7.3f} {m:9.3f} {secs:7.0f}")


if __name__ == "__main__":
    main()
