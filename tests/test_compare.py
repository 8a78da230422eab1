"""The strategy comparison (utils/compare): derived files, run folders and claims, child commands, flag checks,
the three entry points, and one tiny end-to-end run (trains, then resumes). Its numbers: test_compare_report.py."""
from __future__ import annotations

import csv
import json
import multiprocessing
import os
import platform
import shutil
import signal
import subprocess
import sys
import time
from pathlib import Path

import pytest
import yaml

from tests.helpers import med_subset_yaml
from utils.compare.cli import finished_seeds, main, parse_args
from utils.compare.report import more_seeds_note
from utils.compare import runs
from utils.compare.evaluation import EVAL_FILE
from utils.compare.runs import (COST_FILE, Plan, child_env, claim_run, lock_holder, lock_path,
                                run_complete, run_finished, train_if_free)
from utils.compare.strategies import (Strategy, build_command, check_extra_args, derived_hyp, detection_only_content,
                                      resolve_strategies, split_labels, strategy_spec, write_yaml)
from utils.data.dataset_yaml import check_dataset

ROOT = Path(__file__).resolve().parents[1]


# ------------------------------------------------------------------------------- child processes

def test_child_env_shares_the_cores_between_concurrent_jobs():
    assert child_env(1, {"PATH": "/bin"}, cpus=16) == {"PATH": "/bin"}, "one job: the environment unchanged"
    assert child_env(4, {}, cpus=16)["OMP_NUM_THREADS"] == "4"
    assert child_env(3, {}, cpus=2)["OMP_NUM_THREADS"] == "1", "never 0 threads"
    assert child_env(4, {"OMP_NUM_THREADS": "8"}, cpus=16)["OMP_NUM_THREADS"] == "8", "the user's choice wins"
    with pytest.raises(SystemExit):
        parse_args(["--data", "data/med.yaml", "--epochs", "1", "--jobs", "0"])


# --------------------------------------------------------------------------------- derived files

def test_derived_hyp_sets_task_weights_and_turns_mixing_off():
    base = {"lr0": 0.01, "mosaic": 1.0, "mixup": 0.1, "copy_paste": 0.0, "det_task": 1.0, "view_task": 0.5}
    fixed = derived_hyp(base, strategy_spec("fixed_w0.3").det_task, strategy_spec("fixed_w0.3").view_task)
    assert fixed["det_task"] == 1.0 and fixed["view_task"] == pytest.approx(0.3)
    assert fixed["mosaic"] == 0.0 and fixed["mixup"] == 0.0 and fixed["lr0"] == 0.01
    view_only = strategy_spec("view_only")
    hyp = derived_hyp(base, view_only.det_task, view_only.view_task)
    assert hyp["det_task"] == 0.0 and hyp["view_task"] == 1.0
    kept = derived_hyp(base)  # the adaptive strategies keep the given weights
    assert kept["det_task"] == 1.0 and kept["view_task"] == 0.5
    assert base["mosaic"] == 1.0, "the base hyp is not modified"
    masked = derived_hyp({**base, "mask_mixed_views": True}, 1.0, 0.3)  # mixed images train detection only
    assert masked["mosaic"] == 1.0 and masked["mixup"] == 0.1 and masked["view_task"] == pytest.approx(0.3)


def test_detection_only_yaml_drops_cls_names_and_still_loads(tmp_path):
    for split in ("train", "val"):
        (tmp_path / "ds" / "images" / split).mkdir(parents=True)
    content = {"path": str(tmp_path / "ds"), "train": "images/train", "val": "images/val",
               "names": {0: "AR", 1: "MR"}, "cls_names": ["PSAX", "PLAX", "A4C"]}
    derived = detection_only_content(content)
    assert "cls_names" not in derived and "cls_names" in content
    path = write_yaml(tmp_path / "derived" / "det.yaml", derived, "test")
    data = check_dataset(path)
    assert data["cls_names"] is None and data["nc"] == 2 and data["val"] == str((tmp_path / "ds/images/val").resolve())
    # a relative path (resolved against the repository root by check_dataset) becomes absolute
    assert detection_only_content({"path": "datasets/x", "train": "a", "val": "b", "names": ["a"]})["path"] == \
        str((ROOT / "datasets/x").resolve())
    assert detection_only_content({"train": "/a", "val": "/b", "names": ["a"]})["path"] == str(ROOT)


