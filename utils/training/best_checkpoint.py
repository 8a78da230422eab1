"""Which epoch becomes best.pt, and best.pt for a model made of independent networks.

A joint model shares parameters, so one epoch has to serve both tasks and best.pt follows one fitness
(YOLOv5's detection fitness unless --fitness joint). train_dual.py's detector and classifier share
nothing, so each can be kept at the epoch its own task peaked (--fitness per-network, its default):
as two separate trainings would each keep their own best, at no cost to the other.
"""
from __future__ import annotations

import argparse
from pathlib import Path
from typing import Mapping

import numpy as np
import torch

from utils.checkpoints import inference_state, load_checkpoint
from utils.evaluation.metrics import fitness
from utils.torch_utils import de_parallel


def improves_best(fit: float, best_fitness: float, validated: bool) -> bool:
    """Whether this epoch's checkpoint becomes best.pt: YOLOv5 rewrites it on a tie too (>=), so the later of
    equal epochs wins; an epoch without validation carries stale figures and never does."""
    return validated and fit >= best_fitness


def best_checkpoint_epoch(epoch_records: list[dict]) -> int | None:
    """The epoch best.pt was saved at, replayed from training_history.json's epoch records (the final
    checkpoint is stripped to epoch -1, as YOLOv5 does, so it cannot say). For a per-network run this
    is the detector's epoch: the records' fitness is the detection fitness."""
    best_fitness, chosen = 0.0, None
    for record in epoch_records:
        fit, validated = record.get("fitness"), record.get("validated", True)
        if fit is None:
            continue
        if improves_best(fit, best_fitness, validated):
            chosen = record["epoch"]
        if validated and fit > best_fitness:
            best_fitness = fit
    return chosen


class PerNetworkBest:
    """Keeps each independent network's weights from the epoch its own fitness was best.

    `prefixes` maps a network's name to the state-dict prefix of its tensors (DualModel: 'detector.',
    'classifier.'). The kept tensors are CPU copies of the EMA: a few MB for the models here.
    """

    def __init__(self, prefixes: Mapping[str, str]) -> None:
        self.prefixes = dict(prefixes)
        self.fitness = {name: 0.0 for name in self.prefixes}
        self.epoch: dict[str, int | None] = {name: None for name in self.prefixes}
        self.last_improved_epoch = -1  # the latest epoch any network strictly improved (--patience counts from it)
        self._weights: dict[str, dict[str, torch.Tensor]] = {}

    def update(self, epoch: int, fitness: Mapping[str, float], state: Mapping[str, torch.Tensor],
               validated: bool) -> bool:
        """Record this epoch's per-network fitness; True when best.pt must be rewritten (a network is at its best)."""
        rewrite = False
        for name, prefix in self.prefixes.items():
            if improves_best(fitness[name], self.fitness[name], validated):
                self._weights[name] = {k: v.detach().cpu().clone() for k, v in state.items() if k.startswith(prefix)}
                self.epoch[name], rewrite = epoch, True
            if validated and fitness[name] > self.fitness[name]:
                self.fitness[name], self.last_improved_epoch = float(fitness[name]), epoch
        return rewrite

    def merged(self, state: Mapping[str, torch.Tensor]) -> dict[str, torch.Tensor]:
        """`state` (CPU copies) with each network's tensors replaced by those of its best epoch."""
        out = {k: v.detach().cpu() for k, v in state.items()}
        for part in self._weights.values():
            out.update(part)
        return out

    def state_dict(self) -> dict:
        return {"fitness": dict(self.fitness), "epoch": dict(self.epoch)}

    def load_state_dict(self, saved: Mapping, best_state: Mapping[str, torch.Tensor] | None) -> None:
        """Resume: fitness and epochs from last.pt, each network's kept weights from best.pt's `best_state`."""
        self.fitness.update({k: float(v) for k, v in saved.get("fitness", {}).items() if k in self.prefixes})
        self.epoch.update({k: v for k, v in saved.get("epoch", {}).items() if k in self.prefixes})
        for name, prefix in self.prefixes.items():
            if self.epoch[name] is not None and best_state is not None:
                self._weights[name] = {k: v.detach().cpu().clone() for k, v in best_state.items()
                                       if k.startswith(prefix)}


def training_fitness(results: tuple, view: dict | None, mode: str) -> float:
    """best.pt criterion: YOLOv5's 0.1·mAP50 + 0.9·mAP50-95, or with --fitness joint the mean of that and
    the view balanced accuracy (so neither task can win best.pt alone)."""
    detection = float(fitness(np.array(results[:4]).reshape(1, -1))[0])
    if mode == "joint" and view is not None:
        return 0.5 * detection + 0.5 * view["view_balanced_accuracy"]
    return detection


def per_network_best(opt: argparse.Namespace, model: torch.nn.Module) -> PerNetworkBest | None:
    """The --fitness per-network tracker, or None for the other criteria; refused for a model with shared parts."""
    if getattr(opt, "fitness", "detection") != "per-network":
        return None
    parts = getattr(de_parallel(model), "independent_parts", None)
    if not parts:
        raise SystemExit(f"--fitness per-network: {type(de_parallel(model)).__name__} has no independent networks")
    return PerNetworkBest(parts)


def part_fitness(detection_fit: float, view: dict | None) -> dict[str, float]:
    """Per-network fitness for --fitness per-network: the detector's YOLOv5 fitness, the classifier's view
    balanced accuracy (the view half of --fitness joint)."""
    return {"detector": float(detection_fit), "classifier": float((view or {}).get("view_balanced_accuracy", 0.0))}


def per_network_checkpoint(ckpt: dict, best_parts: PerNetworkBest) -> dict:
    """best.pt of a per-network run: the EMA with each network from its best epoch, no optimizer (the
    networks come from different steps; --resume reads last.pt)."""
    weights = best_parts.merged(ckpt["ema"] if ckpt.get("ema") is not None else ckpt["model"])
    return {**ckpt, "model": weights, "ema": weights, "optimizer": None, "best_parts": best_parts.state_dict()}


def best_ema_state(path: Path) -> dict | None:
    """The inference weights of an existing best.pt (a resumed per-network run keeps its networks' bests)."""
    return inference_state(load_checkpoint(path)) if path.is_file() else None
