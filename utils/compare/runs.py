"""A run's folder: reading what it holds, whether it is finished, claiming it, and training it as a child process."""
from __future__ import annotations

import contextlib
import json
import os
import platform
import re
import shlex
import shutil
import signal
import subprocess
import sys
import threading
import time
from dataclasses import dataclass
from pathlib import Path
from typing import Callable, Iterator, Mapping

import yaml

try:
    import fcntl
except ImportError:  # Windows: claims stay atomic (O_EXCL); only the stale takeover is unguarded
    fcntl = None

from utils.compare.strategies import Strategy
from utils.files import write_json_atomic

COST_FILE = "compare_cost.json"  # what the comparison measured about a child, kept for later re-runs


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
    frozen: tuple[Path, Path, Path] | None = None  # (source run, template hyp, hyp to write) for a frozen strategy
    record: Path | None = None  # its record folder (--records; utils/compare/records.py)


RUN_NAME = re.compile(r"(?P<strategy>.+)_s(?P<seed>\d+)")


def run_name(strategy: str, seed: int) -> str:
    """The run's folder name under its split: <strategy>_s<seed>."""
    return f"{strategy}_s{seed}"


def parse_run_name(folder: str) -> tuple[str, int] | None:
    """run_name's inverse: 'gradnorm_frozen_s2' -> ('gradnorm_frozen', 2); None for another name."""
    match = RUN_NAME.fullmatch(folder)
    return (match["strategy"], int(match["seed"])) if match else None


def read_history(run_dir: Path) -> dict | None:
    """training_history.json of a run, or None if missing or unreadable."""
    try:
        return json.loads((run_dir / "training_history.json").read_text())
    except (OSError, json.JSONDecodeError):
        return None


def load_cost(run_dir: Path) -> dict:
    """The cost record saved when the run was trained ({} when there is none: the run was interrupted)."""
    try:
        return json.loads((run_dir / COST_FILE).read_text())
    except (OSError, json.JSONDecodeError):
        return {}


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


def stderr_tail(path: Path, lines: int = 15) -> str:
    """The last non-blank lines of a log file, each progress-bar line at its final redraw."""
    try:
        text = path.read_text(errors="replace")
    except OSError:
        return ""
    rows = [segment.split("\r")[-1] for segment in text.split("\n")]
    return "\n".join([r for r in rows if r.strip()][-lines:])


TQDM_EPOCH = re.compile(r"^\s*(\d+)/(\d+)\s.*?\|\s*(\d+)/(\d+) \[")


def parse_train_iterations(stderr_text: str) -> dict[int, int]:
    """Training iterations per epoch from the training progress bar ('E/E-1 ... | n/N [') in a child's stderr."""
    per_epoch: dict[int, int] = {}
    for segment in re.split(r"[\r\n]", stderr_text):
        match = TQDM_EPOCH.match(segment)
        if match:
            per_epoch[int(match.group(1))] = int(match.group(4))
    return per_epoch


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


_LIVE_CHILDREN: set[subprocess.Popen] = set()
_LIVE_LOCK = threading.Lock()


@contextlib.contextmanager
def children_stop_with_this_process() -> Iterator[None]:
    """Make SIGTERM (`kill`, a job scheduler's stop) end the training children too.

    By default SIGTERM ends this process at once, and each child trains on, orphaned, into a folder whose
    claim is gone: the next compare.py would clear it under the running child. Inside this block SIGTERM
    kills every live child (its last.pt stays whole: checkpoints are written atomically), then exits
    with 128 + the signal number. Ctrl-C already does the same through run_child.
    """
    if threading.current_thread() is not threading.main_thread():  # signal handlers belong to the main thread
        yield
        return

    def stop(signum: int, _frame: object) -> None:
        with _LIVE_LOCK:
            for proc in _LIVE_CHILDREN:
                proc.kill()
        raise SystemExit(128 + signum)

    previous = signal.signal(signal.SIGTERM, stop)
    try:
        yield
    finally:
        signal.signal(signal.SIGTERM, previous)


