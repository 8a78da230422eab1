"""Train every task-balancing strategy on the same data, seeds and budget, and write one report.

    python benchmarks/compare.py --data data/med.yaml [--data runs/splits/med_patient_s0/med.yaml] \\
        --epochs 20 --seeds 0 1 2 --name NAME [--strategies ...] [--view-weights 0.1 0.3 1 3] \\
        [--interference-every N] [--jobs N] [--dry-run | --report-only] \\
        -- --cfg models/yolov5n.yaml --img 320 --hyp data/hyps/hyp.medical.yaml --batch-size 16 --workers 2

Everything after `--` is passed to every training script unchanged (except `--gradnorm-*`
flags, which only train_gradnorm.py gets, and `--cls-*` flags, which only train_dual.py
gets). Strategies, each a child process of this project's own scripts:

    detection_only  train.py on the dataset YAML without cls_names (no view task)
    view_only       train.py, hyp det_task 0 / view_task 1 (detection metrics are meaningless)
    fixed_w<v>      train.py, hyp det_task 1 / view_task v, one per --view-weights value
                    (fixed_w1 is the plain joint baseline; joint_fixed is accepted as its alias)
    gradnorm        train_gradnorm.py
    uncertainty     train.py --balancer uncertainty
    pcgrad          train.py --balancer pcgrad
    dual            train_dual.py

Runs land in PROJECT/NAME/<split>/<strategy>_s<seed>/ (PROJECT defaults to runs/compare);
derived hyp and dataset YAMLs in PROJECT/NAME/derived/. A run whose folder holds
weights/last.pt and a training_history.json with the final epoch (or that exited cleanly
after an early stop under the same --epochs) is not trained again, so re-running the same
command resumes an interrupted comparison (the check does not compare other flags: use a
new NAME when the train flags change). Each run's best.pt (last.pt when there is none) is
then evaluated in this process with the project's evaluate() on its split's val set (once:
the result is kept in the run folder as compare_eval.json until the checkpoint, the data
YAML or the evaluation settings change), and PROJECT/NAME/comparison.csv, report.md and
plots are written. --jobs N trains N runs at once (children get OMP_NUM_THREADS = CPUs // N
unless it is set); their time columns then include the sharing. Several compare.py
processes may share one comparison (one per split, or more to use idle cores): each claims
a run before training it (PROJECT/NAME/<split>/.<run>.lock, pid and host), skips runs a live
process holds, and takes over a claim whose process is gone. --report-only trains
nothing and writes an interim report of the runs finished so far, listing the rest as not
run: a progress check on a long comparison.

How the costs are measured:
    train_time_s   wall time of the child process (interpreter start, data scan, training,
                   per-epoch validation, final validation and plots), from Popen to os.wait4
    train_loop_s   training_history.json's elapsed_s of the last epoch (first step to the end
                   of the last epoch, validation included, set-up and final validation excluded)
    step_ms        median over epochs of the epoch's train_s (its batches alone; histories
                   from before train_s existed: time_s, which adds validation and checkpoint
                   saving) divided by the training iterations per epoch (the total of the
                   epoch's progress bar in the child's stderr)
    peak_rss_gb    ru_maxrss from os.wait4: the largest resident set of the child or of any
                   process it waited for (dataloader workers count as their own maximum, not a sum)
    parameters, gflops   model.info(imgsz) of the evaluated checkpoint, unfused
"""
from __future__ import annotations

import argparse
import csv
import hashlib
import io
import json
import math
import os
import platform
import re
import shlex
import shutil
import statistics
import subprocess
import sys
import time
from concurrent.futures import ThreadPoolExecutor
from dataclasses import dataclass
from datetime import datetime
from pathlib import Path
from typing import Any, Callable, Iterable, Mapping

ROOT = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(ROOT))

import yaml  # noqa: E402

from utils.cli import train_parser  # noqa: E402
from utils.data.dataset_yaml import DatasetError, _find_yaml  # noqa: E402
from utils.files import write_json_atomic, write_text_atomic  # noqa: E402
from utils.training.best_checkpoint import best_checkpoint_epoch  # noqa: E402
from utils.training.run_setup import MIXING_AUGMENTATIONS, load_hyp  # noqa: E402
from utils.training.interference import OVERALL, summarize_interference  # noqa: E402

ADAPTIVE = ("gradnorm", "uncertainty", "pcgrad")
DEFAULT_VIEW_WEIGHTS = (0.1, 0.3, 1.0, 3.0)
SCRIPTS = {"train": "train.py", "gradnorm": "train_gradnorm.py", "dual": "train_dual.py"}
# Flags this script sets itself; giving them after `--` would make the runs disagree with the folders.
CONTROLLED_FLAGS = ("--data", "--epochs", "--seed", "--weights", "--project", "--name", "--resume", "--balancer",
                    "--interference-every", "--evolve")
# Script-specific flags: only the named script accepts them (each takes one value).
SCRIPT_ONLY_PREFIXES = {"--gradnorm-": "train_gradnorm.py", "--cls-": "train_dual.py"}

DETECTION_COLUMNS = ("mAP50", "mAP50_95", "precision", "recall", "F1")
VIEW_COLUMNS = ("view_accuracy", "view_balanced_accuracy")
COST_COLUMNS = ("train_time_s", "train_loop_s", "step_ms", "iterations_per_epoch", "peak_rss_gb", "parameters",
                "gflops")
EPOCH_CHOICE_COLUMNS = ("best_epoch", "view_accuracy_peak", "view_peak_epoch")  # beside best.pt's view_accuracy
INTERFERENCE_COLUMNS = ("interference_n", "interference_mean_cosine", "interference_conflict_fraction",
                        "interference_median_norm_ratio")
ID_COLUMNS = ("split", "strategy", "seed", "status", "trained_now", "run_dir", "checkpoint", "epochs_done")
COST_FILE = "compare_cost.json"  # what this script measured about a child, kept for later re-runs
EVAL_FILE = "compare_eval.json"  # metrics of the evaluated checkpoint, reused while checkpoint and data are unchanged
LABELS = {"mAP50": "mAP50", "mAP50_95": "mAP50-95", "precision": "P", "recall": "R", "F1": "F1",
          "view_accuracy": "view acc", "view_balanced_accuracy": "view bal. acc", "train_time_s": "train time (s)",
          "train_loop_s": "train loop (s)", "step_ms": "step (ms)", "iterations_per_epoch": "it/epoch",
          "peak_rss_gb": "peak RSS (GB)", "parameters": "parameters", "gflops": "GFLOPs",
          "best_epoch": "best.pt epoch", "view_accuracy_peak": "peak view acc", "view_peak_epoch": "its epoch"}


# ----------------------------------------------------------------------------------------- strategies

@dataclass(frozen=True)
class Strategy:
    """How one strategy is trained: which script, which task weights, which dataset variant."""

    name: str
    script: str
    det_task: float | None = None  # None: the given hyp's value
    view_task: float | None = None
    balancer: str | None = None  # train.py --balancer value, if any
    detection_data: bool = False  # train on the YAML without cls_names
    shared: bool = False  # joint strategy on one shared backbone (gets --interference-every)
    has_detection: bool = True  # detection metrics mean something
    has_view: bool = True  # view metrics exist

    @property
    def hyp_key(self) -> str:
        """Name of the derived hyp file this strategy trains with."""
        return "base" if self.det_task is None and self.view_task is None else self.name


def fixed_name(view_weight: float) -> str:
    """fixed_w<v> with v in its shortest form (0.1 -> fixed_w0.1, 1.0 -> fixed_w1)."""
    return f"fixed_w{view_weight:g}"


def parse_fixed_weight(name: str) -> float | None:
    """The view weight of a fixed_w<v> name, or None for any other name."""
    match = re.fullmatch(r"fixed_w(\d+(?:\.\d*)?(?:e-?\d+)?)", name)
    return float(match.group(1)) if match else None


def strategy_spec(name: str) -> Strategy:
    """The Strategy a name stands for (raises ValueError for an unknown name)."""
    weight = parse_fixed_weight(name)
    if weight is not None:
        return Strategy(name, SCRIPTS["train"], det_task=1.0, view_task=weight, shared=True)
    specs = {
        "detection_only": Strategy("detection_only", SCRIPTS["train"], detection_data=True, has_view=False),
        "view_only": Strategy("view_only", SCRIPTS["train"], det_task=0.0, view_task=1.0, has_detection=False),
        "gradnorm": Strategy("gradnorm", SCRIPTS["gradnorm"], shared=True),
        "uncertainty": Strategy("uncertainty", SCRIPTS["train"], balancer="uncertainty", shared=True),
        "pcgrad": Strategy("pcgrad", SCRIPTS["train"], balancer="pcgrad", shared=True),
        "dual": Strategy("dual", SCRIPTS["dual"]),
    }
    if name not in specs:
        raise ValueError(f"unknown strategy {name!r}: expected detection_only, view_only, fixed_w<v>, "
                         f"{', '.join(ADAPTIVE)} or dual")
    return specs[name]


