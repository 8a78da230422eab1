"""Task-weight balancers: how the detection and view losses become one update of the network.

Every balancer has the same small interface so the training loop never knows which one
it drives: `weights` (current task weights, logged), `combine(losses)` (the loss whose
value is logged and checked for finiteness), `backward(loss, losses)` (puts the gradients
into .grad), `step()` (once per optimizer step), `skip_step()` (instead of step() when the
AMP scaler skipped the optimizer step: nothing is learned from it) and `state_dict()` /
`load_state_dict()` (so a resumed run continues with the same state).

Under mixed precision (utils/training/amp.py) the step passes its `Amp`: every gradient a
balancer takes comes from `amp.scale(loss)` (float16 gradients would otherwise flush to zero)
and is read in true units through `amp.unscale`; with AMP off both are the identity.

`FixedWeights` is the baseline the remedies are measured against; GradNorm lives in
utils/training/gradnorm.py.

Under DDP (torchrun) every rank holds its own balancer. Whatever a balancer learns from its
rank's losses or gradients is all-reduced first (utils.training.distributed; a no-op in one process),
so every rank makes the same update and the task weights stay identical across ranks.

    --balancer fixed        constant weights det_task / view_task from the hyps
    --balancer uncertainty  Kendall, Gal & Cipolla (CVPR 2018): learned log-variances
    --balancer pcgrad       Yu et al. (NeurIPS 2020): project away conflicting gradient parts
"""
from __future__ import annotations

import copy
import random

import torch

from utils.cli import OptionError
from utils.training.amp import FP32, Amp
from utils.training.distributed import all_reduce_mean


class Balancer:
    """Base class: a weight per task name, combined as a weighted sum."""

    adaptive = False  # True when weights change during training (logged per step, plotted)

    def __init__(self, task_names: tuple[str, ...], initial: dict[str, float] | None = None) -> None:
        self.task_names = tuple(task_names)
        initial = initial or {}
        self.weights = torch.tensor([float(initial.get(name, 1.0)) for name in self.task_names])

    def combine(self, losses: dict[str, torch.Tensor], shared: list[torch.nn.Parameter] | None = None, *,
                amp: Amp = FP32) -> torch.Tensor:
        """The loss to backpropagate (unscaled): sum of w_i * L_i over the tasks present in `losses`."""
        self._check_losses(losses)
        weights = self.weights.to(next(iter(losses.values())).device)
        return sum(weights[i] * losses[name] for i, name in enumerate(self.task_names))

    def _check_losses(self, losses: dict[str, torch.Tensor]) -> None:
        missing = set(self.task_names) - set(losses)
        if missing:
            raise KeyError(f"{type(self).__name__} expects losses for {self.task_names}, missing {sorted(missing)}")

    def backward(self, loss: torch.Tensor, losses: dict[str, torch.Tensor], *, amp: Amp = FP32) -> None:
        """Put this step's gradients into .grad (accumulating; AMP: in the scaler's units); `loss` is combine()'s.

        The weighted-sum balancers backpropagate the combined loss; gradient-surgery balancers
        (PCGrad) override this to edit the per-task gradients before they are summed.
        """
        amp.scale(loss).backward()

    def step(self, amp: Amp = FP32) -> None:
        """Called once per optimizer step that was taken; adaptive balancers update their weights here."""

    def skip_step(self) -> None:
        """Called instead of step() when the AMP scaler skipped the optimizer step (a gradient overflowed):
        whatever was gathered since the last step is dropped, so the weights never learn from it."""

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


class UncertaintyWeighting(Balancer):
    """Kendall et al. 2018: loss = Σ ½·exp(−s_i)·L_i + ½·s_i with s_i = log σ_i² learned.

    For a fixed L_i the minimum over s_i is at s_i = log L_i, so each task is weighted by the inverse
    of its own (running) loss: the balance is scale-free, which matters here because the two losses
    differ by 5x at the start. s_i has its own optimizer, stepped once per optimizer step of the
    network with the gradients the combined loss's backward left on it. `weights` reports the
    effective weights ½·exp(−s_i).
    """

    adaptive = True

    def __init__(self, task_names: tuple[str, ...], lr: float = 0.01, initial_log_var: float = 0.0) -> None:
        super().__init__(task_names)
        if lr <= 0:
            raise OptionError(f"--balancer-lr {lr}: must be > 0")
        self.log_vars = torch.nn.Parameter(torch.full((len(self.task_names),), float(initial_log_var)))
        self.optimizer = torch.optim.Adam([self.log_vars], lr=lr)
        self._refresh_weights()
        self.last_stats: dict | None = None

    def _refresh_weights(self) -> None:
        self.weights = (0.5 * torch.exp(-self.log_vars.detach())).clone()

    def combine(self, losses: dict[str, torch.Tensor], shared: list[torch.nn.Parameter] | None = None, *,
                amp: Amp = FP32) -> torch.Tensor:
        self._check_losses(losses)
        s = self.log_vars.to(next(iter(losses.values())).device)
        return sum(0.5 * torch.exp(-s[i]) * losses[name] + 0.5 * s[i] for i, name in enumerate(self.task_names))

    def step(self, amp: Amp = FP32) -> None:
        if self.log_vars.grad is None:
            return
        # DDP: each rank saw its own losses. AMP: the combined loss was scaled, so is this gradient.
        self.log_vars.grad = amp.unscale(all_reduce_mean(self.log_vars.grad))
        if torch.isfinite(self.log_vars.grad).all():
            self.optimizer.step()
        self.optimizer.zero_grad()
        self._refresh_weights()
        self.last_stats = {"weights": self.weight_dict(),
                           "log_var": dict(zip(self.task_names, self.log_vars.detach().tolist()))}

    def skip_step(self) -> None:
        self.optimizer.zero_grad()  # the overflowed step's (scaled, non-finite) log-variance gradients

    def state_dict(self) -> dict:
        return {**super().state_dict(), "log_vars": self.log_vars.detach().clone(),
                "optimizer": copy.deepcopy(self.optimizer.state_dict())}

    def load_state_dict(self, state: dict) -> None:
        super().load_state_dict(state)
        with torch.no_grad():
            self.log_vars.copy_(state["log_vars"])
        self.optimizer.load_state_dict(state["optimizer"])
        self._refresh_weights()


