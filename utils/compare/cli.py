"""The comparison's command line: its flags, the planned runs, and main (train what is missing, then report)."""
from __future__ import annotations

import argparse
import shlex
import sys
from concurrent.futures import ThreadPoolExecutor
from dataclasses import dataclass, field
from datetime import datetime
from pathlib import Path

import yaml

import utils.compare
from utils.cli import NON_NEGATIVE, POSITIVE_INTEGER, check_numeric_flags, train_parser
from utils.compare.columns import COST_COLUMNS, DETECTION_COLUMNS, TEST_PREFIX, VIEW_COLUMNS, ordered_columns
from utils.compare.comparison_csv import write_csv
from utils.compare.evaluation import EvalSettings, eval_settings
from utils.compare.bootstrap_table import read_bootstrap_tables
from utils.compare.interference_table import read_tables
from utils.compare.ceilings import view_ceilings
from utils.compare.plots import plot_curves, plot_metric_vs_cost, plot_tradeoff
from utils.compare.records import record_dir, recorded, recorded_history, recorded_row, save_record
from utils.compare.report import build_report, machine_line
from utils.compare.run_rows import collect_row
from utils.compare.runs import (Plan, child_env, children_stop_with_this_process, load_cost, lock_holder, lock_path,
                                parse_run_name, read_history, run_finished, run_name, stderr_tail, train_if_free,
                                train_run)
from utils.compare.stats import aggregate, with_delta_m
from utils.compare.strategies import (DEFAULT_VIEW_WEIGHTS, build_command, check_extra_args, derived_hyp,
                                      detection_only_content, resolve_strategies, split_labels, strategy_spec,
                                      write_frozen_hyp, write_yaml)
from utils.data.dataset_yaml import DatasetError, _find_yaml
from utils.files import write_text_atomic
from utils.paths import ROOT
from utils.training.run_setup import load_hyp

# What each numeric flag accepts; checked before anything is planned, written or trained.
NUMERIC_RULES = {
    "epochs": POSITIVE_INTEGER,
    "seeds": NON_NEGATIVE,  # numpy refuses a negative seed, so such a run would fail in its child
    "view_weights": NON_NEGATIVE,
    "interference_every": NON_NEGATIVE,  # 0 = off
    "jobs": POSITIVE_INTEGER,
}