def default_strategies(view_weights: Iterable[float]) -> list[str]:
    """Every strategy, the fixed-weight sweep in --view-weights order."""
    return ["detection_only", "view_only", *[fixed_name(w) for w in view_weights], *ADAPTIVE, "dual"]


def resolve_strategies(names: list[str] | None, view_weights: Iterable[float]) -> list[str]:
    """--strategies as canonical names (joint_fixed -> fixed_w1, fixed_w1.0 -> fixed_w1), duplicates dropped."""
    if not names:
        return default_strategies(view_weights)
    resolved = []
    for name in names:
        name = "fixed_w1" if name == "joint_fixed" else name
        weight = parse_fixed_weight(name)
        name = fixed_name(weight) if weight is not None else name
        strategy_spec(name)  # validates
        if name not in resolved:
            resolved.append(name)
    return resolved


# --------------------------------------------------------------------------------- derived files

def derived_hyp(base: dict, det_task: float | None = None, view_task: float | None = None) -> dict:
    """A copy of `base` with mosaic/mixup/copy-paste off and the task weights set (None keeps base's).

    The engine switches the mixing augmentations off whenever the data has a view task; doing
    it in every derived file gives detection_only the same augmentation as the joint runs.
    """
    hyp = dict(base)
    for key, value in (("det_task", det_task), ("view_task", view_task)):
        if value is not None:
            hyp[key] = float(value)
    for key in MIXING_AUGMENTATIONS:
        if key in hyp:
            hyp[key] = 0.0
    return hyp


def detection_only_content(content: dict) -> dict:
    """The dataset YAML without cls_names, with `path` absolute (as check_dataset resolves it), so it can live anywhere."""
    derived = {k: v for k, v in content.items() if k != "cls_names"}
    root = Path(content["path"]) if content.get("path") else ROOT
    derived["path"] = str(root if root.is_absolute() else (ROOT / root).resolve())
    return derived


def write_yaml(path: Path, content: dict, header: str) -> Path:
    """Write `content` as YAML with a comment header; returns the path."""
    write_text_atomic(path, f"# {header}\n" + yaml.safe_dump(content, sort_keys=False))  # a running child may read it
    return path


def split_labels(paths: list[Path]) -> list[str]:
    """A short unique label per dataset YAML: its stem, or its folder's name where stems collide.

    data/med.yaml -> med; with runs/splits/med_patient_s0/med.yaml beside it -> med, med_patient_s0.
    """
    stems = [p.stem for p in paths]
    labels = []
    for path, stem in zip(paths, stems):
        collides = stems.count(stem) > 1
        in_data_dir = path.resolve().parent == (ROOT / "data").resolve()
        labels.append(path.parent.name if collides and not in_data_dir and path.parent.name else stem)
    unique = []
    for label in labels:
        candidate, n = label, 2
        while candidate in unique:
            candidate, n = f"{label}_{n}", n + 1
        unique.append(candidate)
    return unique


# ----------------------------------------------------------------------------------- command lines

def _flag_name(arg: str) -> str:
    return arg.split("=", 1)[0]


def check_extra_args(extra: list[str]) -> None:
    """Refuse flags after `--` that this script sets itself (one sentence naming them)."""
    bad = sorted({_flag_name(a) for a in extra if _flag_name(a) in CONTROLLED_FLAGS})
    if bad:
        raise SystemExit(f"compare.py sets {', '.join(bad)} itself (use --data/--epochs/--seeds/--name/"
                         f"--interference-every of compare.py); remove them after '--'")


def filter_extra_args(extra: list[str], script: str) -> list[str]:
    """`extra` without --hyp (replaced by a derived file) and without other scripts' own flags."""
    out, skip = [], False
    for i, arg in enumerate(extra):
        if skip:
            skip = False
            continue
        name = _flag_name(arg)
        owner = next((s for prefix, s in SCRIPT_ONLY_PREFIXES.items() if name.startswith(prefix)), None)
        if name == "--hyp" or (owner is not None and owner != script):
            skip = "=" not in arg and i + 1 < len(extra) and not extra[i + 1].startswith("--")
            continue
        out.append(arg)
    return out


def build_command(strategy: Strategy, *, data: Path, hyp: Path, epochs: int, seed: int, project: Path, name: str,
                  interference_every: int = 0, extra: list[str] | None = None,
                  python: str = sys.executable) -> list[str]:
    """The child command line of one run (the project's own script, every extra flag passed through)."""
    cmd = [python, str(ROOT / strategy.script), *filter_extra_args(list(extra or []), strategy.script),
           "--data", str(data), "--hyp", str(hyp), "--epochs", str(epochs), "--seed", str(seed), "--weights", "",
           "--exist-ok", "--project", str(project), "--name", name]
    if strategy.balancer:
        cmd += ["--balancer", strategy.balancer]
    if strategy.shared and interference_every > 0:
        cmd += ["--interference-every", str(interference_every)]
    if strategy.name == "view_only" and "--fitness" not in {_flag_name(a) for a in extra or []}:
        cmd += ["--fitness", "joint"]  # detection fitness is noise here: pick best.pt by the view too
    return cmd


def run_name(strategy: str, seed: int) -> str:
    return f"{strategy}_s{seed}"


# ------------------------------------------------------------------------------- run folder reading

def read_history(run_dir: Path) -> dict | None:
    """training_history.json of a run, or None if missing or unreadable."""
    try:
        return json.loads((run_dir / "training_history.json").read_text())
    except (OSError, json.JSONDecodeError):
        return None


def run_complete(run_dir: Path, epochs: int) -> bool:
    """True when the run has weights/last.pt and its history records the final epoch (epochs - 1)."""
    history = read_history(run_dir)
    if not (run_dir / "weights" / "last.pt").is_file() or not history:
        return False
    return any(r.get("epoch") == epochs - 1 for r in history.get("epochs", []))


def run_finished(run_dir: Path, epochs: int) -> bool:
    """Complete, or ended cleanly before its final epoch (early stop by --patience) under the same --epochs.

    An early-stopped run is a result, not an interruption: training it again would stop at the same epoch.
    """
    if run_complete(run_dir, epochs):
        return True
    if load_cost(run_dir).get("rc") != 0 or not (run_dir / "weights" / "last.pt").is_file():
        return False
    try:
        trained = yaml.safe_load((run_dir / "opt.yaml").read_text()) or {}
    except (OSError, yaml.YAMLError):
        return False
    return isinstance(trained, dict) and trained.get("epochs") == epochs


TQDM_EPOCH = re.compile(r"^\s*(\d+)/(\d+)\s.*?\|\s*(\d+)/(\d+) \[")


def parse_train_iterations(stderr_text: str) -> dict[int, int]:
    """Training iterations per epoch from the training progress bar ('E/E-1 ... | n/N [') in a child's stderr."""
    per_epoch: dict[int, int] = {}
    for segment in re.split(r"[\r\n]", stderr_text):
        match = TQDM_EPOCH.match(segment)
        if match:
            per_epoch[int(match.group(1))] = int(match.group(4))
    return per_epoch


def median_step_ms(history: dict | None, iterations: dict[int, int]) -> float | None:
    """Median over epochs of the epoch's time / its iterations, in ms (None without both).

    The epoch's time is train_s (the batches alone) where the history has it, else time_s
    (which also counts that epoch's validation and checkpoint save: histories written
    before train_s existed).
    """
    if not history or not iterations:
        return None
    fallback = statistics.median(iterations.values())
    steps = [r.get("train_s", r.get("time_s")) / (iterations.get(r["epoch"]) or fallback) * 1e3
             for r in history.get("epochs", []) if "train_s" in r or "time_s" in r]
    return statistics.median(steps) if steps else None


def interference_columns(history: dict | None) -> tuple[dict, dict]:
    """(CSV columns of the overall interference summary, the full per-stage summary); empty when not measured."""
    records = (history or {}).get("interference") or []
    if not records:
        return {}, {}
    summary = summarize_interference(records)
    overall = summary[OVERALL]
    return {"interference_n": overall["n"], "interference_mean_cosine": overall["mean_cosine"],
            "interference_conflict_fraction": overall["conflict_fraction"],
            "interference_median_norm_ratio": overall["median_norm_ratio"]}, summary