def test_split_labels():
    med, split = ROOT / "data" / "med.yaml", ROOT / "runs" / "splits" / "med_patient_s0" / "med.yaml"
    assert split_labels([med]) == ["med"]
    assert split_labels([med, split]) == ["med", "med_patient_s0"]
    assert split_labels([Path("/x/a/med.yaml"), Path("/y/a/med.yaml")]) == ["a", "a_2"]
    assert split_labels([med, ROOT / "data" / "med-detection.yaml"]) == ["med", "med-detection"]


# --------------------------------------------------------------------------------------- resume

def _fake_run(run_dir: Path, epochs: list[int], last_pt: bool = True) -> Path:
    (run_dir / "weights").mkdir(parents=True)
    if last_pt:
        (run_dir / "weights" / "last.pt").write_bytes(b"not really a checkpoint")
    history = {"run": {}, "epochs": [{"epoch": e, "time_s": 2.0, "val": {}} for e in epochs], "steps": [],
               "interference": []}
    (run_dir / "training_history.json").write_text(json.dumps(history))
    return run_dir


def test_run_complete_needs_last_pt_and_the_final_epoch(tmp_path):
    done = _fake_run(tmp_path / "done", [0, 1, 2])
    assert run_complete(done, 3)
    assert not run_complete(done, 4), "an interrupted run (epoch 2 of 0..3) is trained again"
    assert not run_complete(_fake_run(tmp_path / "no_ckpt", [0, 1, 2], last_pt=False), 3)
    broken = _fake_run(tmp_path / "broken", [0, 1, 2])
    (broken / "training_history.json").write_text("{not json")
    assert not run_complete(broken, 3)
    assert not run_complete(tmp_path / "missing", 3)


def test_run_finished_accepts_an_early_stop_under_the_same_epochs(tmp_path):
    def early(name, rc, epochs_flag):
        run_dir = _fake_run(tmp_path / name, [0, 1])  # stopped after epoch 1 of 0..4
        (run_dir / COST_FILE).write_text(json.dumps({"rc": rc}))
        (run_dir / "opt.yaml").write_text(yaml.safe_dump({"epochs": epochs_flag}))
        return run_dir

    assert not run_complete(early("stopped", 0, 5), 5)
    assert run_finished(early("stopped2", 0, 5), 5), "a clean early stop is a result: not trained again"
    assert not run_finished(early("crashed", 1, 5), 5), "a failed child is trained again"
    assert not run_finished(early("other_budget", 0, 5), 8), "a different --epochs is a different run"
    assert not run_finished(_fake_run(tmp_path / "killed", [0, 1]), 5), "no cost record: it was interrupted"
    assert run_finished(_fake_run(tmp_path / "done", [0, 1, 2]), 3)


def test_finished_seeds_beyond_the_flag_are_planned_as_done_and_never_as_missing(tmp_path, capsys):
    split = tmp_path / "more" / "med"
    _fake_run(split / "fixed_w0.3_s3", [0, 1, 2])  # finished: counted
    _fake_run(split / "fixed_w0.3_s4", [0, 1])  # interrupted: neither trained nor listed
    other = _fake_run(split / "gradnorm_s5", [0, 1])  # stopped early under another --epochs: not this comparison's
    (other / COST_FILE).write_text(json.dumps({"rc": 0}))
    (other / "opt.yaml").write_text(yaml.safe_dump({"epochs": 8}))
    _fake_run(split / "fixed_w0.30_s6", [0, 1, 2])  # another weight's folder, though its name starts alike
    assert finished_seeds(split, ["fixed_w0.3", "gradnorm"], [0], 3) == [3]
    assert finished_seeds(split, ["fixed_w0.3", "gradnorm"], [0, 3], 3) == []
    main(["--data", "data/med.yaml", "--epochs", "3", "--seeds", "0", "--strategies", "fixed_w0.3", "gradnorm",
          "--project", str(tmp_path), "--name", "more", "--dry-run", "--", "--img", "64", "--workers", "0"])
    planned = capsys.readouterr().out.splitlines()
    assert len(planned) == 3, planned
    assert planned[2].startswith("# complete, not retrained: ") and "--seed 3" in planned[2]
    assert all("--seed 4" not in line and "--seed 5" not in line for line in planned)


