"""The early whole-run time estimate: its arithmetic, when it names the CPU recipe, and that it logs once."""
from __future__ import annotations

import time

from utils.training.run_time import CPU_RECIPE, RunTimeEstimate, format_duration, run_time_message


def test_format_duration():
    assert format_duration(42) == "42 s"
    assert format_duration(750) == "12.5 min"
    assert format_duration(26280) == "7.3 h"


def test_long_cpu_run_names_the_recipe_and_changes_nothing():
    # the headline command on a CPU: yolov5s at 640, 66 iterations per epoch, 50 epochs, about 25 s per iteration
    message = run_time_message(25.0, 66 * 50, 50, on_cpu=True, already_small=False)
    assert message.startswith("Estimated training time: 22.9 h for 50 epoch(s) at 25.00 s per iteration")
    assert CPU_RECIPE in message and "--cfg models/yolov5n.yaml" in message and "--img 320" in message


def test_no_recipe_when_short_on_gpu_or_already_small():
    assert CPU_RECIPE not in run_time_message(0.5, 3000, 50, on_cpu=True, already_small=False)  # 25 min
    assert CPU_RECIPE not in run_time_message(25.0, 3300, 50, on_cpu=False, already_small=False)  # a GPU
    assert CPU_RECIPE not in run_time_message(25.0, 3300, 50, on_cpu=True, already_small=True)  # the recipe itself


def test_estimate_times_iterations_after_the_first_and_logs_once():
    estimate = RunTimeEstimate(batches_per_epoch=10, epochs_to_go=3, on_cpu=True, already_small=False, skip=1,
                               measure=2)
    assert estimate.observe() is None  # iteration 1: the clock starts after it
    time.sleep(0.02)
    assert estimate.observe() is None
    time.sleep(0.02)
    message = estimate.observe()  # iteration 3: two timed iterations of about 0.02 s, 27 to go
    seconds = float(message.split("at ")[1].split(" s per")[0])
    assert 0.015 <= seconds <= 0.2 and "3 epoch(s)" in message
    assert all(estimate.observe() is None for _ in range(20))


def test_a_run_too_short_to_time_is_not_estimated():
    estimate = RunTimeEstimate(batches_per_epoch=2, epochs_to_go=2, on_cpu=True, already_small=False)
    assert all(estimate.observe() is None for _ in range(4))