def parse_args(argv: list[str] | None = None, prog: str | None = None) -> tuple[argparse.Namespace, list[str]]:
    """The comparison's own flags, and everything after the first '--' (the train flags)."""
    argv = list(sys.argv[1:] if argv is None else argv)
    extra: list[str] = []
    if "--" in argv:
        i = argv.index("--")
        argv, extra = argv[:i], argv[i + 1:]
    p = argparse.ArgumentParser(prog=prog, description=utils.compare.__doc__.splitlines()[0],
                                epilog="Train flags go after '--' (e.g. -- --cfg models/yolov5n.yaml --img 320)")
    p.add_argument("--data", action="append", required=True, help="dataset YAML with cls_names (repeat for splits)")
    p.add_argument("--epochs", type=int, required=True, help="epochs of every run (the shared budget)")
    p.add_argument("--seeds", type=int, nargs="+", default=[0], help="training seeds")
    p.add_argument("--name", default="exp", help="comparison name: PROJECT/NAME")
    p.add_argument("--project", type=Path, default=ROOT / "runs" / "compare", help="parent folder of NAME")
    p.add_argument("--strategies", nargs="+", default=None,
                   help="subset to run (default all): detection_only view_only fixed_w<v> gradnorm uncertainty pcgrad "
                        "dual")
    p.add_argument("--view-weights", type=float, nargs="+", default=list(DEFAULT_VIEW_WEIGHTS),
                   help="view_task values of the fixed-weight sweep (det_task 1)")
    p.add_argument("--interference-every", type=int, default=0,
                   help="measure gradient interference every N iterations in the shared-backbone joint runs")
    p.add_argument("--dry-run", action="store_true", help="print the commands only; train and write nothing")
    p.add_argument("--jobs", type=int, default=1,
                   help="trainings run at once (each child gets OMP_NUM_THREADS = CPUs // jobs unless it is set)")
    p.add_argument("--report-only", action="store_true",
                   help="train nothing: report the finished runs and list the others as not run (progress check)")
    p.add_argument("--checkpoint-interference", type=Path, nargs="+", default=[], metavar="CSV",
                   help="checkpoint_interference.csv files of benchmarks/checkpoint_interference.py on these runs: "
                        "the conclusion reads direction vs magnitude from them")
    p.add_argument("--patient-bootstrap", type=Path, nargs="+", default=[], metavar="CSV",
                   help="patient_bootstrap_<checkpoint>.csv files of benchmarks/patient_bootstrap.py on these runs: "
                        "the conclusion quotes their intervals over redrawn test patients")
    p.add_argument("--checkpoint", choices=("best", "last"), default="best",
                   help="checkpoint each run is scored by: best.pt (picked on val) or last.pt (the final epoch: checks "
                        "that the conclusion does not rest on the epoch choice; report in NAME/checkpoint_last)")
    p.add_argument("--records", type=Path, default=None, metavar="DIR",
                   help="record every finished run's rows, history and cost in DIR/<split>/<run> (no weights; meant "
                        "to be committed); a run recorded there counts as finished even when its folder is gone")
    opt = p.parse_args(argv)
    check_numeric_flags(opt, NUMERIC_RULES)
    try:
        opt.strategies = resolve_strategies(opt.strategies, opt.view_weights)
    except ValueError as e:
        p.error(str(e))
    check_extra_args(extra)
    return opt, extra


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
        records = opt.records / split if opt.records else None
        for seed in [*opt.seeds, *finished_seeds(root / split, opt.strategies, opt.seeds, opt.epochs, records)]:
            for name in opt.strategies:
                spec = strategy_spec(name)
                data = det_yaml if spec.detection_data else yaml_path
                run_dir = root / split / run_name(name, seed)
                record = record_dir(opt.records, split, name, seed) if opt.records else None
                done = run_finished(run_dir, opt.epochs) or recorded(record, opt.epochs)
                if seed not in opt.seeds and not done:
                    continue  # a seed beyond --seeds counts only where it has finished
                hyp, frozen = hyp_files[spec.hyp_key], None
                if spec.frozen_from:  # written when the source run has finished (train_missing)
                    frozen = (root / split / run_name(spec.frozen_from, seed), hyp,
                              derived / f"hyp_{name}_{split}_s{seed}.yaml")
                    hyp = frozen[2]
                cmd = build_command(spec, data=data, hyp=hyp, epochs=opt.epochs, seed=seed,
                                    project=root / split, name=run_name(name, seed),
                                    interference_every=opt.interference_every, extra=extra)
                plans.append(Plan(split, data, spec, seed, run_dir, cmd, done=done, frozen=frozen, record=record))
    return plans, splits


def finished_seeds(split_dir: Path, strategies: list[str], seeds: list[int], epochs: int,
                   records: Path | None = None) -> list[int]:
    """Seeds beyond `seeds` that some strategy of the split has finished with the same epochs (say, more seeds for
    the strategies a conclusion turns on, trained by another command), in its run folder or in its record folder
    `records` (the split's): the report counts them rather than drop finished work; they are never trained or
    listed as missing."""
    found = set()
    for folder, finished in ((split_dir, run_finished), (records, recorded)):
        for path in folder.iterdir() if folder is not None and folder.is_dir() else []:
            parsed = parse_run_name(path.name)
            if parsed and parsed[0] in strategies and parsed[1] not in seeds and finished(path, epochs):
                found.add(parsed[1])
    return sorted(found)


def finished_history(run_dir: Path, record: Path | None, epochs: int) -> dict | None:
    """The training history of a finished run, from its folder or else from its record (None if neither)."""
    if run_finished(run_dir, epochs):
        return read_history(run_dir)
    return recorded_history(record) if recorded(record, epochs) else None