def test_the_report_header_names_the_seeds_beyond_the_flag():
    rows = [{"strategy": "gradnorm", "seed": s} for s in (0, 1, 3, 4)] + [{"strategy": "view_only", "seed": 3}]
    assert more_seeds_note(rows, [0, 1]) == " (and seed 3 of gradnorm, view_only) (and seed 4 of gradnorm)"
    assert more_seeds_note(rows[:2], [0, 1]) == ""


def _plan(run_dir: Path) -> Plan:
    return Plan("split", run_dir / "data.yaml", Strategy("fixed_w1", "train.py", 1.0, 1.0), 0, run_dir, [])


def _dead_pid() -> int:
    child = subprocess.Popen([sys.executable, "-c", "pass"])
    child.wait()
    return child.pid


def test_a_claimed_run_is_not_trained_or_cleared_by_a_second_process(tmp_path):
    run_dir = tmp_path / "split" / "fixed_w1_s0"
    partial = _fake_run(run_dir, [0])  # another process is training it: epoch 0 of 0..2 done
    lock = lock_path(run_dir)
    lock.write_text(f"{os.getpid()} {platform.node()}\n")  # held by a live process (this one)
    trained = []
    assert train_if_free(_plan(run_dir), 3, lambda p: trained.append(p) or {"rc": 0}) == ("held", None)
    assert trained == [] and (partial / "training_history.json").is_file(), "its folder is left alone"
    assert lock_holder(lock) == f"pid {os.getpid()} on {platform.node()}"
    assert claim_run(run_dir) is None

    lock.write_text(f"{os.getpid()} another-host\n")
    assert lock_holder(lock) is not None, "a claim from another host cannot be checked: it counts as held"


def test_a_free_or_stale_claim_is_taken_and_released_even_when_training_fails(tmp_path):
    run_dir = tmp_path / "split" / "fixed_w1_s0"
    lock = lock_path(run_dir)
    assert train_if_free(_plan(run_dir), 3, lambda p: {"rc": 0, "held": lock.is_file()}) == \
        ("trained", {"rc": 0, "held": True})
    assert not lock.exists(), "released after training"

    lock.write_text(f"{_dead_pid()} {platform.node()}\n")  # its process died
    assert lock_holder(lock) is None
    with pytest.raises(RuntimeError):
        train_if_free(_plan(run_dir), 3, lambda p: (_ for _ in ()).throw(RuntimeError("child failed")))
    assert not lock.exists(), "released when training raises"


def _claim_at_once(run_dir, barrier, results, done):
    barrier.wait()
    results.put(claim_run(run_dir) is not None)
    done.wait(30)  # stay alive, so the claim is live while the others decide


def test_processes_racing_for_a_stale_claim_take_it_once(tmp_path, monkeypatch):
    """Every process judges the dead claim stale at the same moment; only one may end up holding the run."""
    judge = runs.lock_holder

    def slow_judge(lock):  # widens the window between "stale" and taking it over, where the race lived
        holder = judge(lock)
        time.sleep(0.2 if holder is None else 0)
        return holder

    monkeypatch.setattr(runs, "lock_holder", slow_judge)
    run_dir = tmp_path / "split" / "fixed_w1_s0"
    lock = lock_path(run_dir)
    lock.parent.mkdir(parents=True)
    ctx = multiprocessing.get_context("fork")
    for _ in range(3):
        lock.write_text(f"{_dead_pid()} {platform.node()}\n")
        barrier, results, done = ctx.Barrier(6), ctx.Queue(), ctx.Event()
        workers = [ctx.Process(target=_claim_at_once, args=(run_dir, barrier, results, done)) for _ in range(6)]
        for w in workers:
            w.start()
        won = [results.get(timeout=30) for _ in workers]
        done.set()
        for w in workers:
            w.join(30)
        assert sum(won) == 1, f"{sum(won)} processes hold the same run"


