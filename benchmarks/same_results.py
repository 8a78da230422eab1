"""Train a fixed set of short runs and keep what they wrote, so two versions of the code can be diffed.

A restructuring that claims "behaviour unchanged" is checked with it: run it on the old commit and on
the new one (each in its own checkout), then compare the folders. Every run pins one thread
(results differ bitwise between thread counts) and uses explicit flags, so only the code differs.

    python benchmarks/same_results.py --repo . --out runs/same_results/new
    python benchmarks/same_results.py --repo ../old-checkout --out runs/same_results/old
    python benchmarks/same_results.py --compare runs/same_results/old runs/same_results/new

What is compared per run: results.csv byte for byte, and every tensor of last.pt's EMA weights.
"""
from __future__ import annotations

import argparse
import os
import shutil
import subprocess
import sys
import tempfile
from pathlib import Path

import torch
import yaml

ROOT = Path(__file__).resolve().parents[1]
MED = ROOT.parent / "shared" / "datasets" / "Regurgitation-YOLODataset-1new"
NAMES, VIEWS = ["AR", "MR", "PR", "TR"], ["PSAX", "PLAX", "A4C"]
COMMON = ["--cfg", "models/yolov5n.yaml", "--weights", "", "--img", "96", "--epochs", "3", "--batch-size", "8",
          "--workers", "2", "--seed", "3", "--hyp", "data/hyps/hyp.medical-fast.yaml", "--noplots",
          "--no-channels-last"]  # pinned: the timed memory-format choice may differ between two runs (pcgrad overrides)
RUNS = {  # name: (script, detection only?, extra flags)
    "detection": ("train.py", True, ["--cos-lr"]),
    "fixed": ("train.py", False, ["--rect-shuffle", "--cache", "ram"]),
    "uncertainty": ("train.py", False, ["--balancer", "uncertainty"]),
    "pcgrad": ("train.py", False, ["--balancer", "pcgrad", "--channels-last"]),
    "gradnorm": ("train_gradnorm.py", False, ["--interference-every", "3", "--fitness", "joint"]),
    "dual": ("train_dual.py", False, []),
}


def dataset_yaml(folder: Path, detection_only: bool) -> Path:
    """train: 48 med train images, val: 16 others, as .txt lists (labels are found beside them)."""
    images = sorted((MED / "train" / "images").glob("*.png"))
    lists = {}
    for split, chosen in (("train", images[:48]), ("val", images[100:116])):
        lists[split] = folder / f"{split}.txt"
        lists[split].write_text("".join(f"{p}\n" for p in chosen))
    content = {"train": str(lists["train"]), "val": str(lists["val"]), "names": NAMES}
    if not detection_only:
        content["cls_names"] = VIEWS
    path = folder / ("det.yaml" if detection_only else "joint.yaml")
    path.write_text(yaml.safe_dump(content))
    return path


def train_all(repo: Path, out: Path) -> None:
    out.mkdir(parents=True, exist_ok=True)
    env = {**os.environ, "OMP_NUM_THREADS": "1", "MKL_NUM_THREADS": "1"}
    with tempfile.TemporaryDirectory() as tmp:
        tmp = Path(tmp)
        for name, (script, detection_only, extra) in RUNS.items():
            data = dataset_yaml(tmp, detection_only)
            cmd = [sys.executable, script, "--data", str(data), *COMMON, *extra, "--project", str(tmp / "runs"),
                   "--name", name]
            print(" ".join(cmd[1:]), flush=True)
            done = subprocess.run(cmd, cwd=repo, env=env, capture_output=True, text=True)
            if done.returncode:
                raise SystemExit(f"{name} failed:\n{done.stderr[-3000:]}")
            run = tmp / "runs" / name
            (out / name).mkdir(exist_ok=True)
            shutil.copy(run / "results.csv", out / name / "results.csv")
            shutil.copy(run / "weights" / "last.pt", out / name / "last.pt")


def compare(old: Path, new: Path) -> bool:
    same = True
    for name in RUNS:
        csv_same = (old / name / "results.csv").read_bytes() == (new / name / "results.csv").read_bytes()
        a = torch.load(old / name / "last.pt", weights_only=True)
        b = torch.load(new / name / "last.pt", weights_only=True)
        ema_a, ema_b = a.get("ema") or a["model"], b.get("ema") or b["model"]
        tensors_same = ema_a.keys() == ema_b.keys() and all(torch.equal(ema_a[k], ema_b[k]) for k in ema_a)
        print(f"{name:12s} results.csv {'identical' if csv_same else 'DIFFERENT'}, "
              f"last.pt weights ({len(ema_a)} tensors) {'identical' if tensors_same else 'DIFFERENT'}")
        same &= csv_same and tensors_same
    return same


if __name__ == "__main__":
    p = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    p.add_argument("--repo", type=Path, default=ROOT, help="checkout whose train*.py are run")
    p.add_argument("--out", type=Path, help="folder for the runs' results.csv and last.pt")
    p.add_argument("--compare", nargs=2, type=Path, metavar=("OLD", "NEW"), help="compare two output folders")
    opt = p.parse_args()
    if opt.compare:
        sys.exit(0 if compare(*opt.compare) else 1)
    if not opt.out:
        p.error("--out is required unless --compare is given")
    train_all(opt.repo.resolve(), opt.out.resolve())
