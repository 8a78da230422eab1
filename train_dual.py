"""Detection and view classification on two independent networks: no shared parameter at all.

    python train_dual.py --data data/med.yaml --epochs 50

Every flag of train.py works here too (one shared parser, one training loop). Per batch:
one data pass, two forwards, one backward over the sum of the two losses. Because the
networks share nothing, that single backward gives each network exactly the gradient of
its own loss (tests/test_dual_model.py proves it), so two backward passes would only cost
time. Each network has its own optimizer and learning rate, on the same schedule.
"""
from __future__ import annotations

import argparse

import torch

from models.yolo import load_model_config
from models.yolo_cls import DEFAULT_CLS_CFG, DualModel
from utils.checkpoints import inference_state, load_checkpoint
from utils.cli import parse_checked, resolve_path, run_or_exit, train_parser
from utils.logger import LOGGER
from utils.paths import ROOT
from utils.torch_utils import smart_optimizer
from utils.training.engine import train
from utils.training.model_setup import build_training_model, hyp_anchor_setting, note_new_classes
from utils.weights.transfer import transfer_weights


def build_parser() -> argparse.ArgumentParser:
    """The command line (numeric flags are checked by parse_opt)."""
    p = train_parser("Detector and view classifier with no shared parameter")
    g = p.add_argument_group("view classifier (the second network)")
    g.add_argument("--cls-cfg", type=str, default=str(ROOT / "models" / DEFAULT_CLS_CFG),
                   help="classifier model.yaml (default: the yolov5n backbone at half width with a pooled "
                        "linear head; models/yolov5n-cls.yaml is the full-width one)")
    g.add_argument("--cls-weights", type=str, default="", help="initial classifier weights (a train_dual.py checkpoint)")
    g.add_argument("--cls-optimizer", choices=["SGD", "Adam", "AdamW"], default=None,
                   help="classifier optimizer (default: the same as --optimizer)")
    g.add_argument("--cls-lr0", type=float, default=None, help="classifier initial learning rate (default: the hyp's lr0)")
    g.add_argument("--cls-imgsz", type=int, default=None, help="classifier input size (default: --imgsz)")
    p.set_defaults(fitness="per-network")  # nothing is shared, so neither network has to settle for the other's epoch
    return p


def parse_opt(argv: list[str] | None = None) -> argparse.Namespace:
    p = build_parser()
    opt = parse_checked(p, argv)
    opt.script = "train_dual.py"
    return opt


def dual_model_factory(opt: argparse.Namespace):
    """The DualModel builder the engine calls once it knows the classes and views."""

    def make(opt_: argparse.Namespace, nc: int, names: dict, n_views: int | None, device: torch.device):
        if not n_views:
            raise SystemExit(f"train_dual.py trains a detector and a view classifier, but {opt.data} declares no "
                             f"cls_names (use train.py for detection only)")
        if opt.resume:  # the checkpoint's own YAML rebuilds both networks
            return build_training_model(opt_, nc, names, n_views, device)
        cls_imgsz = opt.cls_imgsz if opt.cls_imgsz and opt.cls_imgsz != opt.imgsz else None
        det_ckpt = load_checkpoint(resolve_path(opt.weights), trust=opt.trust_weights) if opt.weights else None
        det_cfg = resolve_path(opt.cfg) if opt.cfg else None
        if det_cfg is None and det_ckpt is not None:
            det_cfg = det_ckpt["model_yaml"].get("dual", {}).get("detector", det_ckpt["model_yaml"])
        if det_cfg is None:
            LOGGER.info("No --cfg or --weights given: the detector is yolov5s from models/yolov5s.yaml, untrained")
            det_cfg = ROOT / "models" / "yolov5s.yaml"
        hyp_anchors = hyp_anchor_setting(opt)
        if hyp_anchors is not None:  # YOLOv5's hyp 'anchors' overrides the model YAML's
            det_cfg = {**load_model_config(det_cfg)[0], "anchors": hyp_anchors}
        model = DualModel(det_cfg, resolve_path(opt.cls_cfg), nc=nc, n_views=n_views, cls_imgsz=cls_imgsz)
        if det_ckpt is not None:
            exclude = ("anchor",) if opt.cfg or hyp_anchors is not None else ()
            note_new_classes(det_ckpt, nc, opt.weights)
            transfer_weights(model.detector, inference_state(det_ckpt), opt.weights, exclude=exclude,
                             strip_prefix="detector.")
        if opt.cls_weights:
            cls_ckpt = load_checkpoint(resolve_path(opt.cls_weights), trust=opt.trust_weights)
            transfer_weights(model.classifier, inference_state(cls_ckpt), opt.cls_weights, strip_prefix="classifier.")
        else:
            LOGGER.info("The view classifier starts fresh (no --cls-weights)")
        model.names = dict(names)
        return model.to(device), None

    return make


def dual_optimizers(model: DualModel, opt: argparse.Namespace, hyp: dict) -> dict[str, torch.optim.Optimizer]:
    """One optimizer per network, each with YOLOv5's three parameter groups and its own lr."""
    cls_lr0 = opt.cls_lr0 if opt.cls_lr0 is not None else hyp["lr0"]
    optimizers = {
        "detector": smart_optimizer(model.detector, opt.optimizer, hyp["lr0"], hyp["momentum"], hyp["weight_decay"]),
        "classifier": smart_optimizer(model.classifier, opt.cls_optimizer or opt.optimizer, cls_lr0, hyp["momentum"],
                                      hyp["weight_decay"]),
    }
    for group in optimizers["classifier"].param_groups:  # warm the bias lr down to the classifier's own rate
        group["warmup_bias_lr"] = hyp["warmup_bias_lr"] * cls_lr0 / hyp["lr0"]
    return optimizers


def main(opt: argparse.Namespace) -> dict:
    return run_or_exit(lambda: train(opt, make_model=dual_model_factory(opt), make_optims=dual_optimizers))


if __name__ == "__main__":
    main(parse_opt())