KEEP_CHILD = """
import sys
from pathlib import Path
from utils.compare.runs import children_stop_with_this_process, run_child
tmp = Path(sys.argv[1])
child = "import os, time; open(%r, 'w').write(str(os.getpid())); time.sleep(120)" % str(tmp / "pid.txt")
with children_stop_with_this_process():
    run_child([sys.executable, "-c", child], tmp / "out.log", tmp / "err.log")
"""


def test_sigterm_on_the_comparison_stops_its_training_child(tmp_path):
    """`kill <compare.py>` must not leave a child training on, orphaned, in a folder whose claim is released."""
    parent = subprocess.Popen([sys.executable, "-c", KEEP_CHILD, str(tmp_path)], cwd=ROOT)
    pid_file, child = tmp_path / "pid.txt", None
    try:
        deadline = time.time() + 60
        while child is None and time.time() < deadline:
            text = pid_file.read_text().strip() if pid_file.is_file() else ""
            child = int(text) if text.isdigit() else None
            time.sleep(0.1)
        assert child is not None, "the child never started"
        parent.send_signal(signal.SIGTERM)
        assert parent.wait(30) == 128 + signal.SIGTERM
        with pytest.raises(ProcessLookupError):
            os.kill(child, 0)  # killed and reaped, not orphaned
    finally:
        parent.kill()
        if child is not None:
            try:
                os.kill(child, signal.SIGKILL)
            except ProcessLookupError:
                pass


def test_a_run_finished_by_another_process_after_planning_is_not_trained_again(tmp_path):
    run_dir = _fake_run(tmp_path / "split" / "fixed_w1_s0", [0, 1, 2])
    trained = []
    assert train_if_free(_plan(run_dir), 3, lambda p: trained.append(p) or {}) == ("finished", None)
    assert trained == [] and (run_dir / "weights" / "last.pt").is_file()


# ------------------------------------------------------------------------------- command lines

EXTRA = ["--cfg", "models/yolov5n.yaml", "--img", "64", "--hyp", "data/hyps/hyp.medical.yaml",
         "--gradnorm-alpha", "1.0", "--cls-imgsz=32", "--workers", "0"]


def _command(name: str, interference_every: int = 5) -> list[str]:
    return build_command(strategy_spec(name), data=Path("/d/med.yaml"), hyp=Path(f"/h/hyp_{name}.yaml"), epochs=3,
                           seed=1, project=Path("/p/med"), name=f"{name}_s1", interference_every=interference_every,
                           extra=EXTRA, python="python")


@pytest.mark.parametrize("name, script, present, absent", [
    ("detection_only", "train.py", [], ["--balancer", "--interference-every", "--fitness"]),
    ("view_only", "train.py", ["--fitness joint"], ["--balancer", "--interference-every"]),
    ("fixed_w0.3", "train.py", ["--interference-every 5"], ["--balancer"]),
    ("gradnorm", "train_gradnorm.py", ["--interference-every 5", "--gradnorm-alpha 1.0"], ["--balancer"]),
    ("uncertainty", "train.py", ["--balancer uncertainty", "--interference-every 5"], []),
    ("pcgrad", "train.py", ["--balancer pcgrad", "--interference-every 5"], []),
    ("dual", "train_dual.py", ["--cls-imgsz=32"], ["--balancer", "--interference-every"]),
])
def test_command_per_strategy(name, script, present, absent):
    cmd = _command(name)
    text = " ".join(cmd)
    assert cmd[0] == "python" and cmd[1] == str(ROOT / script)
    for flags in ("--data /d/med.yaml", f"--hyp /h/hyp_{name}.yaml", "--epochs 3", "--seed 1", "--weights  ",
                  "--exist-ok", "--project /p/med", f"--name {name}_s1", "--cfg models/yolov5n.yaml", "--img 64",
                  "--workers 0", *present):
        assert flags in text, (flags, text)
    for flag in absent:
        assert flag not in text
    assert cmd.count("--hyp") == 1 and "data/hyps/hyp.medical.yaml" not in text, "the derived hyp replaces --hyp"
    if script != "train_gradnorm.py":
        assert "--gradnorm-alpha" not in text and "1.0" not in cmd[2:cmd.index("--data")]
    if script != "train_dual.py":
        assert "--cls-imgsz=32" not in text


