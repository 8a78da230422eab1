"""utils/compare/runs.py: an interrupted run continues from its last.pt instead of starting again."""
from __future__ import annotations

import json
from pathlib import Path

import pytest

from tests.test_compare import _fake_run
from utils.compare import runs
from utils.compare.runs import COST_FILE, ChildResult, Plan, resume_point, train_run
from utils.compare.strategies import Strategy

COMMAND = ["python", "train_gradnorm.py", "--data", "d.yaml", "--epochs", "60", "--name", "gradnorm_s0"]


def _plan(run_dir: Path) -> Plan:
    return Plan("split", Path("d.yaml"), Strategy("gradnorm", "train_gradnorm.py", 1.0, 1.0), 0, run_dir, COMMAND)


@pytest.fixture
def children(monkeypatch) -> list[dict]:
    """Records each child the comparison would start (command, append) instead of starting it."""
    started: list[dict] = []

    def fake_child(cmd, stdout_path, stderr_path, env=None, append=False):
        started.append({"cmd": cmd, "append": append, "files": sorted(p.name for p in stdout_path.parent.iterdir())})
        with open(stderr_path, "a" if append else "w") as err:
            err.write("  6/59  1.2G  0.07 | 53/53 [00:30<00:00]\n")
        return ChildResult(rc=0, wall_s=100.0, peak_rss_gb=1.5)

    monkeypatch.setattr(runs, "run_child", fake_child)
    return started


def test_a_run_with_recorded_epochs_resumes_from_last_pt(tmp_path, children):
    run_dir = _fake_run(tmp_path / "gradnorm_s0", epochs=[0, 1, 2, 3, 4, 5])  # 2.0 s each
    (run_dir / "opt.yaml").write_text("epochs: 60\n")
    (run_dir / "compare_stderr.log").write_text("earlier epochs\n")
    point = resume_point(run_dir)
    assert point is not None and (point.epochs_done, point.seconds_done) == (6, 12.0)

    cost = train_run(_plan(run_dir))
    (child,) = children
    assert child["cmd"] == ["python", "train_gradnorm.py", "--resume", str(run_dir / "weights" / "last.pt")]
    assert child["append"] and "training_history.json" in child["files"], "the folder is kept, logs appended"
    assert (run_dir / "compare_stderr.log").read_text().startswith("earlier epochs\n")
    assert cost["train_time_s"] == pytest.approx(112.0) and cost["resumed_after_epochs"] == 6
    assert cost["command"] == " ".join(COMMAND), "the command that reproduces the run, not the resume"
    assert json.loads((run_dir / COST_FILE).read_text())["iterations"] == {"6": 53}


@pytest.mark.parametrize("missing", ["last.pt", "opt.yaml", "epochs"])
def test_a_folder_that_cannot_resume_is_cleared_and_trained_from_scratch(tmp_path, children, missing):
    run_dir = _fake_run(tmp_path / "gradnorm_s0", epochs=[] if missing == "epochs" else [0, 1],
                        last_pt=missing != "last.pt")
    if missing != "opt.yaml":
        (run_dir / "opt.yaml").write_text("epochs: 60\n")
    (run_dir / "stale.txt").write_text("from the interrupted run")
    assert resume_point(run_dir) is None

    cost = train_run(_plan(run_dir))
    (child,) = children
    assert child["cmd"] == COMMAND and not child["append"] and child["files"] == []
    assert cost["train_time_s"] == 100.0 and "resumed_after_epochs" not in cost
