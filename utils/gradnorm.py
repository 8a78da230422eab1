"""Task-weight balancers: how the detection and view losses become one loss to backpropagate.

Every balancer has the same small interface so the training loop never knows which one
it drives: `weights` (current task weights), `combine(losses, shared)` (the loss to
backpropagate) and `state_dict()` / `load_state_dict()` (so a resumed run continues with
the same weights). `FixedWeights` is the baseline the remedies are measured against.
"""
from __future__ import annotations

import torch


class Balancer:
    """Base class: a weight per task name, combined as a weighted sum."""

    def __init__(self, task_names: tuple[str, ...], initial: dict[str, float] | None = None) -> None:
        self.task_names = tuple(task_names)
        initial = initial or {}
        self.weights = torch.tensor([float(initial.get(name, 1.0)) for name in self.task_names])

    def combine(self, losses: dict[str, torch.Tensor], shared: list[torch.nn.Parameter] | None = None) -> torch.Tensor:
        """The loss to backpropagate: sum of w_i * L_i over the tasks present in `losses`."""
        missing = set(self.task_names) - set(losses)
        if missing:
            raise KeyError(f"{type(self).__name__} expects losses for {self.task_names}, missing {sorted(missing)}")
        weights = self.weights.to(next(iter(losses.values())).device)
        return sum(weights[i] * losses[name] for i, name in enumerate(self.task_names))

    def weight_dict(self) -> dict[str, float]:
        """Current weights by task name, as plain floats (for logs, results.csv and history)."""
        return {name: float(w) for name, w in zip(self.task_names, self.weights.tolist())}

    def state_dict(self) -> dict:
        return {"task_names": list(self.task_names), "weights": self.weights.clone()}

    def load_state_dict(self, state: dict) -> None:
        if tuple(state["task_names"]) != self.task_names:
            raise ValueError(f"balancer state is for tasks {state['task_names']}, this run has {self.task_names}")
        self.weights = state["weights"].clone().float()


class FixedWeights(Balancer):
    """The baseline: constant task weights from the hyps (`det_task`, `view_task`)."""


def fixed_weights_from_hyp(hyp: dict, task_names: tuple[str, ...]) -> FixedWeights:
    """FixedWeights with w_det = hyp['det_task'] and w_view = hyp['view_task'] (both default 1.0)."""
    return FixedWeights(task_names, {name: float(hyp.get(f"{name}_task", 1.0)) for name in task_names})