def test_interference_only_when_asked():
    assert "--interference-every" not in _command("fixed_w1", interference_every=0)


def test_strategy_names_and_controlled_flags():
    assert resolve_strategies(None, [0.1, 1.0]) == ["detection_only", "view_only", "fixed_w0.1", "fixed_w1",
                                                      "gradnorm", "uncertainty", "pcgrad", "dual"]
    assert resolve_strategies(["joint_fixed", "fixed_w1.0", "dual"], [0.5]) == ["fixed_w1", "dual"]
    assert resolve_strategies(None, [1, 0.3, 1.0]) == ["detection_only", "view_only", "fixed_w1", "fixed_w0.3",
                                                       "gradnorm", "uncertainty", "pcgrad", "dual"], \
        "a view weight given twice is one strategy: its runs are not planned and counted twice"
    with pytest.raises(ValueError):
        resolve_strategies(["dwa"], [1.0])
    with pytest.raises(SystemExit):
        check_extra_args(["--img", "64", "--epochs", "3"])
    with pytest.raises(SystemExit):
        check_extra_args(["--seed=2"])
    check_extra_args(EXTRA)


# ------------------------------------------------------------------------- flag checks and entry points

BASE_ARGS = ["--data", "data/med.yaml", "--epochs", "2"]


@pytest.mark.parametrize("flags, message", [
    (["--epochs", "0"], "ERROR: --epochs 0: expected an integer >= 1"),
    (["--epochs", "-3"], "ERROR: --epochs -3: expected an integer >= 1"),
    (["--jobs", "0"], "ERROR: --jobs 0: expected an integer >= 1"),
    (["--seeds", "0", "-1"], "ERROR: --seeds -1: expected a number >= 0"),
    (["--view-weights", "0.1", "-0.5"], "ERROR: --view-weights -0.5: expected a number >= 0"),
    (["--view-weights", "nan"], "ERROR: --view-weights nan: expected a number >= 0"),
    (["--view-weights", "inf"], "ERROR: --view-weights inf: expected a number >= 0"),
    (["--interference-every", "-1"], "ERROR: --interference-every -1: expected a number >= 0"),
])
def test_a_bad_numeric_flag_stops_with_one_error_line_before_any_work(tmp_path, flags, message):
    project = tmp_path / "compare"
    with pytest.raises(SystemExit) as stop:
        main([*BASE_ARGS, *flags, "--project", str(project), "--", "--img", "64"])
    assert str(stop.value) == message
    assert not project.exists(), "nothing planned or written"


def test_the_edge_values_of_the_numeric_flags_are_accepted():
    opt, extra = parse_args(["--data", "data/med.yaml", "--epochs", "1", "--jobs", "1", "--seeds", "0", "7",
                             "--view-weights", "0", "2.5", "--interference-every", "0", "--", "--img", "64"])
    assert (opt.epochs, opt.jobs, opt.seeds, opt.view_weights) == (1, 1, [0, 7], [0.0, 2.5])
    assert opt.strategies[2:4] == ["fixed_w0", "fixed_w2.5"] and extra == ["--img", "64"]


ENTRY_POINTS = {"root script": ["compare.py"], "package": ["-m", "utils.compare"],
                "old path": ["benchmarks/compare.py"]}


def _run_entry(entry: list[str], *args: str) -> subprocess.CompletedProcess:
    return subprocess.run([sys.executable, *entry, *args], cwd=ROOT, capture_output=True, text=True, timeout=120)