def run_child(cmd: list[str], stdout_path: Path, stderr_path: Path, env: dict[str, str] | None = None,
              append: bool = False) -> ChildResult:
    """Run `cmd`, output to the two files; wall time from start to os.wait4, peak RSS from its rusage."""
    stdout_path.parent.mkdir(parents=True, exist_ok=True)
    mode = "a" if append else "w"
    with open(stdout_path, mode) as out, open(stderr_path, mode) as err:
        t0 = time.perf_counter()
        proc = subprocess.Popen(cmd, stdout=out, stderr=err, env=env)
        with _LIVE_LOCK:
            _LIVE_CHILDREN.add(proc)
        try:
            _, status, usage = os.wait4(proc.pid, 0)
        except BaseException:
            proc.kill()
            proc.wait()
            raise
        finally:
            with _LIVE_LOCK:
                _LIVE_CHILDREN.discard(proc)
        wall = time.perf_counter() - t0
    rc = os.waitstatus_to_exitcode(status)
    proc.returncode = rc  # reaped by wait4: tell Popen so it does not wait again
    scale = 1.0 if sys.platform == "darwin" else 1024.0  # ru_maxrss: bytes on macOS, KiB on Linux
    return ChildResult(rc=rc, wall_s=wall, peak_rss_gb=usage.ru_maxrss * scale / 1e9)


@dataclass(frozen=True)
class ResumePoint:
    """Where an interrupted run continues: its last.pt, the epochs it recorded and their training seconds."""

    last: Path
    epochs_done: int
    seconds_done: float


def resume_point(run_dir: Path) -> ResumePoint | None:
    """The point an interrupted run can continue from (last.pt, opt.yaml and at least one recorded epoch), or None.

    A long comparison outlives the process that started it (a machine reclaimed, a session ended); a run
    killed in epoch N keeps last.pt from epoch N - 1, so continuing it with the trainer's own --resume
    loses at most one epoch instead of the whole run.
    """
    last = run_dir / "weights" / "last.pt"
    history = read_history(run_dir)
    epochs = (history or {}).get("epochs") or []
    if not last.is_file() or not (run_dir / "opt.yaml").is_file() or not epochs:
        return None
    return ResumePoint(last, len(epochs), sum(float(r.get("time_s") or 0.0) for r in epochs))


def train_run(plan: Plan, env: dict[str, str] | None = None) -> dict:
    """Train one planned run, or continue an interrupted one from its last.pt; returns its cost record (also saved).

    A folder that cannot be resumed is cleared first: a run never appends to stale files. A resumed run's
    train_time_s is its recorded epochs' time (training_history.json) plus the new process's wall time.
    """
    point = resume_point(plan.run_dir) if plan.run_dir.exists() else None
    if point is None:
        if plan.run_dir.exists():
            shutil.rmtree(plan.run_dir)
        plan.run_dir.mkdir(parents=True)
    command = plan.command if point is None else [*plan.command[:2], "--resume", str(point.last)]
    result = run_child(command, plan.run_dir / "compare_stdout.log", plan.run_dir / "compare_stderr.log", env,
                       append=point is not None)
    iterations = parse_train_iterations((plan.run_dir / "compare_stderr.log").read_text(errors="replace"))
    cost = {"rc": result.rc, "train_time_s": result.wall_s + (point.seconds_done if point else 0.0),
            "peak_rss_gb": result.peak_rss_gb, "iterations": {str(k): v for k, v in iterations.items()},
            "command": shlex.join(plan.command)}
    if point is not None:
        cost.update(resumed_after_epochs=point.epochs_done, resume_command=shlex.join(command))
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


@contextlib.contextmanager
def _claims_guard(folder: Path) -> Iterator[None]:
    """Serialise claiming within one split folder on this host.

    Without it two processes can both judge a claim stale, and the second one's removal deletes the claim
    the first has just made: both would train the same run. The guard file stays (removing a file others
    may be waiting to lock reopens the race); the kernel releases the lock when its process dies.
    """
    if fcntl is None:
        yield
        return
    with open(folder / ".claims.guard", "a") as f:
        fcntl.flock(f, fcntl.LOCK_EX)
        try:
            yield
        finally:
            fcntl.flock(f, fcntl.LOCK_UN)


def claim_run(run_dir: Path) -> Path | None:
    """Claim a run for this process, so two compare.py processes sharing a comparison never train, or
    clear, the same run; returns the claim file to remove when done, or None when a live process holds it.

    The claim is created atomically (O_EXCL); one left by a process that died is taken over.
    """
    lock = lock_path(run_dir)
    lock.parent.mkdir(parents=True, exist_ok=True)
    with _claims_guard(lock.parent):
        try:
            fd = os.open(lock, os.O_CREAT | os.O_EXCL | os.O_WRONLY, 0o644)
        except FileExistsError:
            if lock_holder(lock) is not None:
                return None
            lock.unlink(missing_ok=True)  # stale: its process is gone
            try:
                fd = os.open(lock, os.O_CREAT | os.O_EXCL | os.O_WRONLY, 0o644)
            except FileExistsError:
                return None  # made meanwhile by a process on another host (it does not take this guard)
        with os.fdopen(fd, "w") as f:
            f.write(f"{os.getpid()} {platform.node()}\n")
    return lock


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