def pcgrad_combine(grads: list[torch.Tensor], generator: random.Random | None = None) -> tuple[torch.Tensor, int]:
    """PCGrad's update from flat per-task gradients; returns (Σ projected g_i, number of projections made).

    For each task i, in turn over the other tasks j in random order: if g_i·g_j < 0, remove from g_i its
    component along g_j: g_i ← g_i − (g_i·g_j / ‖g_j‖²)·g_j (g_j the original, unprojected gradient).
    With two tasks in conflict both lose their conflicting parts and the sum no longer points against
    either task's own gradient.
    """
    rng = generator or random
    projected, projections = [], 0
    for i, g in enumerate(grads):
        g = g.clone()
        others = [j for j in range(len(grads)) if j != i]
        rng.shuffle(others)
        for j in others:
            dot = torch.dot(g, grads[j])
            norm_sq = grads[j].pow(2).sum()
            if dot < 0 and norm_sq > 0:
                g -= dot / norm_sq * grads[j]
                projections += 1
        projected.append(g)
    return torch.stack(projected).sum(0), projections


class PCGrad(Balancer):
    """Yu et al. 2020 gradient surgery on the shared parameters, with fixed task weights from the hyps.

    backward() computes each weighted task loss's gradient separately (one backward pass per task, so
    a step costs about one extra backward), projects the shared parameters' gradients with
    pcgrad_combine, and sums the task-specific parameters' gradients as usual. Under AMP the per-task
    gradients are those of the scaled losses and are projected as they are: the projection is
    homogeneous (scaling every g_i by S scales the result by S and leaves the sign of every g_i·g_j,
    hence every decision, unchanged), and the .grad it writes is in the scaler's units, which the
    optimizer step unscales like any other gradient; an overflow reaches .grad as inf/NaN, so the
    scaler skips that step.
    """

    adaptive = True  # the weights are fixed, but the per-step conflict statistics are logged

    def __init__(self, task_names: tuple[str, ...], shared: list[torch.nn.Parameter],
                 parameters: list[torch.nn.Parameter], initial: dict[str, float] | None = None, seed: int = 0) -> None:
        super().__init__(task_names, initial)
        shared_ids = {id(p) for p in shared}
        self.shared = [p for p in parameters if id(p) in shared_ids and p.requires_grad]
        self.own = [p for p in parameters if id(p) not in shared_ids and p.requires_grad]
        if not self.shared:
            raise ValueError("PCGrad needs parameters shared by the tasks; this model shares none (dual backbones?)")
        self.rng = random.Random(seed)
        self.last_stats: dict | None = None
        self._conflicts = self._steps = 0

    def backward(self, loss: torch.Tensor, losses: dict[str, torch.Tensor], *, amp: Amp = FP32) -> None:
        weights = self.weights.to(loss.device)
        params = self.shared + self.own
        per_task = []
        for i, name in enumerate(self.task_names):
            grads = torch.autograd.grad(amp.scale(weights[i] * losses[name]), params,
                                        retain_graph=i + 1 < len(self.task_names), allow_unused=True)
            per_task.append([torch.zeros_like(p) if g is None else g for p, g in zip(params, grads)])
        n_shared = len(self.shared)
        # autograd.grad bypasses DDP's gradient reducer, so the per-task gradients are averaged over the
        # ranks here, before the projection: every rank then projects the same global gradients.
        flat = [all_reduce_mean(torch.cat([g.reshape(-1) for g in grads[:n_shared]])) for grads in per_task]
        combined, projections = pcgrad_combine(flat, self.rng)
        self._conflicts += int(projections > 0)
        self._steps += 1
        offset = 0
        for p in self.shared:
            self._accumulate(p, combined[offset:offset + p.numel()].view_as(p))
            offset += p.numel()
        if self.own:
            own = torch.cat([sum(grads[k] for grads in per_task).reshape(-1) for k in range(n_shared, len(params))])
            own = all_reduce_mean(own)
            offset = 0
            for p in self.own:
                self._accumulate(p, own[offset:offset + p.numel()].view_as(p))
                offset += p.numel()

    @staticmethod
    def _accumulate(p: torch.nn.Parameter, grad: torch.Tensor) -> None:
        p.grad = grad.detach().clone() if p.grad is None else p.grad + grad.detach()

    def step(self, amp: Amp = FP32) -> None:
        if self._steps:
            self.last_stats = {"weights": self.weight_dict(), "conflict_fraction": self._conflicts / self._steps}
            self._conflicts = self._steps = 0

    def skip_step(self) -> None:
        self._conflicts = self._steps = 0  # the skipped step's projections are not statistics of a step taken