def test_the_three_entry_points_share_the_help_and_plan_the_same_runs(tmp_path):
    helps, plans = {}, {}
    args = ["--data", "data/med.yaml", "--epochs", "3", "--seeds", "0", "1", "--strategies", "fixed_w0.3", "gradnorm",
            "--project", str(tmp_path), "--name", "same", "--dry-run", "--", "--img", "64", "--workers", "0"]
    for label, entry in ENTRY_POINTS.items():
        shown = _run_entry(entry, "--help")
        assert shown.returncode == 0, (label, shown.stderr[-2000:])
        usage, options = shown.stdout.split("\n\n", 1)
        assert usage.startswith("usage: " + ("python -m utils.compare" if entry[0] == "-m" else "compare.py"))
        helps[label] = options
        planned = _run_entry(entry, *args)
        assert planned.returncode == 0, (label, planned.stderr[-2000:])
        plans[label] = planned.stdout
    assert helps["root script"] == helps["package"] == helps["old path"]
    for flag in ("--view-weights", "--interference-every", "--jobs", "--report-only", "--dry-run"):
        assert flag in helps["root script"]
    assert plans["root script"] == plans["package"] == plans["old path"]
    assert len(plans["root script"].splitlines()) == 4, "2 strategies x 2 seeds"
    assert "train_gradnorm.py" in plans["root script"] and not (tmp_path / "same").exists(), "--dry-run writes nothing"


# ------------------------------------------------------------------------------------ end to end

def _compare(data: Path, project: Path, *flags: str,
             strategies: tuple[str, ...] = ("detection_only", "fixed_w1", "dual")) -> subprocess.CompletedProcess:
    cmd = [sys.executable, str(ROOT / "compare.py"), "--data", str(data), "--epochs", "1",
           "--seeds", "0", "--strategies", *strategies, *flags, "--name", "smoke",
           "--project", str(project), "--", "--img", "64", "--batch-size", "2", "--workers", "0",
           "--cfg", "models/yolov5n.yaml", "--hyp", "data/hyps/hyp.medical.yaml", "--noplots", "--noautoanchor"]
    env = {**os.environ, "OMP_NUM_THREADS": "1"}
    return subprocess.run(cmd, cwd=ROOT, env=env, capture_output=True, text=True, timeout=300)