def train_missing(plans: list[Plan], opt: argparse.Namespace, labels: dict[Path, str],
                  settings: EvalSettings | None = None) -> dict[Path, dict]:
    """Train the planned runs not finished yet, --jobs at a time; returns the cost record of each run trained now.

    With --records (and `settings`), each run is evaluated and recorded as soon as it finishes, not when the whole
    command ends: a machine reclaimed hours later loses only the runs still training.
    """
    env = child_env(opt.jobs)

    def train_labelled(plan: Plan) -> dict | None:
        if plan.frozen is not None:
            source, template, out = plan.frozen
            source_record = record_dir(opt.records, plan.split, plan.strategy.frozen_from, plan.seed) \
                if opt.records else None
            history = finished_history(source, source_record, opt.epochs)
            weights = write_frozen_hyp(history, template, out, source.name) if history else None
            if weights is None:
                print(f"{labels[plan.run_dir]}: {source.name} has not finished (or recorded no step): not run; run "
                      f"the same command again once it has", flush=True)
                return None
            print(f"{labels[plan.run_dir]}: task weights fixed at {source.name}'s means: det "
                  f"{weights['det']:.4f}, view {weights['view']:.4f}", flush=True)
        print(f"{labels[plan.run_dir]}: training... ({shlex.join(plan.command)})", flush=True)
        cost = train_run(plan, env)
        print(f"{labels[plan.run_dir]}: exit {cost['rc']} after {cost['train_time_s']:.0f} s, peak RSS "
              f"{cost['peak_rss_gb']:.2f} GB", flush=True)
        if plan.record is not None and settings is not None and run_finished(plan.run_dir, opt.epochs):
            row, _ = collect_row(plan, opt.epochs, cost, settings, True)
            if row["status"] == "ok":
                record_run(plan, row, cost, opt.epochs, settings, "best")
                print(f"{labels[plan.run_dir]}: recorded in {plan.record}", flush=True)
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
        return {run_dir: cost for run_dir, cost in trained if cost is not None}


@dataclass
class Collected:
    """What the CSV, the report and the plots are made of, gathered run by run."""

    rows: list[dict] = field(default_factory=list)
    failures: list[dict] = field(default_factory=list)  # rows of runs that failed, with their stderr tail
    stage_summaries: dict[tuple[str, str], list[dict]] = field(default_factory=dict)  # per (split, strategy)
    histories: dict[str, dict[str, list[dict]]] = field(default_factory=dict)  # split -> strategy -> ok runs


def collect_runs(plans: list[Plan], costs: dict[Path, dict], epochs: int, settings: EvalSettings,
                 labels: dict[Path, str], checkpoint: str = "best") -> Collected:
    """A row per planned run: evaluated where finished, 'not_run' where not; failures printed as they are met."""
    collected = Collected()
    for plan in plans:
        label = labels[plan.run_dir]
        if plan.run_dir in costs:
            cost = costs[plan.run_dir]
        elif run_finished(plan.run_dir, epochs):  # finished before, or by another process meanwhile
            print(f"{label}: complete, not retrained ({plan.run_dir})", flush=True)
            cost = load_cost(plan.run_dir)
        elif recorded(plan.record, epochs):  # its folder is gone or unfinished: the record stands for it
            print(f"{label}: recorded, not retrained ({plan.record})", flush=True)
            collect_recorded(collected, plan, checkpoint)
            continue
        else:
            print(f"{label}: not run yet", flush=True)
            collected.rows.append({"split": plan.split, "strategy": plan.strategy.name, "seed": plan.seed,
                                   "run_dir": str(plan.run_dir), "trained_now": False, "status": "not_run"})
            continue
        row, stages = collect_row(plan, epochs, cost, settings, plan.run_dir in costs, checkpoint)
        collected.rows.append(row)
        if plan.record is not None and row["status"] == "ok":
            record_run(plan, row, cost, epochs, settings, checkpoint)
        if row["status"] != "ok":
            tail = stderr_tail(plan.run_dir / "compare_stderr.log")
            collected.failures.append({**row, "tail": tail})
            print(f"{label}: {row['status']}: {row['error']}\n{tail}", flush=True)
        if stages:
            collected.stage_summaries.setdefault((plan.split, plan.strategy.name), []).append(stages)
        history = read_history(plan.run_dir)
        if history and row["status"] == "ok":
            collected.histories.setdefault(plan.split, {}).setdefault(plan.strategy.name, []).append(history)
    return collected


def collect_recorded(collected: Collected, plan: Plan, checkpoint: str) -> None:
    """A recorded run's row (and history, where recorded) into `collected`, as the report read it then."""
    row = recorded_row(plan.record, checkpoint)
    if row is None:  # a record written by a report at the other checkpoint only
        row = {"split": plan.split, "strategy": plan.strategy.name, "seed": plan.seed, "run_dir": str(plan.record),
               "trained_now": False, "status": "eval_failed",
               "error": f"{plan.record} has no row scored at {checkpoint}.pt and the run folder is gone"}
        collected.failures.append({**row, "tail": ""})
    collected.rows.append(row)
    history = recorded_history(plan.record)
    if history and row["status"] == "ok":
        collected.histories.setdefault(plan.split, {}).setdefault(plan.strategy.name, []).append(history)


