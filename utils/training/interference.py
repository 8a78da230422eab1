"""Gradient interference between the detection and view tasks on the shared parameters, measured.

The original project blamed "gradient interference" for the joint model's poor detection
without measuring it. With --interference-every N the training loop calls
InterferenceMonitor.measure every N iterations: one extra backward per task gives g_det and
g_view (each task's weighted loss, so the norms are the ones the optimizer actually sees) on
the shared parameters; their cosine (conflict when < 0), norm ratio ‖g_view‖/‖g_det‖ and
magnitude similarity 2‖g_a‖‖g_b‖/(‖g_a‖²+‖g_b‖²) are recorded overall and per backbone
stage (plus the neck) into training_history.json and plotted to interference.png.
Under AMP the gradients are those of the scaled losses, divided by the scale; a measurement
whose gradients overflowed (inf/NaN) is dropped rather than recorded.
"""
from __future__ import annotations

import math
import statistics

import torch

from models.yolo_cls import shared_parameters
from utils.cli import OptionError
from utils.torch_utils import de_parallel
from utils.training.amp import FP32, Amp

OVERALL = "overall"


def gradient_agreement(g_a: torch.Tensor, g_b: torch.Tensor) -> dict[str, float]:
    """Cosine, norm ratio ‖g_b‖/‖g_a‖ and magnitude similarity of two flat gradients (zeros give cosine 0)."""
    g_a, g_b = g_a.detach().double().reshape(-1), g_b.detach().double().reshape(-1)
    norm_a, norm_b = float(g_a.norm()), float(g_b.norm())
    cosine = float(torch.dot(g_a, g_b)) / (norm_a * norm_b) if norm_a > 0 and norm_b > 0 else 0.0
    ratio = norm_b / norm_a if norm_a > 0 else math.inf
    squares = norm_a ** 2 + norm_b ** 2
    return {"cosine": cosine, "norm_ratio": ratio, "magnitude_similarity": 2 * norm_a * norm_b / squares if squares else 0.0,
            "norm_a": norm_a, "norm_b": norm_b}


def layer_stages(model: torch.nn.Module) -> dict[int, str]:
    """Stage name of every layer index: 'P1'..'P5' for the backbone (a new stage at each stride-2 Conv), 'neck' after it."""
    core = de_parallel(model)
    backbone = core.yaml.get("backbone", [])
    stages, level = {}, 0
    for index, (_, _, module, args) in enumerate(backbone):
        if str(module).endswith("Conv") and len(args) > 2 and args[2] == 2:
            level += 1
        stages[index] = f"P{max(level, 1)}"
    for index in range(len(backbone), len(core.model)):
        stages[index] = "neck"
    return stages


class InterferenceMonitor:
    """Measures the two tasks' gradients on the shared parameters every `every` iterations."""

    def __init__(self, model: torch.nn.Module, task_names: tuple[str, ...], every: int) -> None:
        if len(task_names) != 2:
            raise ValueError(f"interference needs exactly two tasks, got {task_names}")
        if every < 1:
            raise OptionError(f"--interference-every {every}: must be >= 1")
        core = de_parallel(model)
        self.task_names, self.every = tuple(task_names), int(every)
        shared_ids = {id(p) for p in shared_parameters(core)}
        stage_of_layer = layer_stages(core)
        self.params, self.stages = [], []
        for index, layer in enumerate(core.model):
            for p in layer.parameters():
                if id(p) in shared_ids and p.requires_grad:
                    self.params.append(p)
                    self.stages.append(stage_of_layer[index])

    def due(self, iteration: int) -> bool:
        return iteration % self.every == 0

    def measure(self, weighted_losses: dict[str, torch.Tensor], iteration: int, epoch: int,
                amp: Amp = FP32) -> dict | None:
        """One record: agreement of the two tasks' gradients overall and per stage (graph kept for backward);
        None when a gradient is not finite (a float16 overflow under AMP: nothing was measured)."""
        grads = []
        for name in self.task_names:
            g = torch.autograd.grad(amp.scale(weighted_losses[name]), self.params, retain_graph=True,
                                    allow_unused=True)
            grads.append([torch.zeros_like(p) if x is None else amp.unscale(x) for p, x in zip(self.params, g)])
        flat = [torch.cat([x.reshape(-1) for x in g]) for g in grads]
        if not all(bool(torch.isfinite(f).all()) for f in flat):
            return None
        record = {"step": iteration, "epoch": epoch, "tasks": list(self.task_names)}
        record[OVERALL] = gradient_agreement(*flat)
        record["stages"] = {}
        for stage in dict.fromkeys(self.stages):
            idx = [i for i, s in enumerate(self.stages) if s == stage]
            a = torch.cat([grads[0][i].reshape(-1) for i in idx])
            b = torch.cat([grads[1][i].reshape(-1) for i in idx])
            record["stages"][stage] = gradient_agreement(a, b)
        return record


def summarize_interference(records: list[dict]) -> dict[str, dict[str, float]]:
    """Per stage (and overall): measurements, mean cosine, fraction in conflict (cosine < 0), median norm ratio."""
    by_stage: dict[str, list[dict]] = {}
    for r in records:
        by_stage.setdefault(OVERALL, []).append(r[OVERALL])
        for stage, stats in r.get("stages", {}).items():
            by_stage.setdefault(stage, []).append(stats)
    summary = {}
    for stage, stats in by_stage.items():
        cosines = [s["cosine"] for s in stats]
        ratios = [s["norm_ratio"] for s in stats if math.isfinite(s["norm_ratio"])]
        summary[stage] = {"n": len(stats), "mean_cosine": statistics.fmean(cosines),
                          "conflict_fraction": sum(c < 0 for c in cosines) / len(cosines),
                          "median_norm_ratio": statistics.median(ratios) if ratios else math.inf}
    return summary
