"""Every numeric flag of train*.py, val.py, detect.py and export.py is checked before any work starts: a bad value
stops with one `ERROR:` line naming the flag and the value, and no numeric flag is left out of the table."""
from __future__ import annotations

import argparse

import pytest

import detect
import export
import train
import train_dual
import train_gradnorm
import val
from utils.cli import NUMERIC_FLAGS

SCRIPTS = {"train.py": train, "train_gradnorm.py": train_gradnorm, "train_dual.py": train_dual, "val.py": val,
           "detect.py": detect, "export.py": export}
REQUIRED = {"val.py": ["--weights", "w.pt"], "detect.py": ["--weights", "w.pt", "--source", "images"],
            "export.py": ["--weights", "w.pt"]}

# (flag, a refused value, a value that must still be accepted) per script; the examples first
BAD_VALUES = {
    "train.py": [("--batch-size", "0", "1"), ("--epochs", "-1", "1"), ("--img", "-5", "32"), ("--epochs", "0", "3"),
                 ("--workers", "-1", "0"), ("--patience", "-2", "0"), ("--seed", "-1", "0"),
                 ("--label-smoothing", "1", "0.1"), ("--label-smoothing", "nan", "0"), ("--val-period", "0", "2"),
                 ("--interference-every", "-1", "0"), ("--balancer-lr", "0", "0.01"), ("--freeze", "-1", "10"),
                 ("--view-levels", "-1", "2")],
    "train_gradnorm.py": [("--gradnorm-alpha", "-0.5", "0"), ("--gradnorm-lr", "0", "0.025"),
                          ("--gradnorm-momentum", "1", "0.9"), ("--gradnorm-update-every", "0", "1"),
                          ("--gradnorm-init-steps", "0", "5"), ("--gradnorm-min-weight", "-1", "0"),
                          ("--gradnorm-max-weight", "0", "10"), ("--gradnorm-lr", "inf", "0.1"),
                          ("--batch-size", "-1", "16")],
    "train_dual.py": [("--cls-lr0", "0", "0.01"), ("--cls-imgsz", "16", "64"), ("--imgsz", "0", "64")],
    "val.py": [("--batch-size", "0", "1"), ("--imgsz", "-5", "320"), ("--conf-thres", "1.5", "0.001"),
               ("--iou-thres", "-0.1", "0.6"), ("--max-det", "0", "1"), ("--workers", "-3", "0")],
    "detect.py": [("--imgsz", "0", "320"), ("--conf-thres", "-1", "0.25"), ("--iou-thres", "2", "0.45"),
                  ("--max-det", "0", "10"), ("--line-thickness", "0", "1"), ("--vid-stride", "0", "2"),
                  ("--classes", "-1", "0")],
    "export.py": [("--opset", "9", "12"), ("--opset", "21", "20"), ("--batch-size", "0", "1"), ("--imgsz", "16", "320")],
}
CASES = [(script, flag, bad, good) for script, rows in BAD_VALUES.items() for flag, bad, good in rows]


@pytest.mark.parametrize("script,flag,bad,good", CASES, ids=[f"{s}{f}={b}" for s, f, b, _ in CASES])
def test_bad_numeric_value_stops_with_one_error_line(script, flag, bad, good):
    module = SCRIPTS[script]
    with pytest.raises(SystemExit) as stopped:
        module.parse_opt([*REQUIRED.get(script, []), flag, bad])
    message = str(stopped.value.code)
    assert message.startswith("ERROR: --") and f" {bad}" in message.replace(".0:", ":"), message
    assert "expected" in message and "\n" not in message
    module.parse_opt([*REQUIRED.get(script, []), flag, good])  # the boundary value next to it is accepted


@pytest.mark.parametrize("script", SCRIPTS)
def test_every_numeric_flag_has_a_rule(script):
    parser: argparse.ArgumentParser = SCRIPTS[script].build_parser()
    numeric = {a.dest for a in parser._actions if a.type in (int, float)}
    assert numeric, script
    assert numeric <= set(NUMERIC_FLAGS), f"{script}: numeric flags without a rule: {numeric - set(NUMERIC_FLAGS)}"


@pytest.mark.parametrize("script", SCRIPTS)
def test_defaults_pass_the_checks(script):
    SCRIPTS[script].parse_opt(REQUIRED.get(script, []))