def record_run(plan: Plan, row: dict, cost: dict, epochs: int, settings: EvalSettings, checkpoint: str) -> None:
    """Record a finished run (--records): its row at `checkpoint` and at the other checkpoint (evaluated once,
    cached in the run folder like the first), its history and cost, so that either report can be made again once
    the run folder is gone. The patient bootstrap's per-image matches stay in the run folder (utils.compare.records)."""
    other = "last" if checkpoint == "best" else "best"
    other_row, _ = collect_row(plan, epochs, cost, settings, False, other)
    rows = {checkpoint: row, **({other: other_row} if other_row["status"] == "ok" else {})}
    save_record(plan.record, epochs, rows, plan.run_dir)


def write_plots(collected: Collected, splits: dict[str, Path], strategies: list[str],
                root: Path, ceilings: dict[str, dict] | None = None) -> dict[str, list[str]]:
    """The three figures per split in `root`; returns their file names per split."""
    rows = collected.rows
    ap_cols, f1_cols = ordered_columns(rows, "AP50_"), ordered_columns(rows, "F1_")
    test_cols = [TEST_PREFIX + c for c in ("mAP50", "view_accuracy")]
    agg = aggregate(rows, [*DETECTION_COLUMNS, *VIEW_COLUMNS, *COST_COLUMNS, *ap_cols, *f1_cols, *test_cols])
    plots: dict[str, list[str]] = {}
    for split in splits:
        names = [f"tradeoff_{split}.png", f"metric_vs_cost_{split}.png", f"curves_{split}.png"]
        plot_tradeoff(agg, split, strategies, root / names[0], (ceilings or {}).get(split))
        plot_metric_vs_cost(agg, split, strategies, root / names[1])
        plot_curves(collected.histories.get(split, {}), split, root / names[2])
        plots[split] = names
    return plots


def main(argv: list[str] | None = None, entry: list[str] | None = None) -> Path | None:
    """Run the comparison; returns the report folder, PROJECT/NAME or its checkpoint_last (None for --dry-run).

    entry: how it was started, after `python` (e.g. ["-m", "utils.compare"]), for --help and the report's
    command line; default the script path in sys.argv[0].
    """
    opt, extra = parse_args(argv, prog=" ".join(["python", *entry]) if entry else None)
    entry = entry or [str(Path(sys.argv[0]))]
    root = opt.project / opt.name
    checkpoint_rows = read_tables(opt.checkpoint_interference)  # before any training: a bad path fails at once
    bootstrap_rows = read_bootstrap_tables(opt.patient_bootstrap)
    plans, splits = plan_runs(opt, extra, root, write=not (opt.dry_run or opt.report_only))
    if opt.dry_run:
        for plan in plans:
            print(("# complete, not retrained: " if plan.done else "") + shlex.join(plan.command))
        return None

    settings = eval_settings(extra)
    labels = {plan.run_dir: f"[{i}/{len(plans)}] {plan.split} {run_name(plan.strategy.name, plan.seed)}"
              for i, plan in enumerate(plans, 1)}
    with children_stop_with_this_process():
        costs = train_missing(plans, opt, labels, settings)
    collected = collect_runs(plans, costs, opt.epochs, settings, labels, opt.checkpoint)

    out = root if opt.checkpoint == "best" else root / "checkpoint_last"  # the runs stay in root either way
    out.mkdir(parents=True, exist_ok=True)
    write_csv(out / "comparison.csv", with_delta_m(collected.rows))
    ceilings = view_ceilings(splits, root / "derived")
    plots = write_plots(collected, splits, opt.strategies, out, ceilings)
    command = "python " + shlex.join(entry + (argv if argv is not None else sys.argv[1:]))
    report = build_report(command=command, date=datetime.now().astimezone().isoformat(timespec="seconds"),
                          machine=machine_line(settings.device), splits=splits, strategies=opt.strategies,
                          settings={"name": opt.name, "epochs": opt.epochs, "seeds": opt.seeds,
                                    "extra": shlex.join(extra), "checkpoint": opt.checkpoint},
                          rows=collected.rows, stage_summaries=collected.stage_summaries,
                          failures=collected.failures, plots=plots, ceilings=ceilings,
                          checkpoint_rows=checkpoint_rows, bootstrap_rows=bootstrap_rows)
    write_text_atomic(out / "report.md", report)
    rows = collected.rows
    print(f"wrote {out / 'comparison.csv'}, {out / 'report.md'} and {sum(map(len, plots.values()))} plots "
          f"({sum(r['status'] == 'ok' for r in rows)}/{len(rows)} runs ok)")
    return out
