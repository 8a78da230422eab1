"""The end of a run on rank 0, as YOLOv5: optimizers stripped, best.pt validated with plots, results.png drawn."""
from __future__ import annotations

import torch

from utils.checkpoints import strip_optimizer
from utils.evaluation.validation import evaluate
from utils.logger import LOGGER
from utils.model_loading import load_inference_model
from utils.training.loss import ComputeLoss
from utils.training.plots import plot_results
from utils.training.run_files import RunFolder


def validate_best(run: RunFolder, val_loader, names: dict, view_names: list | None, device: torch.device,
                  single_cls: bool, compute_loss: ComputeLoss, plots: bool) -> tuple:
    """Strip optimizers, validate best.pt with plots, draw results.png; returns best.pt's metrics.

    Always in FP32, also after an AMP run: these are the figures a run reports, and val.py (FP32 unless
    --half) then prints the same ones for the same best.pt.
    """
    final = ()
    for ckpt_path in (run.last, run.best):
        if ckpt_path.exists():
            strip_optimizer(ckpt_path)
    if run.best.exists():
        LOGGER.info(f"\nValidating {run.best}...")
        best_model, _ = load_inference_model(run.best, device)
        val = evaluate(best_model, val_loader, names=names, device=device, single_cls=single_cls,
                       compute_loss=compute_loss, save_dir=run.save_dir, plots=plots, verbose=True, training=False,
                       view_names=view_names)
        final = val.as_tuple()
    if plots and run.results_csv.exists():
        plot_results(run.results_csv)
    LOGGER.info(f"Results saved to {run.save_dir}")
    return final
