"""An early estimate of the whole run's time, so nobody waits a day for a run a CPU cannot finish.

After the first few iterations it logs one line with the pace and the estimated time of the epochs to go.
Above an hour on a CPU it names the recipe that reached the same detection quality far sooner. It only
informs: nothing about the run is changed.
"""
from __future__ import annotations

import time

from utils.logger import LOGGER

CPU_RECIPE = ("python train_gradnorm.py --data data/med.yaml --cfg models/yolov5n.yaml --weights '' --img 320 "
              "--hyp data/hyps/hyp.medical-fast.yaml --rect-shuffle --epochs 100")
CPU_RECIPE_RESULT = "valid mAP50 0.78 after 25 minutes on 2 CPU cores (docs/results.md, time to accuracy)"
RECIPE_MAX_IMGSZ, RECIPE_MAX_PARAMETERS = 320, 2_500_000  # a run at least this small is the recipe already


def format_duration(seconds: float) -> str:
    """'42 s', '12.5 min' or '7.3 h'."""
    if seconds < 90:
        return f"{seconds:.0f} s"
    return f"{seconds / 60:.1f} min" if seconds < 5400 else f"{seconds / 3600:.1f} h"


def run_time_message(seconds_per_iteration: float, iterations_to_go: int, epochs_to_go: int, on_cpu: bool,
                     already_small: bool) -> str:
    """The estimate line, with the CPU recipe appended when the run would take over an hour on a CPU."""
    total = seconds_per_iteration * iterations_to_go
    message = (f"Estimated training time: {format_duration(total)} for {epochs_to_go} epoch(s) at "
               f"{seconds_per_iteration:.2f} s per iteration, plus validation")
    if total > 3600 and on_cpu and not already_small:
        message += (f". On a CPU, the small-model recipe reaches the same detection quality far sooner "
                    f"({CPU_RECIPE_RESULT}): {CPU_RECIPE}")
    return message


class RunTimeEstimate:
    """Times iterations skip..skip+measure of the run (the first ones start workers and fill caches)."""

    def __init__(self, batches_per_epoch: int, epochs_to_go: int, on_cpu: bool, already_small: bool,
                 skip: int = 1, measure: int = 4) -> None:
        self.batches, self.epochs_to_go = batches_per_epoch, epochs_to_go
        self.on_cpu, self.already_small = on_cpu, already_small
        self.start_at, self.end_at = skip, skip + measure
        self.seen, self.t0 = 0, 0.0
        self.done = batches_per_epoch * epochs_to_go <= self.end_at  # a run this short needs no estimate

    def observe(self) -> str | None:
        """Call once after every iteration of the run; logs and returns the estimate once, else None."""
        self.seen += 1
        if self.done or self.seen < self.start_at:
            return None
        if self.seen == self.start_at:
            self.t0 = time.perf_counter()
            return None
        if self.seen < self.end_at:
            return None
        self.done = True
        per_iteration = (time.perf_counter() - self.t0) / (self.end_at - self.start_at)
        message = run_time_message(per_iteration, self.batches * self.epochs_to_go - self.seen, self.epochs_to_go,
                                   self.on_cpu, self.already_small)
        LOGGER.info(message)
        return message
