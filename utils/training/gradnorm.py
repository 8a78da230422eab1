"""GradNorm (Chen et al. 2018): task weights learned so that the tasks' gradient norms on a shared layer stay balanced.

The balancer interface and the other balancers live in utils/training/balancers.py.
"""
from __future__ import annotations

import copy

import torch

from utils.cli import OptionError
from utils.training.amp import FP32, Amp
from utils.training.balancers import Balancer
from utils.training.distributed import all_reduce_sum


def gradnorm_weight_grad(
    weights: torch.Tensor, grad_norms: torch.Tensor, loss_ratios: torch.Tensor, alpha: float
) -> tuple[torch.Tensor, torch.Tensor, torch.Tensor]:
    """GradNorm's gradient of L_grad with respect to the task weights, without a double backward.

    weights w_i, grad_norms g_i = ‖∇_W L_i‖ (unweighted), loss_ratios L̃_i = L_i(t) / L_i(0).
    Since w_i is a scalar, G_i = ‖∇_W w_i L_i‖ = w_i·g_i. The target Ḡ·r_i^α (Ḡ = mean G,
    r_i = L̃_i / mean L̃) is held constant, so L_grad = Σ|G_i − target_i| has
    ∂L_grad/∂w_i = sign(G_i − target_i)·g_i. Returns (grad, L_grad, target).
    """
    G = weights * grad_norms
    inverse_rate = loss_ratios / loss_ratios.mean()
    target = G.mean() * inverse_rate.pow(alpha)
    grad = torch.sign(G - target) * grad_norms
    return grad, (G - target).abs().sum(), target


