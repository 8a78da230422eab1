"""Joint detection + view classification with task weights balanced by GradNorm (Chen et al. 2018).

    python train_gradnorm.py --data data/med.yaml --epochs 50

Every flag of train.py works here too (one shared parser, one training loop); the
--gradnorm-* flags below are added, and all of them are recorded in opt.yaml.
"""
from __future__ import annotations

import argparse

import torch

from models.yolo_cls import JointModel, last_shared_weight
from utils.cli import parse_checked, run_or_exit, train_parser
from utils.logger import LOGGER
from utils.torch_utils import de_parallel
from utils.training.engine import train
from utils.training.gradnorm import GradNorm


def build_parser() -> argparse.ArgumentParser:
    """The command line (numeric flags are checked by parse_opt)."""
    p = train_parser("Joint detection + view training balanced by GradNorm")
    g = p.add_argument_group("GradNorm")
    g.add_argument("--gradnorm-alpha", type=float, default=1.5, help="restoring-force strength alpha (paper: 1.5 on NYUv2)")
    g.add_argument("--gradnorm-lr", type=float, default=0.025, help="learning rate of the task weights (paper: 0.025)")
    g.add_argument("--gradnorm-optimizer", choices=["adam", "sgd"], default="adam", help="optimizer of the task weights")
    g.add_argument("--gradnorm-momentum", type=float, default=0.9, help="Adam beta1 or SGD momentum of the task weights")
    g.add_argument("--gradnorm-update-every", type=int, default=1, help="update the weights every N optimizer steps")
    g.add_argument("--gradnorm-init-steps", type=int, default=1,
                   help="L_i(0) = mean task loss over the first N optimizer steps (1 = the first step, as the paper)")
    g.add_argument("--gradnorm-min-weight", type=float, default=1e-3, help="lower clamp of each weight (keeps them positive)")
    g.add_argument("--gradnorm-max-weight", type=float, default=None, help="optional upper clamp of each weight")
    g.add_argument("--gradnorm-layer", type=str, default="",
                   help="parameter name of W (default: the last layer both heads depend on, e.g. model.23.cv3.conv.weight)")
    return p


def parse_opt(argv: list[str] | None = None) -> argparse.Namespace:
    p = build_parser()
    opt = parse_checked(p, argv)
    if opt.balancer != "fixed":
        p.error(f"--balancer {opt.balancer}: train_gradnorm.py always balances with GradNorm (use train.py --balancer)")
    opt.script, opt.balancer = "train_gradnorm.py", "gradnorm"
    return opt


def gradnorm_factory(opt: argparse.Namespace):
    """Build the GradNorm balancer once the engine has the model and knows the tasks."""

    def make(hyp: dict, task_names: tuple[str, ...], model: torch.nn.Module) -> GradNorm:
        if "view" not in task_names:
            raise SystemExit(f"train_gradnorm.py balances detection against view classification, but {opt.data} "
                             f"declares no cls_names (use train.py for detection only)")
        core = de_parallel(model)
        if opt.gradnorm_layer:
            params = dict(core.named_parameters())
            if opt.gradnorm_layer not in params:
                raise SystemExit(f"--gradnorm-layer {opt.gradnorm_layer}: no such parameter in the model")
            shared = params[opt.gradnorm_layer]
        else:
            assert isinstance(core, JointModel)
            shared = last_shared_weight(core)
        name = next(n for n, p in core.named_parameters() if p is shared)
        LOGGER.info(f"GradNorm: alpha={opt.gradnorm_alpha}, lr={opt.gradnorm_lr} ({opt.gradnorm_optimizer}), "
                    f"W={name} {tuple(shared.shape)}, L(0) over {opt.gradnorm_init_steps} step(s)")
        try:
            return GradNorm(task_names, shared, alpha=opt.gradnorm_alpha, lr=opt.gradnorm_lr,
                            update_every=opt.gradnorm_update_every, min_weight=opt.gradnorm_min_weight,
                            max_weight=opt.gradnorm_max_weight, optimizer=opt.gradnorm_optimizer,
                            momentum=opt.gradnorm_momentum, initial_loss_steps=opt.gradnorm_init_steps)
        except ValueError as e:  # a bad --gradnorm-* value: one sentence naming the flag
            raise SystemExit(f"ERROR: {e}") from None

    return make


def main(opt: argparse.Namespace) -> dict:
    return run_or_exit(lambda: train(opt, make_balancer=gradnorm_factory(opt)))


if __name__ == "__main__":
    main(parse_opt())