def test_compare_end_to_end_then_resume(tmp_path, med_root):
    data = med_subset_yaml(tmp_path, med_root, n=4)
    cfg = yaml.safe_load(data.read_text())
    data.write_text(yaml.safe_dump({**cfg, "test": cfg["val"]}))  # a test split: evaluated too, with test_ columns
    records = tmp_path / "records"
    first = _compare(data, tmp_path / "compare", "--jobs", "2", "--records", str(records))
    assert first.returncode == 0, first.stdout[-3000:] + first.stderr[-3000:]
    assert first.stdout.count("recorded in") == 3, "each run recorded as soon as it finished"
    root = tmp_path / "compare" / "smoke"
    with open(root / "comparison.csv") as f:
        rows = list(csv.DictReader(f))
    assert len(rows) == 3 and {r["strategy"] for r in rows} == {"detection_only", "fixed_w1", "dual"}
    assert all(r["status"] == "ok" and r["trained_now"] == "True" for r in rows), rows
    assert not list(root.rglob(".*.lock")), "every claim released"
    by_name = {r["strategy"]: r for r in rows}
    assert by_name["detection_only"]["view_accuracy"] == "" and by_name["fixed_w1"]["view_accuracy"] != ""
    assert float(by_name["dual"]["parameters"]) > float(by_name["fixed_w1"]["parameters"])
    assert all(r["best_epoch"] in {"0", "1"} for r in rows), "replayed from each run's history"
    assert by_name["detection_only"]["view_accuracy_peak"] == "" and by_name["dual"]["view_accuracy_peak"] != ""
    assert all(r["test_mAP50"] == r["mAP50"] for r in rows), "test lists the val images here: same figures"
    assert all(r["last_test_mAP50"] == r["test_mAP50"] for r in rows), "one epoch: last.pt is best.pt's epoch"
    assert by_name["fixed_w1"]["test_view_accuracy"] == by_name["fixed_w1"]["view_accuracy"] != ""
    assert float(by_name["fixed_w1"]["peak_rss_gb"]) > 0.1 and float(by_name["fixed_w1"]["train_time_s"]) > 0
    assert "### Metrics on the held-out test set" in (root / "report.md").read_text()
    # val and test list the train images here: each frame's nearest train frame is itself, the ceiling 1
    assert "view acc (ceiling 1.000)" in (root / "report.md").read_text()
    val_ceiling = json.loads((root / "derived" / "view_ceiling_med_views.json").read_text())["ceilings"]["val"]
    assert val_ceiling["n"] == 4 and val_ceiling["near_share"] == 1.0, "every frame's twin is itself: a bound"
    assert (root / "metric_vs_cost_med_views.png").is_file() and (root / "tradeoff_med_views.png").is_file()
    assert "cls_names" not in yaml.safe_load((root / "derived" / "data_med_views_detection_only.yaml").read_text())
    assert yaml.safe_load((root / "derived" / "hyp_fixed_w1.yaml").read_text())["view_task"] == 1.0

    second = _compare(data, tmp_path / "compare")
    assert second.returncode == 0, second.stdout[-3000:] + second.stderr[-3000:]
    assert second.stdout.count("complete, not retrained") == 3 and "training..." not in second.stdout
    with open(root / "comparison.csv") as f:
        again = list(csv.DictReader(f))
    assert [r["trained_now"] for r in again] == ["False"] * 3
    assert [r["mAP50"] for r in again] == [r["mAP50"] for r in rows]
    assert [r["train_time_s"] for r in again] == [r["train_time_s"] for r in rows], "costs kept from the first run"
    assert all((Path(r["run_dir"]) / EVAL_FILE).is_file() for r in again), "each checkpoint evaluated once"

    main_report = (root / "report.md").read_text()
    at_last = _compare(data, tmp_path / "compare", "--report-only", "--checkpoint", "last")
    assert at_last.returncode == 0, at_last.stdout[-3000:] + at_last.stderr[-3000:]
    with open(root / "checkpoint_last" / "comparison.csv") as f:
        last_rows = list(csv.DictReader(f))
    assert [r["checkpoint"] for r in last_rows] == ["last.pt"] * 3 and all(r["best_epoch"] == "" for r in last_rows)
    assert [r["mAP50"] for r in last_rows] == [r["mAP50"] for r in rows], "one epoch: last.pt is best.pt's epoch"
    assert "scored at last.pt" in (root / "checkpoint_last" / "report.md").read_text()
    assert (root / "checkpoint_last" / "tradeoff_med_views.png").is_file()
    assert (root / "report.md").read_text() == main_report, "the main report is left alone"

    interim = _compare(data, tmp_path / "compare", "--report-only",
                       strategies=("detection_only", "fixed_w1", "dual", "gradnorm"))
    assert interim.returncode == 0, interim.stdout[-3000:] + interim.stderr[-3000:]
    assert "training..." not in interim.stdout and "not run yet" in interim.stdout
    assert not (root / "med_views" / "gradnorm_s0").exists(), "--report-only trains nothing"
    with open(root / "comparison.csv") as f:
        statuses = {r["strategy"]: r["status"] for r in csv.DictReader(f)}
    assert statuses == {"detection_only": "ok", "fixed_w1": "ok", "dual": "ok", "gradnorm": "not_run"}
    report = (root / "report.md").read_text()
    assert "Interim report: 3 of 4 runs finished" in report and "- med_views / gradnorm: seeds 0" in report

    assert sorted(p.name for p in (records / "med_views").iterdir()) == ["detection_only_s0", "dual_s0", "fixed_w1_s0"]
    kept = sorted(p.name for p in (records / "med_views" / "dual_s0").iterdir())
    assert kept == ["compare_cost.json", "hyp.yaml", "opt.yaml", "rows.json", "training_history.json"], kept
    shutil.rmtree(root / "med_views")  # a fresh checkout: the run folders are gone, their records are not
    fresh = _compare(data, tmp_path / "compare", "--records", str(records))
    assert fresh.returncode == 0, fresh.stdout[-3000:] + fresh.stderr[-3000:]
    assert fresh.stdout.count("recorded, not retrained") == 3 and "training..." not in fresh.stdout
    with open(root / "comparison.csv") as f:
        from_records = list(csv.DictReader(f))
    for column in ("mAP50", "test_view_accuracy", "last_test_mAP50", "train_time_s", "best_epoch", "delta_m"):
        assert [r[column] for r in from_records] == [r[column] for r in rows], column