class GradNorm(Balancer):
    """GradNorm (Chen et al., ICML 2018): learn task weights that equalise gradient norms on W.

    W is one shared weight tensor, by default the last layer both heads depend on (see
    models.yolo_cls.last_shared_layer). Each `combine` measures per-task gradient norms on W
    (one autograd.grad per task, first order only: the network never receives a gradient from
    L_grad) and accumulates them; `step()`, called once per optimizer step, turns the
    accumulated norms and losses into one update of the weights with their own optimizer,
    clamps them positive and renormalises them to sum to T.

    Under AMP the norms are taken on the gradients of the scaled losses (so the float16 backward
    does not flush them to zero) and divided by the scale; a micro-batch whose norms overflow is
    not accumulated, and an optimizer step the scaler skips drops everything gathered for it
    (`skip_step`), so the weights never learn from an overflow.
    """

    adaptive = True

    def __init__(
        self,
        task_names: tuple[str, ...],
        shared_weight: torch.nn.Parameter,
        alpha: float = 1.5,
        lr: float = 0.025,
        update_every: int = 1,
        min_weight: float = 1e-3,
        max_weight: float | None = None,
        optimizer: str = "adam",
        momentum: float = 0.9,
        initial_loss_steps: int = 1,
    ) -> None:
        super().__init__(task_names)
        if alpha < 0:
            raise OptionError(f"--gradnorm-alpha {alpha}: must be >= 0")
        if min_weight <= 0:
            raise OptionError(f"--gradnorm-min-weight {min_weight}: must be > 0 so weights stay positive")
        if update_every < 1 or initial_loss_steps < 1:
            raise ValueError("--gradnorm-update-every and --gradnorm-init-steps must be >= 1")
        self.shared_weight = shared_weight
        self.alpha, self.update_every = alpha, update_every
        self.min_weight, self.max_weight = min_weight, max_weight
        self.initial_loss_steps = initial_loss_steps
        self.param = torch.nn.Parameter(self.weights.clone())
        if optimizer == "adam":
            self.optimizer = torch.optim.Adam([self.param], lr=lr, betas=(momentum, 0.999))
        elif optimizer == "sgd":
            self.optimizer = torch.optim.SGD([self.param], lr=lr, momentum=momentum)
        else:
            raise OptionError(f"--gradnorm-optimizer {optimizer}: expected adam or sgd")
        self.initial_losses: torch.Tensor | None = None  # L_i(0)
        self._init_sum = torch.zeros(len(task_names))
        self._init_count = 0
        self._norm_sum = torch.zeros(len(task_names))
        self._loss_sum = torch.zeros(len(task_names))
        self._micro_steps = 0
        self._optimizer_steps = 0
        self.last_stats: dict | None = None

    def combine(self, losses: dict[str, torch.Tensor], shared: list[torch.nn.Parameter] | None = None, *,
                amp: Amp = FP32) -> torch.Tensor:
        total = super().combine(losses)
        values = torch.stack([losses[name].detach().float().cpu() for name in self.task_names])
        if not torch.isfinite(values).all():
            return total  # a non-finite step never feeds the weight update
        norms = []
        for name in self.task_names:
            (grad,) = torch.autograd.grad(amp.scale(losses[name]), self.shared_weight, retain_graph=True,
                                          allow_unused=True)
            # host-side bookkeeping (CPU on purpose): the sums are small, checkpointed and all-reduced as one
            norms.append(torch.zeros(()) if grad is None else amp.unscale(grad.detach().float()).norm().cpu())
        norms = torch.stack(norms)
        if not torch.isfinite(norms).all():
            return total  # a float16 overflow (AMP) measured nothing: the scaler will skip this step
        self._norm_sum += norms
        self._loss_sum += values
        self._micro_steps += 1
        return total

    def step(self, amp: Amp = FP32) -> None:
        """Once per optimizer step: update w from the norms and losses accumulated since the last one."""
        # DDP: sums and counts are added over the ranks first, so every rank computes the same update
        # (and no rank skips the collective because it alone saw no finite step).
        totals = all_reduce_sum(torch.cat((self._norm_sum, self._loss_sum, torch.tensor([float(self._micro_steps)]))))
        self._norm_sum.zero_(), self._loss_sum.zero_()
        self._micro_steps = 0
        n_tasks, count = len(self.task_names), float(totals[-1])
        if count == 0:
            return
        grad_norms, task_losses = totals[:n_tasks] / count, totals[n_tasks:2 * n_tasks] / count
        if self.initial_losses is None:
            self._init_sum += task_losses
            self._init_count += 1
            if self._init_count >= self.initial_loss_steps:
                self.initial_losses = (self._init_sum / self._init_count).clamp_min(1e-12)
            return
        self._optimizer_steps += 1
        if self._optimizer_steps % self.update_every:
            return
        ratios = task_losses / self.initial_losses
        grad, l_grad, target = gradnorm_weight_grad(self.param.detach(), grad_norms, ratios, self.alpha)
        self.optimizer.zero_grad()
        self.param.grad = grad
        self.optimizer.step()
        with torch.no_grad():
            self.param.clamp_(min=self.min_weight, max=self.max_weight)
            self.param.mul_(len(self.task_names) / self.param.sum())
        self.weights = self.param.detach().clone()
        self.last_stats = {
            "weights": self.weight_dict(),
            "loss": dict(zip(self.task_names, task_losses.tolist())),
            "grad_norm": dict(zip(self.task_names, (grad_norms * self.weights).tolist())),  # G_i = w_i·g_i
            "inverse_rate": dict(zip(self.task_names, (ratios / ratios.mean()).tolist())),  # r_i
            "target": dict(zip(self.task_names, target.tolist())),
            "l_grad": float(l_grad),
        }

    def skip_step(self) -> None:
        """The scaler skipped this optimizer step: forget its norms and losses (every rank skips alike, since the
        overflow check reads the all-reduced gradients, so no collective is left waiting)."""
        self._norm_sum.zero_(), self._loss_sum.zero_()
        self._micro_steps = 0

    def state_dict(self) -> dict:
        return {
            **super().state_dict(),
            "param": self.param.detach().clone(),
            "optimizer": copy.deepcopy(self.optimizer.state_dict()),  # a snapshot, not the live moment tensors
            "initial_losses": self.initial_losses,
            "init_sum": self._init_sum.clone(),
            "init_count": self._init_count,
            "optimizer_steps": self._optimizer_steps,
        }

    def load_state_dict(self, state: dict) -> None:
        super().load_state_dict(state)
        with torch.no_grad():
            self.param.copy_(state["param"])
        self.optimizer.load_state_dict(state["optimizer"])
        self.initial_losses = state["initial_losses"]
        self._init_sum = state["init_sum"].clone()
        self._init_count = int(state["init_count"])
        self._optimizer_steps = int(state["optimizer_steps"])
