"""--folds K: out-of-sample predictions for every image from K quick models trained on group-wise folds.

All images of all splits are pooled and dealt, whole patients at a time (utils.data.groups), into K
folds of about equal size; for each fold the project's own trainer runs as a child process on the
other K-1 folds, and its last.pt (not best.pt: best.pt is chosen on the held-out fold, a small
leak) predicts the held-out fold. So each image is scored by a model that never saw its patient.

The fold lists name symbolic links under the run folder (image and label side by side, as the loader
expects), so the trainer's label-scan cache lands there too and nothing is written into the dataset.
"""
from __future__ import annotations

import random
import shlex
import sys
from dataclasses import dataclass
from pathlib import Path
from typing import Mapping

import yaml

from utils.audit.predict import ImagePrediction, predict_images
from utils.compare.evaluation import eval_settings
from utils.compare.runs import child_env, run_child, stderr_tail
from utils.data.groups import SplitError, group_images, write_split
from utils.data.labels import img2label_paths
from utils.paths import ROOT

TRAINERS = ("train.py", "train_gradnorm.py", "train_dual.py")
CONTROLLED = ("--data", "--project", "--name", "--exist-ok", "--resume")  # set per fold by the audit


def group_folds(groups: Mapping[str, list[str]], k: int, seed: int = 0) -> list[list[str]]:
    """Deal whole groups into k folds of about equal image counts; returns the sorted group names per fold.

    The groups are shuffled with random.Random(seed), then taken biggest first (a stable sort keeps
    the shuffled order among equals), each into the fold with the fewest images so far.
    """
    if k < 2:
        raise SplitError(f"--folds {k}: need at least 2 folds")
    if len(groups) < k:
        raise SplitError(f"--folds {k}: only {len(groups)} group(s), cannot give each fold a whole group")
    names = sorted(groups)
    random.Random(seed).shuffle(names)
    names.sort(key=lambda g: -len(groups[g]))
    folds: list[list[str]] = [[] for _ in range(k)]
    sizes = [0] * k
    for name in names:
        target = min(range(k), key=lambda f: (sizes[f], f))
        folds[target].append(name)
        sizes[target] += len(groups[name])
    return [sorted(f) for f in folds]


def check_trainer_flags(extra: list[str]) -> None:
    """Refuse flags after '--' that the audit sets itself for every fold."""
    bad = sorted({a.split("=", 1)[0] for a in extra if a.split("=", 1)[0] in CONTROLLED})
    if bad:
        raise SplitError(f"the audit sets {', '.join(bad)} itself for each fold: remove it after '--'")


def link_images(images: list[str], folder: Path) -> dict[str, str]:
    """{real image: its link under folder}: one subfolder per source folder, each image linked at
    <k>/images/<name> and its label file (if any) where the loader will look for it, <k>/labels/<stem>.txt."""
    sources: dict[str, int] = {}
    links = {}
    for image, label in zip(images, img2label_paths(images)):
        k = sources.setdefault(str(Path(image).parent), len(sources))
        link = folder / str(k) / "images" / Path(image).name
        link.parent.mkdir(parents=True, exist_ok=True)
        link.unlink(missing_ok=True)
        link.symlink_to(image)
        label_link = Path(img2label_paths([str(link)])[0])
        label_link.parent.mkdir(parents=True, exist_ok=True)
        label_link.unlink(missing_ok=True)
        if Path(label).is_file():
            label_link.symlink_to(label)
        links[image] = str(link)
    return links


@dataclass
class FoldRun:
    """One fold: its held-out images, its run folder and the command that trained it."""

    index: int
    held_out: list[str]
    n_train: int
    run_dir: Path
    command: list[str]


def plan_folds(images: list[str], by: str, regex, k: int, seed: int, out: Path, yaml_file: Path,
               trainer: str, extra: list[str]) -> list[FoldRun]:
    """Write each fold's image lists and dataset YAML under out/folds; return the runs to train."""
    groups = group_images(images, by, regex)
    raw = yaml.safe_load(Path(yaml_file).read_text(encoding="utf-8"))
    links = link_images(images, out / "folds" / "links")
    runs = []
    for i, held_groups in enumerate(group_folds(groups, k, seed)):
        held = sorted(p for g in held_groups for p in groups[g])
        held_set = set(held)
        train = [links[p] for p in images if p not in held_set]
        fold_dir = out / "folds" / f"fold{i}"
        data_yaml = write_split(fold_dir / "data", {"train": train, "val": [links[p] for p in held]}, raw,
                                f"fold{i}", f"python -m utils.audit --folds {k} (fold {i})")
        weights = [] if any(a.split("=", 1)[0] == "--weights" for a in extra) else ["--weights", ""]
        command = [sys.executable, str(ROOT / trainer), *weights, *extra, "--data", str(data_yaml),
                   "--project", str(fold_dir), "--name", "run", "--exist-ok"]
        runs.append(FoldRun(i, held, len(train), fold_dir / "run", command))
    return runs


def train_and_predict(runs: list[FoldRun], extra: list[str], log=print, reuse: bool = False
                      ) -> dict[str, tuple[ImagePrediction, str]]:
    """Train every fold (one at a time) and predict its held-out images: {image path: (prediction, fold name)}.

    reuse (--reuse-folds): predict with the last.pt a finished run of the same folds left, train nothing.
    """
    settings = eval_settings(extra)
    out: dict[str, tuple[ImagePrediction, str]] = {}
    for run in runs:
        weights = run.run_dir / "weights" / "last.pt"
        if reuse:
            if not weights.is_file():
                raise SystemExit(f"ERROR: --reuse-folds: {weights} does not exist (run --folds without it first, "
                                 "with the same --project/--name and --exist-ok)")
            log(f"fold {run.index}: reusing {weights}; predicting {len(run.held_out)} held-out images")
        else:
            log(f"fold {run.index}: training on {run.n_train} images ({shlex.join(run.command)})")
            logs = run.run_dir.parent
            result = run_child(run.command, logs / "train_stdout.log", logs / "train_stderr.log", child_env(1))
            if result.rc != 0 or not weights.is_file():
                tail = stderr_tail(logs / "train_stderr.log")
                raise SystemExit(f"ERROR: fold {run.index}: the trainer exited with {result.rc} "
                                 f"(log {logs / 'train_stderr.log'}):\n{tail}")
            log(f"fold {run.index}: trained in {result.wall_s:.0f} s; predicting {len(run.held_out)} held-out images")
        preds = predict_images(weights, run.held_out, imgsz=settings.imgsz, device=settings.device)
        for path, pred in zip(run.held_out, preds):
            out[path] = (pred, f"fold{run.index}")
    return out