def epoch_choice_columns(history: dict | None) -> dict:
    """best.pt's epoch, and the highest val view accuracy the run reached on any validated epoch (and when).

    Joint strategies pick best.pt by detection fitness (YOLOv5's rule), so their view accuracy is read at an
    epoch the detector chose. The peak shows what that choice costs the view task; it is picked on val, so it
    leans optimistic and is no fair score by itself.
    """
    records = (history or {}).get("epochs", [])
    best_epoch = best_checkpoint_epoch(records)
    columns: dict[str, Any] = {} if best_epoch is None else {"best_epoch": best_epoch}
    validated = [r for r in records
                 if r.get("validated", True) and "view_accuracy" in (r.get("val") or {})]
    if validated:
        peak = max(validated, key=lambda r: r["val"]["view_accuracy"])  # the first epoch on a tie
        columns.update(view_accuracy_peak=peak["val"]["view_accuracy"], view_peak_epoch=peak["epoch"])
    return columns


def stderr_tail(path: Path, lines: int = 15) -> str:
    """The last non-blank lines of a log file, each progress-bar line at its final redraw."""
    try:
        text = path.read_text(errors="replace")
    except OSError:
        return ""
    rows = [segment.split("\r")[-1] for segment in text.split("\n")]
    return "\n".join([r for r in rows if r.strip()][-lines:])


# ------------------------------------------------------------------------------------ running a child

@dataclass
class ChildResult:
    """Exit code, wall time and peak RSS of one finished child process."""

    rc: int
    wall_s: float
    peak_rss_gb: float


def child_env(jobs: int, environ: Mapping[str, str] | None = None, cpus: int | None = None) -> dict[str, str]:
    """The children's environment: with --jobs N > 1, OMP_NUM_THREADS = cpus // N (at least 1) unless set.

    Otherwise each of the N concurrent trainings would start one torch thread per core and they would
    fight over the cores. Measured on 2 cores (yolov5n forward+backward, batch 16 at 320 px, synthetic
    input): two 1-thread processes together did 16 % more steps than one 2-thread process.
    """
    env = dict(os.environ if environ is None else environ)
    if jobs > 1 and "OMP_NUM_THREADS" not in env:
        env["OMP_NUM_THREADS"] = str(max(1, (cpus or os.cpu_count() or 1) // jobs))
    return env


def run_child(cmd: list[str], stdout_path: Path, stderr_path: Path, env: dict[str, str] | None = None) -> ChildResult:
    """Run `cmd`, output to the two files; wall time from start to os.wait4, peak RSS from its rusage."""
    stdout_path.parent.mkdir(parents=True, exist_ok=True)
    with open(stdout_path, "w") as out, open(stderr_path, "w") as err:
        t0 = time.perf_counter()
        proc = subprocess.Popen(cmd, stdout=out, stderr=err, env=env)
        try:
            _, status, usage = os.wait4(proc.pid, 0)
        except BaseException:
            proc.kill()
            proc.wait()
            raise
        wall = time.perf_counter() - t0
    rc = os.waitstatus_to_exitcode(status)
    proc.returncode = rc  # reaped by wait4: tell Popen so it does not wait again
    scale = 1.0 if sys.platform == "darwin" else 1024.0  # ru_maxrss: bytes on macOS, KiB on Linux
    return ChildResult(rc=rc, wall_s=wall, peak_rss_gb=usage.ru_maxrss * scale / 1e9)


# ------------------------------------------------------------------------------------- evaluation

@dataclass
class EvalSettings:
    """What evaluation and model.info need from the train flags."""

    imgsz: int = 640
    batch_size: int = 32  # val.py's default
    workers: int = 8
    device: str = ""
    single_cls: bool = False


TEST_PREFIX = "test_"  # CSV columns of the held-out test split, where the dataset YAML has one


def evaluate_checkpoint(weights: Path, data_yaml: Path, settings: EvalSettings) -> dict:
    """Metrics of one checkpoint on the YAML's val split (in-process, as val.py), plus parameters and GFLOPs.

    Where the YAML also names a test split (utils.split writes one), its metrics are added with the
    test_ prefix: the report picks the best fixed weight on val and compares the strategies on test.
    """
    from utils.data.dataset_yaml import check_dataset
    from utils.data.loaders import create_dataloader
    from utils.data.synthetic import ensure_synthetic
    from utils.evaluation.validation import evaluate
    from utils.model_loading import load_inference_model
    from utils.torch_utils import select_device
    from utils.cli import check_img_size

    device = select_device(settings.device, batch_size=settings.batch_size)
    ensure_synthetic(data_yaml)
    data = check_dataset(data_yaml)
    model, _ = load_inference_model(weights, device, fuse=False)
    info = model.info(settings.imgsz)
    model.fuse()
    view_names = model.view_names
    stride = max(int(model.stride.max()), 32)
    imgsz = check_img_size(settings.imgsz, stride)
    row: dict[str, Any] = {"parameters": int(info["parameters"]), "gflops": float(info["gflops"])}
    for task, prefix in (("val", ""), ("test", TEST_PREFIX)):
        if not data.get(task):
            continue
        loader, _ = create_dataloader(data[task], imgsz, settings.batch_size, stride, single_cls=settings.single_cls,
                                      rect=True, pad=0.5, workers=settings.workers, prefix=f"{task}: ",
                                      nc=len(model.names), n_views=len(view_names) if view_names else None)
        result = evaluate(model, loader, names=model.names, device=device, single_cls=settings.single_cls,
                          view_names=view_names)
        row |= {prefix + k: v for k, v in metrics_row(result, list(view_names) if view_names else None).items()}
    return row


def evaluation_key(weights: Path, data_yaml: Path, settings: EvalSettings) -> dict:
    """What an evaluation depends on: the checkpoint file, the dataset YAML's text and the evaluation settings."""
    stat = weights.stat()
    return {"checkpoint": weights.name, "size": stat.st_size, "mtime_ns": stat.st_mtime_ns,
            "data": str(data_yaml), "data_sha256": hashlib.sha256(Path(data_yaml).read_bytes()).hexdigest(),
            "imgsz": settings.imgsz, "batch_size": settings.batch_size, "single_cls": settings.single_cls}


def cached_evaluation(run_dir: Path, weights: Path, data_yaml: Path, settings: EvalSettings) -> dict:
    """evaluate_checkpoint, or its saved result when the checkpoint, data YAML and settings are unchanged.

    A report over many runs is regenerated often (every resume, --report-only); evaluating each
    checkpoint once keeps that cheap. Images changed under an unchanged YAML are not detected.
    """
    key = evaluation_key(weights, data_yaml, settings)
    try:
        saved = json.loads((run_dir / EVAL_FILE).read_text())
        if saved.get("key") == key:
            return saved["metrics"]
    except (OSError, json.JSONDecodeError, KeyError, AttributeError):
        pass
    metrics = evaluate_checkpoint(weights, data_yaml, settings)
    write_json_atomic(run_dir / EVAL_FILE, {"key": key, "metrics": metrics}, indent=1)
    return metrics


def f1_score(precision: float, recall: float) -> float:
    """2PR/(P+R), 0 when both are 0."""
    return 2 * precision * recall / (precision + recall) if precision + recall > 0 else 0.0


def metrics_row(result: Any, view_names: list[str] | None) -> dict:
    """CSV metric columns from a DetectionResult: overall, AP50 per class, view accuracy and F1 per view."""
    row = {"mAP50": result.map50, "mAP50_95": result.map, "precision": result.precision, "recall": result.recall,
           "F1": f1_score(result.precision, result.recall)}
    for name, _images, _instances, _p, _r, ap50, _ap in result.per_class:
        row[f"AP50_{name}"] = float(ap50)
    if result.view is not None and view_names:
        row["view_accuracy"] = float(result.view.accuracy)
        row["view_balanced_accuracy"] = float(result.view.balanced_accuracy)
        support = getattr(result.view, "support", None)
        for i, (name, f1) in enumerate(zip(view_names, result.view.f1)):
            if support is None or support[i] > 0:  # a view absent from the val set has no F1
                row[f"F1_{name}"] = float(f1)
    return row


# ----------------------------------------------------------------------------------- aggregation

@dataclass(frozen=True)
class Stat:
    """Mean, sample standard deviation (None for fewer than 2 values) and count of one column."""

    mean: float | None
    sd: float | None
    n: int


NO_STAT = Stat(None, None, 0)


def _number(value: Any) -> float | None:
    """A finite float, or None for '', None, NaN, inf and anything non-numeric."""
    try:
        number = float(value)
    except (TypeError, ValueError):
        return None
    return number if math.isfinite(number) else None


def mean_sd(values: Iterable[Any]) -> Stat:
    """Mean and sample sd of the numeric values (missing ones skipped)."""
    numbers = [x for x in (_number(v) for v in values) if x is not None]
    if not numbers:
        return Stat(None, None, 0)
    return Stat(statistics.fmean(numbers), statistics.stdev(numbers) if len(numbers) > 1 else None, len(numbers))


def aggregate(rows: list[dict], columns: Iterable[str]) -> dict[tuple[str, str], dict[str, Stat]]:
    """Per (split, strategy): a Stat for each column over the rows with status 'ok' (the seeds)."""
    groups: dict[tuple[str, str], list[dict]] = {}
    for row in rows:
        if row.get("status") == "ok":
            groups.setdefault((row["split"], row["strategy"]), []).append(row)
    columns = list(columns)
    return {key: {c: mean_sd(r.get(c) for r in group) for c in columns} | {"n": Stat(len(group), None, len(group))}
            for key, group in groups.items()}


def aggregate_stages(summaries: list[dict]) -> dict[str, dict[str, Stat]]:
    """Per stage: mean ± sd over runs (seeds) of summarize_interference's figures."""
    stages: dict[str, list[dict]] = {}
    for summary in summaries:
        for stage, stats in summary.items():
            stages.setdefault(stage, []).append(stats)
    keys = ("n", "mean_cosine", "conflict_fraction", "median_norm_ratio")
    return {stage: {k: mean_sd(s.get(k) for s in stats) for k in keys} for stage, stats in stages.items()}


def format_stat(stat: Stat | None, digits: int = 3, thousands: bool = False) -> str:
    """'0.433 ± 0.021', '0.433' for one value, 'n/a' for none."""
    if stat is None or stat.mean is None:
        return "n/a"
    fmt = f"{{:,.{digits}f}}" if thousands else f"{{:.{digits}f}}"
    return fmt.format(stat.mean) + ("" if stat.sd is None else " ± " + fmt.format(stat.sd))


DIGITS = {"train_time_s": 1, "train_loop_s": 1, "step_ms": 0, "iterations_per_epoch": 0, "peak_rss_gb": 2,
          "parameters": 0, "gflops": 2, "best_epoch": 1, "view_peak_epoch": 1}


def not_applicable(strategy: str, column: str) -> bool:
    """Columns that mean nothing for a strategy: detection for view_only, view for detection_only."""
    column = column.removeprefix(TEST_PREFIX)
    detection = column in DETECTION_COLUMNS or column.startswith("AP50_")
    view = column in VIEW_COLUMNS or column.startswith("F1_")
    return (strategy == "view_only" and detection) or (strategy == "detection_only" and view)


def markdown_table(header: list[str], rows: list[list[str]]) -> str:
    lines = ["| " + " | ".join(header) + " |", "|" + "---|" * len(header)]
    return "\n".join(lines + ["| " + " | ".join(r) + " |" for r in rows])


def stat_table(agg: dict[tuple[str, str], dict[str, Stat]], split: str, strategies: list[str], columns: list[str],
               labels: dict[str, str] | None = None) -> str:
    """Markdown: one row per strategy, 'mean ± sd' per column, n seeds, n/a where a column means nothing."""
    labels = labels or {}
    rows = []
    for strategy in strategies:
        stats = agg.get((split, strategy))
        if stats is None:
            rows.append([strategy, "0"] + ["n/a"] * len(columns))
            continue
        cells = [strategy, str(stats["n"].n)]
        for column in columns:
            if not_applicable(strategy, column):
                cells.append("n/a")
            else:
                cells.append(format_stat(stats.get(column), DIGITS.get(column, 3), thousands=column == "parameters"))
        rows.append(cells)
    return markdown_table(["strategy", "n"] + [labels.get(c, c) for c in columns], rows)


def delta_m(stats: Mapping[str, Stat], det_ref: Mapping[str, Stat], view_ref: Mapping[str, Stat],
            prefix: str = "") -> float | None:
    """Multi-task score: mean relative change of mAP50 and view accuracy against the single-task runs.

    Delta_m of Maninis et al. (2019) / Vandenhende et al. (2021) on this product's two headline metrics, from
    the given Stats' means (over seeds, or one run's values): 0 means both tasks as good as trained alone,
    -0.5 means half of each lost on average.
    Relative, so a task with small absolute numbers (mAP50 0.15 on an honest split) weighs as much as one
    with large ones (view accuracy 0.7). None when a figure or a reference is missing or zero.
    """
    def mean(source: Mapping[str, Stat], column: str) -> float | None:
        return source.get(prefix + column, NO_STAT).mean

    m, v = mean(stats, "mAP50"), mean(stats, "view_accuracy")
    m_ref, v_ref = mean(det_ref, "mAP50"), mean(view_ref, "view_accuracy")
    if None in (m, v, m_ref, v_ref) or not m_ref or not v_ref:
        return None
    return ((m - m_ref) / m_ref + (v - v_ref) / v_ref) / 2


def split_delta_m(agg: dict[tuple[str, str], dict[str, Stat]], split: str, strategy: str,
                  prefix: str = "") -> float | None:
    """delta_m of one strategy on one split against that split's detection_only and view_only runs."""
    def stats(name: str) -> dict[str, Stat]:
        return agg.get((split, name)) or {}

    return delta_m(stats(strategy), stats("detection_only"), stats("view_only"), prefix)


def has_test_figures(agg: dict[tuple[str, str], dict[str, Stat]], split: str, strategies: list[str]) -> bool:
    """Whether some strategy of the split was evaluated on a held-out test set."""
    return any((agg.get((split, s)) or {}).get(TEST_PREFIX + "mAP50", NO_STAT).mean is not None for s in strategies)


def best_fixed(agg: dict[tuple[str, str], dict[str, Stat]], split: str, strategies: list[str]) -> str | None:
    """The fixed_w* strategy with the highest val delta_m, or None.

    Without single-task runs to refer to, the highest mean of (mean mAP50, mean view accuracy) instead.
    """
    fixed = [s for s in strategies if parse_fixed_weight(s) is not None and (split, s) in agg]
    scored = [(score, s) for s in fixed if (score := split_delta_m(agg, split, s)) is not None]
    if scored:
        return max(scored)[1]
    for strategy in fixed:
        m, v = agg[(split, strategy)]["mAP50"].mean, agg[(split, strategy)]["view_accuracy"].mean
        if m is not None and v is not None:
            scored.append(((m + v) / 2, strategy))
    return max(scored)[1] if scored else None


def best_fixed_criterion(agg: dict[tuple[str, str], dict[str, Stat]], split: str, strategies: list[str]) -> str:
    """How best_fixed chose, in words for the report."""
    fixed = [s for s in strategies if parse_fixed_weight(s) is not None]
    if any(split_delta_m(agg, split, s) is not None for s in fixed):
        return "highest delta_m against detection_only and view_only"
    return "highest mean of mAP50 and view accuracy; no single-task runs to compute delta_m"


SINGLE_TASK = ("detection_only", "view_only")


def with_delta_m(rows: list[dict]) -> list[dict]:
    """Copies of the rows with delta_m (and test_delta_m) for each finished joint run.

    The references are the split's mean detection_only mAP50 and mean view_only view accuracy, so the mean of
    the per-run values equals delta_m of the mean metrics (it is linear in them) and their sd shows the spread
    over seeds.
    """
    def as_stats(source: Mapping[str, Any]) -> dict[str, Stat]:
        return {k: Stat(_number(v), None, 1) for k, v in source.items()}

    references = aggregate(rows, [p + c for p in ("", TEST_PREFIX) for c in ("mAP50", "view_accuracy")])
    out = []
    for row in rows:
        row = {k: v for k, v in row.items() if k not in ("delta_m", TEST_PREFIX + "delta_m")}  # recomputed
        if row.get("status") == "ok" and row["strategy"] not in SINGLE_TASK:
            det_ref = references.get((row["split"], "detection_only"), {})
            view_ref = references.get((row["split"], "view_only"), {})
            for prefix in ("", TEST_PREFIX):
                value = delta_m(as_stats(row), det_ref, view_ref, prefix)
                if value is not None:
                    row[prefix + "delta_m"] = value
        out.append(row)
    return out


def format_percent(stat: Stat) -> str:
    """A delta_m Stat as signed percent, with the sd when there is one."""
    if stat.mean is None:
        return "n/a"
    return f"{100 * stat.mean:+.1f}" + ("" if stat.sd is None else f" ± {100 * stat.sd:.1f}") + " %"


def delta_m_table(agg: dict[tuple[str, str], dict[str, Stat]], split: str, strategies: list[str]) -> str | None:
    """Mean ± sd of the per-run delta_m per joint strategy on val (and test where there is one); None if none.

    `agg` must have been aggregated over rows from with_delta_m with the delta_m columns.
    """
    def stat(strategy: str, column: str) -> Stat:
        return (agg.get((split, strategy)) or {}).get(column, NO_STAT)

    joint = [s for s in strategies if s not in SINGLE_TASK]
    columns = [c for c in ("delta_m", TEST_PREFIX + "delta_m") if any(stat(s, c).mean is not None for s in joint)]
    table = [[strategy, str(stat(strategy, "n").n)] + [format_percent(stat(strategy, c)) for c in columns]
             for strategy in joint if any(stat(strategy, c).mean is not None for c in columns)]
    if not table:
        return None
    return markdown_table(["strategy", "n"] + [{"delta_m": "delta_m val"}.get(c, "delta_m test") for c in columns],
                          table)


def _versus(a: str, sa: Stat, b: str, sb: Stat, label: str) -> str:
    diff = sa.mean - sb.mean
    sds = [s.sd for s in (sa, sb) if s.sd is not None]
    if not sds:
        noise = "sd n/a with one seed"
    elif len(sds) == 1:  # one side has a single seed: its spread is unknown, so no claim against the noise
        noise = f"sd n/a: {a if sa.sd is None else b} has one seed"
    else:
        larger = max(sds)
        noise = f"sd {format_stat(Stat(sa.sd, None, 1))} vs {format_stat(Stat(sb.sd, None, 1))}; the difference is " \
                f"{'larger' if abs(diff) > larger else 'not larger'} than the larger sd"
    if diff == 0:
        return f"{label} {sa.mean:.3f} for both ({noise})"
    higher = a if diff > 0 else b
    return f"{label} {sa.mean:.3f} vs {sb.mean:.3f}, {higher} higher by {abs(diff):.3f} ({noise})"


REMEDIES = (*ADAPTIVE, "dual")  # what the report weighs against the sweep and the single-task runs


def comparison_sentences(agg: dict[tuple[str, str], dict[str, Stat]], split: str, strategies: list[str]) -> list[str]:
    """Each remedy (balancers, dual) against the best fixed weight and against the single-task runs.

    The best fixed weight is picked on the val set. Where the split has a test set the comparisons use
    it, so the pick is not graded on the images that picked it; without one the pick is favoured.
    """
    on_test = has_test_figures(agg, split, strategies)
    prefix, where = (TEST_PREFIX, "test set") if on_test else ("", "val set")
    fixed = best_fixed(agg, split, strategies)
    if fixed is None:
        sentences = ["No fixed-weight run finished, so there is no sweep to compare the remedies with."]
    else:
        use = ("The comparisons below use the held-out test set." if on_test else
               "The comparisons below use the same val set, which favours the picked weight.")
        sentences = [f"Best fixed weight of the sweep, picked on the val set "
                     f"({best_fixed_criterion(agg, split, strategies)}): {fixed}. {use}"]
    both = (("mAP50", "mAP50"), ("view_accuracy", "view accuracy"))
    references = ([(fixed, both)] if fixed else []) + [("detection_only", both[:1]), ("view_only", both[1:])]
    for strategy in REMEDIES:
        stats = agg.get((split, strategy))
        if strategy not in strategies or stats is None:
            continue
        for reference, columns in references:
            ref_stats = agg.get((split, reference))
            if ref_stats is None:
                continue
            pairs = [(stats.get(prefix + c, NO_STAT), ref_stats.get(prefix + c, NO_STAT), label) for c, label in columns]
            parts = [_versus(strategy, a, reference, b, label) for a, b, label in pairs
                     if a.mean is not None and b.mean is not None]
            if parts:
                sentences.append(f"{strategy} vs {reference} ({where}): " + "; ".join(parts) + ".")
        dominance = dominance_sentence(agg, split, strategy, strategies, prefix, where)
        if dominance:
            sentences.append(dominance)
    return sentences


def dominance_sentence(agg: dict[tuple[str, str], dict[str, Stat]], split: str, strategy: str, strategies: list[str],
                       prefix: str, where: str) -> str | None:
    """Whether some fixed weight beats `strategy` on both mean mAP50 and mean view accuracy (no weighting chosen).

    The claim that tuned fixed weights match the balancers, checked without deciding how much a point of
    mAP is worth against a point of view accuracy.
    """
    def point(name: str) -> tuple[float, float] | None:
        stats = agg.get((split, name)) or {}
        m, v = stats.get(prefix + "mAP50", NO_STAT).mean, stats.get(prefix + "view_accuracy", NO_STAT).mean
        return None if m is None or v is None else (m, v)

    mine = point(strategy)
    fixed = [(name, point(name)) for name in strategies if parse_fixed_weight(name) is not None and point(name)]
    if mine is None or not fixed:
        return None
    better = [name for name, (m, v) in fixed if m >= mine[0] and v >= mine[1] and (m, v) != mine]
    if better:
        return (f"{strategy} is dominated on the {where} by {', '.join(better)}: at least as high a mean mAP50 and "
                f"mean view accuracy.")
    return (f"{strategy} is not dominated on the {where}: no fixed weight of the sweep has both a higher mean mAP50 "
            f"and a higher mean view accuracy.")


def ordered_columns(rows: list[dict], prefix: str) -> list[str]:
    """Columns starting with `prefix`, in order of first appearance."""
    seen: list[str] = []
    for row in rows:
        for key in row:
            if key.startswith(prefix) and key not in seen:
                seen.append(key)
    return seen


def csv_fieldnames(rows: list[dict]) -> list[str]:
    """Fixed columns first, then per-class AP50 and per-view F1 in order of appearance, then the error."""
    return [*ID_COLUMNS, *DETECTION_COLUMNS, *ordered_columns(rows, "AP50_"), *VIEW_COLUMNS,
            *ordered_columns(rows, "F1_"), "delta_m", *ordered_columns(rows, TEST_PREFIX), *COST_COLUMNS,
            *INTERFERENCE_COLUMNS, *EPOCH_CHOICE_COLUMNS, "error"]


def csv_value(value: Any) -> Any:
    """Floats rounded to 6 significant digits, None as an empty cell."""
    if value is None:
        return ""
    if isinstance(value, float):
        return f"{value:.6g}"
    return value


def write_csv(path: Path, rows: list[dict]) -> None:
    """comparison.csv, written atomically: a report re-run that dies never leaves half a table."""
    fields = csv_fieldnames(rows)
    buffer = io.StringIO(newline="")
    writer = csv.DictWriter(buffer, fieldnames=fields, extrasaction="ignore")
    writer.writeheader()
    for row in rows:
        writer.writerow({k: csv_value(row.get(k)) for k in fields})
    write_text_atomic(path, buffer.getvalue())


# ------------------------------------------------------------------------------------------ plots

def plot_metric_vs_cost(agg: dict, split: str, strategies: list[str], path: Path) -> None:
    """mAP50 and view accuracy against child wall time, one point per strategy (mean, sd error bars)."""
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    fig, axes = plt.subplots(1, 2, figsize=(11, 4.5), tight_layout=True)
    for ax, column in zip(axes, ("mAP50", "view_accuracy")):
        for i, strategy in enumerate(strategies):
            stats = agg.get((split, strategy))
            if stats is None or not_applicable(strategy, column):
                continue
            x, y = stats["train_time_s"], stats[column]
            if x.mean is None or y.mean is None:
                continue
            ax.errorbar(x.mean, y.mean, xerr=x.sd or 0, yerr=y.sd or 0, fmt="o", capsize=3, color=f"C{i % 10}",
                        label=strategy)
            ax.annotate(strategy, (x.mean, y.mean), textcoords="offset points", xytext=(4, 4), fontsize=7)
        ax.set(xlabel="train time (s, child wall time)", ylabel=f"valid {LABELS[column]}", ylim=(0, 1),
               title=f"{split}: {LABELS[column]} vs train time")
        ax.grid(alpha=0.3)
    if axes[0].get_legend_handles_labels()[0]:  # no finished run: an empty plot, no legend warning
        axes[0].legend(fontsize=7)
    fig.savefig(path, dpi=120)
    plt.close(fig)


def tradeoff_panels(agg: dict, split: str, strategies: list[str]) -> list[str]:
    """Metric prefixes to draw the trade-off for: val always, test where some strategy has test figures."""
    return ["", TEST_PREFIX] if has_test_figures(agg, split, strategies) else [""]


def plot_tradeoff(agg: dict, split: str, strategies: list[str], path: Path) -> None:
    """mAP50 against view accuracy per joint strategy, with the single-task runs as reference lines.

    The picture of the dominance check: the fixed-weight sweep is drawn as a line (its Pareto front as far as
    the sweep goes), a point above and right of it beats every fixed weight on both tasks, and the dashed
    lines cross where a joint model would be as good as each task trained alone.
    """
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

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
            ax.errorbar(x.mean, y.mean, xerr=x.sd or 0, yerr=y.sd or 0, fmt="o", capsize=3, color=f"C{i % 10}",
                        label=strategy)
            ax.annotate(strategy, (x.mean, y.mean), textcoords="offset points", xytext=(4, 4), fontsize=7)
        where = "test" if prefix else "valid"
        ax.margins(0.08)
        ax.set_ylim(bottom=0)  # zoomed to the points: on an honest split mAP50 may be 0.1 and accuracy 0.7
        ax.set(xlabel=f"{where} view accuracy", ylabel=f"{where} mAP50",
               title=f"{split} ({where}): detection vs view, mean ± sd over seeds")
        ax.grid(alpha=0.3)
        if ax.get_legend_handles_labels()[0]:
            ax.legend(fontsize=7, loc="best")
    fig.savefig(path, dpi=120)
    plt.close(fig)


def mean_curves(histories: list[dict], key: str) -> tuple[list[int], list[float]]:
    """Per validated epoch, the mean of epochs[*].val[key] over the runs that have it."""
    by_epoch: dict[int, list[float]] = {}
    for history in histories:
        for record in history.get("epochs", []):
            value = _number(record.get("val", {}).get(key))
            if record.get("validated", True) and value is not None:
                by_epoch.setdefault(int(record["epoch"]), []).append(value)
    epochs = sorted(by_epoch)
    return epochs, [statistics.fmean(by_epoch[e]) for e in epochs]


def plot_curves(histories: dict[str, list[dict]], split: str, path: Path) -> None:
    """Valid mAP50 and view accuracy per epoch, mean over seeds, one line per strategy."""
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt
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
    fig.savefig(path, dpi=120)
    plt.close(fig)


# ------------------------------------------------------------------------------------------ report

def machine_line(device: str) -> str:
    """Platform, CPU count, Python and torch versions, and the training device."""
    import torch

    accel = "cpu" if device == "cpu" or not torch.cuda.is_available() else torch.cuda.get_device_name(0)
    return (f"{platform.platform()}, {os.cpu_count()} CPUs ({platform.processor() or platform.machine()}), "
            f"Python {platform.python_version()}, torch {torch.__version__}, device {accel}")


def interference_table(stage_aggs: dict[str, dict[str, dict[str, Stat]]]) -> str:
    """Markdown: strategy, stage, then the per-stage figures as mean ± sd over seeds."""
    rows = []
    for strategy, stages in stage_aggs.items():
        for stage, stats in stages.items():
            rows.append([strategy, stage, format_stat(stats["n"], 0), format_stat(stats["mean_cosine"]),
                         format_stat(stats["conflict_fraction"]), format_stat(stats["median_norm_ratio"])])
    return markdown_table(["strategy", "stage", "measurements", "mean cosine", "conflict fraction",
                           "median norm ratio ‖g_view‖/‖g_det‖"], rows)


NOTES = """\
How to read this:
- Metrics: each run's best.pt (last.pt when the run wrote no best.pt) evaluated on the split's val set with
  utils.evaluation.validation.evaluate (as val.py: conf 0.001, IoU 0.6, rect batches of 32). F1 = 2PR/(P+R) of the
  overall P and R. mean ± sample sd over seeds; one seed shows the value alone. best.pt is picked on val, so
  val figures lean optimistic; where the split has a test set (utils.split writes one) the same checkpoint is
  also evaluated there, and the comparison sentences use test.
- n/a: view_only trains with det_task 0, so its detection numbers are meaningless (kept in comparison.csv);
  detection_only has no view task. view_only picks best.pt with --fitness joint (detection fitness is noise there).
- best.pt of the joint strategies is the epoch with the best detection fitness (YOLOv5's rule), so their view
  figures are read where the detector peaked (the epoch-choice table shows what that costs). dual keeps each
  network at its own best epoch (train_dual.py's default --fitness per-network): they share nothing.
- Every strategy trains with a derived hyp: the given --hyp with mosaic, mixup and copy_paste set to 0 (the
  engine does that for any run with a view task, so detection_only gets the same augmentation) and
  det_task / view_task set per strategy (fixed_w<v>: 1 / v; view_only: 0 / 1; the others keep the given values).
- train time: wall time of the child process (start-up, data scan, training, validation, final validation,
  plots). train loop: elapsed_s of the last epoch in training_history.json. step: median over epochs of the
  epoch's time_s (training + that epoch's validation + checkpoint) / iterations per epoch (from the progress
  bar). peak RSS: ru_maxrss of the child from os.wait4 (its largest process, not the sum with loader workers).
  parameters / GFLOPs: model.info(imgsz) of the evaluated checkpoint, unfused.
- Time columns are wall times on a machine that may have been shared (--jobs, or other work): compare them
  within one report with care; benchmarks/strategy_speed.py measures clean cost ratios in one process.
- With --interference-every, the measured strategies pay one extra backward per task per measurement, which
  is included in their time columns.
"""


def build_report(*, command: str, date: str, machine: str, settings: dict, splits: dict[str, Path],
                 strategies: list[str], rows: list[dict], stage_summaries: dict, failures: list[dict],
                 plots: dict[str, list[str]]) -> str:
    """The whole report.md text (pure: everything it shows is passed in)."""
    ap_cols, f1_cols = ordered_columns(rows, "AP50_"), ordered_columns(rows, "F1_")
    rows = with_delta_m(rows)
    test_cols = ordered_columns(rows, TEST_PREFIX)
    agg = aggregate(rows, [*DETECTION_COLUMNS, *VIEW_COLUMNS, *COST_COLUMNS, *INTERFERENCE_COLUMNS,
                           *EPOCH_CHOICE_COLUMNS, *ap_cols, *f1_cols, *test_cols, "delta_m"])
    out = [f"# Strategy comparison: {settings['name']}", "",
           f"- command: `{command}`", f"- date: {date}", f"- machine: {machine}",
           f"- epochs {settings['epochs']}, seeds {settings['seeds']}, strategies {', '.join(strategies)}",
           f"- train flags passed through: `{settings['extra'] or '(none)'}`", ""]
    pending = [r for r in rows if r.get("status") == "not_run"]
    if pending:
        out += [f"**Interim report: {len(rows) - len(pending)} of {len(rows)} runs finished** (written with "
                "--report-only; the n column counts the seeds each figure rests on; the runs still missing "
                "are listed at the end).", ""]
    out += [NOTES]
    for split, data in splits.items():
        split_rows = [r for r in rows if r["split"] == split]
        out += [f"## Split `{split}` ({data})", "", "### Metrics (valid set, mean ± sd over seeds)", "",
                stat_table(agg, split, strategies, [*DETECTION_COLUMNS, *VIEW_COLUMNS], LABELS), ""]
        split_test = [TEST_PREFIX + c for c in (*DETECTION_COLUMNS, *VIEW_COLUMNS)
                      if TEST_PREFIX + c in ordered_columns(split_rows, TEST_PREFIX)]
        if split_test:
            out += ["### Metrics on the held-out test set (mean ± sd over seeds; no choice was made on it)", "",
                    stat_table(agg, split, strategies, split_test,
                               {c: LABELS[c.removeprefix(TEST_PREFIX)] for c in split_test}), ""]
        out += ["### Cost", "", stat_table(agg, split, strategies, list(COST_COLUMNS), LABELS), ""]
        split_ap = ordered_columns(split_rows, "AP50_")
        if split_ap:
            out += ["### AP50 per class", "",
                    stat_table(agg, split, strategies, split_ap, {c: c[5:] for c in split_ap}), ""]
        split_f1 = ordered_columns(split_rows, "F1_")
        if split_f1:
            out += ["### F1 per view", "", stat_table(agg, split, strategies, split_f1, {c: c[3:] for c in split_f1}), ""]
        stage_aggs = {s: aggregate_stages(stage_summaries[(split, s)]) for s in strategies
                      if stage_summaries.get((split, s))}
        if stage_aggs:
            out += ["### Gradient interference per stage (summarize_interference per run, mean ± sd over seeds)", "",
                    interference_table(stage_aggs), ""]
        choice = [s for s in strategies if agg.get((split, s), {}).get("view_accuracy_peak", NO_STAT).n]
        if choice:
            out += ["### Epoch choice (valid set): view accuracy of best.pt against the run's peak over epochs", "",
                    "best.pt is the epoch with the highest fitness: detection fitness for every joint strategy, so "
                    "the view task is read where the detector peaked. The peak view accuracy is picked on val "
                    "(optimistic); a large gap means the view figures above depend on the epoch choice.", "",
                    stat_table(agg, split, choice, ["best_epoch", "view_accuracy", *EPOCH_CHOICE_COLUMNS[1:]], LABELS), ""]
        table = delta_m_table(agg, split, strategies)
        if table:
            out += ["### Multi-task score delta_m (mean relative change of mAP50 and view accuracy against "
                    "detection_only and view_only; 0 = as good as each task alone)", "", table, ""]
        out += ["### Comparison", "", *[f"- {s}" for s in comparison_sentences(agg, split, strategies)], ""]
        for name in plots.get(split, []):
            out += [f"![{name}]({name})", ""]
    if pending:
        out += ["## Not run yet", ""]
        missing: dict[tuple[str, str], list[int]] = {}
        for r in pending:
            missing.setdefault((r["split"], r["strategy"]), []).append(r["seed"])
        out += [f"- {split} / {strategy}: seeds {', '.join(map(str, seeds))}"
                for (split, strategy), seeds in missing.items()] + [""]
    if failures:
        out += ["## Failed runs", ""]
        for f in failures:
            out += [f"- {f['split']} / {f['strategy']} seed {f['seed']}: {f['error']}", "", "```",
                    f.get("tail") or "(no stderr)", "```", ""]
    return "\n".join(out)


# ------------------------------------------------------------------------------------------- main

@dataclass
class Plan:
    """One run to train or reuse."""

    split: str
    data: Path
    strategy: Strategy
    seed: int
    run_dir: Path
    command: list[str]
    done: bool = False


def parse_args(argv: list[str] | None = None) -> tuple[argparse.Namespace, list[str]]:
    """compare.py's own flags, and everything after the first '--' (the train flags)."""
    argv = list(sys.argv[1:] if argv is None else argv)
    extra: list[str] = []
    if "--" in argv:
        i = argv.index("--")
        argv, extra = argv[:i], argv[i + 1:]
    p = argparse.ArgumentParser(description=__doc__.splitlines()[0],
                                epilog="Train flags go after '--' (e.g. -- --cfg models/yolov5n.yaml --img 320)")
    p.add_argument("--data", action="append", required=True, help="dataset YAML with cls_names (repeat for splits)")
    p.add_argument("--epochs", type=int, required=True, help="epochs of every run (the shared budget)")
    p.add_argument("--seeds", type=int, nargs="+", default=[0], help="training seeds")
    p.add_argument("--name", default="exp", help="comparison name: PROJECT/NAME")
    p.add_argument("--project", type=Path, default=ROOT / "runs" / "compare", help="parent folder of NAME")
    p.add_argument("--strategies", nargs="+", default=None,
                   help="subset to run (default all): detection_only view_only fixed_w<v> gradnorm uncertainty pcgrad dual")
    p.add_argument("--view-weights", type=float, nargs="+", default=list(DEFAULT_VIEW_WEIGHTS),
                   help="view_task values of the fixed-weight sweep (det_task 1)")
    p.add_argument("--interference-every", type=int, default=0,
                   help="measure gradient interference every N iterations in the shared-backbone joint runs")
    p.add_argument("--dry-run", action="store_true", help="print the commands only; train and write nothing")
    p.add_argument("--jobs", type=int, default=1,
                   help="trainings run at once (each child gets OMP_NUM_THREADS = CPUs // jobs unless it is set)")
    p.add_argument("--report-only", action="store_true",
                   help="train nothing: report the finished runs and list the others as not run (progress check)")
    opt = p.parse_args(argv)
    if opt.epochs < 1:
        p.error("--epochs must be >= 1")
    if opt.jobs < 1:
        p.error(f"--jobs {opt.jobs}: must be >= 1")
    try:
        opt.strategies = resolve_strategies(opt.strategies, opt.view_weights)
    except ValueError as e:
        p.error(str(e))
    check_extra_args(extra)
    return opt, extra


def eval_settings(extra: list[str]) -> EvalSettings:
    """Image size, device, workers and single-cls as the train scripts will read them from the extra flags."""
    train_opt, _ = train_parser().parse_known_args(extra)
    return EvalSettings(imgsz=train_opt.imgsz, workers=train_opt.workers, device=train_opt.device,
                        single_cls=train_opt.single_cls)


def plan_runs(opt: argparse.Namespace, extra: list[str], root: Path, write: bool) -> tuple[list[Plan], dict[str, Path]]:
    """Every (split, seed, strategy) run with its command; derived files written when `write`."""
    yamls = []
    for data in opt.data:
        try:
            yamls.append(_find_yaml(data))
        except DatasetError as e:
            raise SystemExit(f"ERROR: {e}") from None
    splits = dict(zip(split_labels(yamls), yamls))
    for split, path in splits.items():
        if not (yaml.safe_load(path.read_text()) or {}).get("cls_names"):
            print(f"WARNING: {path} declares no cls_names: every strategy but detection_only needs the view task")
    base_hyp_path = train_parser().parse_known_args(extra)[0].hyp
    base_hyp = load_hyp(base_hyp_path)
    derived = root / "derived"
    hyp_files: dict[str, Path] = {}
    for name in opt.strategies:
        spec = strategy_spec(name)
        path = derived / f"hyp_{spec.hyp_key}.yaml"
        if write and spec.hyp_key not in hyp_files:
            write_yaml(path, derived_hyp(base_hyp, spec.det_task, spec.view_task),
                       f"derived by benchmarks/compare.py from {base_hyp_path} for {spec.hyp_key}")
        hyp_files[spec.hyp_key] = path
    plans = []
    for split, yaml_path in splits.items():
        det_yaml = derived / f"data_{split}_detection_only.yaml"
        if write and "detection_only" in opt.strategies:
            write_yaml(det_yaml, detection_only_content(yaml.safe_load(yaml_path.read_text())),
                       f"derived by benchmarks/compare.py from {yaml_path}: cls_names removed (detection only)")
        for seed in opt.seeds:
            for name in opt.strategies:
                spec = strategy_spec(name)
                data = det_yaml if spec.detection_data else yaml_path
                run_dir = root / split / run_name(name, seed)
                cmd = build_command(spec, data=data, hyp=hyp_files[spec.hyp_key], epochs=opt.epochs, seed=seed,
                                    project=root / split, name=run_name(name, seed),
                                    interference_every=opt.interference_every, extra=extra)
                plans.append(Plan(split, data, spec, seed, run_dir, cmd, done=run_finished(run_dir, opt.epochs)))
    return plans, splits


def train_run(plan: Plan, env: dict[str, str] | None = None) -> dict:
    """Train one planned run (clearing a partial folder first); returns its cost record (also saved in the folder)."""
    if plan.run_dir.exists():
        shutil.rmtree(plan.run_dir)  # an unfinished run restarts from scratch, never appends to stale files
    plan.run_dir.mkdir(parents=True)
    result = run_child(plan.command, plan.run_dir / "compare_stdout.log", plan.run_dir / "compare_stderr.log", env)
    iterations = parse_train_iterations((plan.run_dir / "compare_stderr.log").read_text(errors="replace"))
    cost = {"rc": result.rc, "train_time_s": result.wall_s, "peak_rss_gb": result.peak_rss_gb,
            "iterations": {str(k): v for k, v in iterations.items()}, "command": shlex.join(plan.command)}
    write_json_atomic(plan.run_dir / COST_FILE, cost, indent=1)
    return cost


def lock_path(run_dir: Path) -> Path:
    """The claim file of a run: beside its folder, because the folder is cleared before training."""
    return run_dir.parent / f".{run_dir.name}.lock"


def lock_holder(lock: Path) -> str | None:
    """'pid N on HOST' of the live process holding a run's claim, or None when it is free or stale.

    A claim from another host cannot be checked and counts as held; one whose process is gone does not.
    """
    try:
        pid_text, host = lock.read_text().split()
        pid = int(pid_text)
    except FileNotFoundError:
        return None
    except (OSError, ValueError):
        return f"an unreadable claim {lock}"  # being written right now, or damaged: remove it by hand if so
    if host == platform.node():
        try:
            os.kill(pid, 0)
        except ProcessLookupError:
            return None
        except PermissionError:
            pass  # alive, another user's
    return f"pid {pid} on {host}"


def claim_run(run_dir: Path) -> Path | None:
    """Claim a run for this process, so two compare.py processes sharing a comparison never train, or
    clear, the same run; returns the claim file to remove when done, or None when a live process holds it.

    The claim is created atomically (O_EXCL); one left by a process that died is taken over.
    """
    lock = lock_path(run_dir)
    lock.parent.mkdir(parents=True, exist_ok=True)
    for _ in range(2):
        try:
            fd = os.open(lock, os.O_CREAT | os.O_EXCL | os.O_WRONLY, 0o644)
        except FileExistsError:
            if lock_holder(lock) is not None:
                return None
            lock.unlink(missing_ok=True)  # stale: its process is gone
            continue
        with os.fdopen(fd, "w") as f:
            f.write(f"{os.getpid()} {platform.node()}\n")
        return lock
    return None


def train_if_free(plan: Plan, epochs: int, train: Callable[[Plan], dict]) -> tuple[str, dict | None]:
    """Train a planned run unless another process holds it or finished it after this one planned.

    Returns (what happened: 'trained', 'held' or 'finished', the cost record when trained).
    """
    lock = claim_run(plan.run_dir)
    if lock is None:
        return "held", None
    try:
        if run_finished(plan.run_dir, epochs):
            return "finished", None
        return "trained", train(plan)
    finally:
        lock.unlink(missing_ok=True)


def load_cost(run_dir: Path) -> dict:
    try:
        return json.loads((run_dir / COST_FILE).read_text())
    except (OSError, json.JSONDecodeError):
        return {}


def collect_row(plan: Plan, epochs: int, cost: dict, settings: EvalSettings, trained_now: bool) -> tuple[dict, dict]:
    """One CSV row for a run (metrics evaluated now) and its per-stage interference summary."""
    history = read_history(plan.run_dir)
    row: dict[str, Any] = {"split": plan.split, "strategy": plan.strategy.name, "seed": plan.seed,
                           "run_dir": str(plan.run_dir), "trained_now": trained_now, "status": "ok"}
    if history:
        row["epochs_done"] = len(history.get("epochs", []))
        elapsed = [r["elapsed_s"] for r in history.get("epochs", []) if "elapsed_s" in r]
        row["train_loop_s"] = elapsed[-1] if elapsed else None
    iterations = {int(k): v for k, v in (cost.get("iterations") or {}).items()}
    row.update(train_time_s=cost.get("train_time_s"), peak_rss_gb=cost.get("peak_rss_gb"),
               step_ms=median_step_ms(history, iterations),
               iterations_per_epoch=statistics.median(iterations.values()) if iterations else None)
    columns, stages = interference_columns(history)
    row.update(columns)
    if not run_finished(plan.run_dir, epochs):
        row.update(status="failed", error=f"exit code {cost.get('rc', '?')}, run incomplete")
        return row, {}
    if row.get("epochs_done", epochs) < epochs:
        row["error"] = f"stopped early after {row['epochs_done']} epochs (--patience)"
    weights = plan.run_dir / "weights" / "best.pt"
    weights = weights if weights.is_file() else plan.run_dir / "weights" / "last.pt"
    row["checkpoint"] = weights.name
    row.update(epoch_choice_columns(history))
    if weights.name != "best.pt":
        row.pop("best_epoch", None)
    try:
        row.update(cached_evaluation(plan.run_dir, weights, plan.data, settings))
    except Exception as e:  # one broken run must not stop the report
        row.update(status="eval_failed", error=f"{type(e).__name__}: {e}")
    return row, stages


def main(argv: list[str] | None = None) -> Path | None:
    opt, extra = parse_args(argv)
    root = opt.project / opt.name
    plans, splits = plan_runs(opt, extra, root, write=not (opt.dry_run or opt.report_only))
    if opt.dry_run:
        for plan in plans:
            print(("# complete, not retrained: " if plan.done else "") + shlex.join(plan.command))
        return None

    settings = eval_settings(extra)
    labels = {plan.run_dir: f"[{i}/{len(plans)}] {plan.split} {run_name(plan.strategy.name, plan.seed)}"
              for i, plan in enumerate(plans, 1)}
    env = child_env(opt.jobs)

    def train_labelled(plan: Plan) -> dict:
        print(f"{labels[plan.run_dir]}: training... ({shlex.join(plan.command)})", flush=True)
        cost = train_run(plan, env)
        print(f"{labels[plan.run_dir]}: exit {cost['rc']} after {cost['train_time_s']:.0f} s, peak RSS "
              f"{cost['peak_rss_gb']:.2f} GB", flush=True)
        return cost

    def train_unless_taken(plan: Plan) -> dict | None:
        outcome, cost = train_if_free(plan, opt.epochs, train_labelled)
        if outcome == "held":
            holder = lock_holder(lock_path(plan.run_dir)) or "another process"  # it may have finished since
            print(f"{labels[plan.run_dir]}: held by {holder}, skipped (claim file {lock_path(plan.run_dir)})",
                  flush=True)
        return cost

    to_train = [] if opt.report_only else [plan for plan in plans if not plan.done]
    with ThreadPoolExecutor(max_workers=opt.jobs) as pool:  # each thread waits on one child process
        trained = zip([plan.run_dir for plan in to_train], pool.map(train_unless_taken, to_train))
        costs = {run_dir: cost for run_dir, cost in trained if cost is not None}

    rows, failures, stage_summaries = [], [], {}
    histories: dict[str, dict[str, list[dict]]] = {}
    for plan in plans:
        label = labels[plan.run_dir]
        if plan.run_dir in costs:
            cost = costs[plan.run_dir]
        elif plan.done or run_finished(plan.run_dir, opt.epochs):  # or finished by another process meanwhile
            print(f"{label}: complete, not retrained ({plan.run_dir})", flush=True)
            cost = load_cost(plan.run_dir)
        else:
            print(f"{label}: not run yet", flush=True)
            rows.append({"split": plan.split, "strategy": plan.strategy.name, "seed": plan.seed,
                         "run_dir": str(plan.run_dir), "trained_now": False, "status": "not_run"})
            continue
        row, stages = collect_row(plan, opt.epochs, cost, settings, trained_now=plan.run_dir in costs)
        rows.append(row)
        if row["status"] != "ok":
            tail = stderr_tail(plan.run_dir / "compare_stderr.log")
            failures.append({**row, "tail": tail})
            print(f"{label}: {row['status']}: {row['error']}\n{tail}", flush=True)
        if stages:
            stage_summaries.setdefault((plan.split, plan.strategy.name), []).append(stages)
        history = read_history(plan.run_dir)
        if history and row["status"] == "ok":
            histories.setdefault(plan.split, {}).setdefault(plan.strategy.name, []).append(history)

    root.mkdir(parents=True, exist_ok=True)
    write_csv(root / "comparison.csv", with_delta_m(rows))
    ap_cols, f1_cols = ordered_columns(rows, "AP50_"), ordered_columns(rows, "F1_")
    test_cols = [TEST_PREFIX + c for c in ("mAP50", "view_accuracy")]
    agg = aggregate(rows, [*DETECTION_COLUMNS, *VIEW_COLUMNS, *COST_COLUMNS, *ap_cols, *f1_cols, *test_cols])
    plots: dict[str, list[str]] = {}
    for split in splits:
        names = [f"tradeoff_{split}.png", f"metric_vs_cost_{split}.png", f"curves_{split}.png"]
        plot_tradeoff(agg, split, opt.strategies, root / names[0])
        plot_metric_vs_cost(agg, split, opt.strategies, root / names[1])
        plot_curves(histories.get(split, {}), split, root / names[2])
        plots[split] = names
    command = "python " + shlex.join([str(Path(sys.argv[0]))] + (argv if argv is not None else sys.argv[1:]))
    report = build_report(command=command, date=datetime.now().astimezone().isoformat(timespec="seconds"),
                          machine=machine_line(settings.device), splits=splits, strategies=opt.strategies,
                          settings={"name": opt.name, "epochs": opt.epochs, "seeds": opt.seeds, "extra": shlex.join(extra)},
                          rows=rows, stage_summaries=stage_summaries, failures=failures, plots=plots)
    write_text_atomic(root / "report.md", report)
    print(f"wrote {root / 'comparison.csv'}, {root / 'report.md'} and {sum(map(len, plots.values()))} plots "
          f"({sum(r['status'] == 'ok' for r in rows)}/{len(rows)} runs ok)")
    return root


if __name__ == "__main__":
    main()
