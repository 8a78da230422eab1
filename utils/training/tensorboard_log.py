"""TensorBoard event files in the run folder, as YOLOv5 writes them: `tensorboard --logdir runs/train` works.

Per epoch: every results.csv column under its own name (losses, metrics, learning rates, task weights),
and the learning rates of a second optimizer (train_dual.py's classifier) under x/<optimizer>/lr<k>.
"""
from __future__ import annotations

from pathlib import Path

from utils.logger import LOGGER


class TensorBoardLog:
    """A SummaryWriter on rank 0's run folder; without the tensorboard package it warns once and does nothing."""

    def __init__(self, save_dir: Path) -> None:
        try:
            from torch.utils.tensorboard import SummaryWriter  # needs the tensorboard package (requirements.txt)
        except ImportError as error:
            LOGGER.warning(f"WARNING ⚠️ TensorBoard logging off: {error} (pip install tensorboard)")
            self.writer = None
            return
        self.writer = SummaryWriter(str(save_dir))
        LOGGER.info(f"TensorBoard: Start with 'tensorboard --logdir {Path(save_dir).parent}', "
                    f"view at http://localhost:6006/")

    def log_epoch(self, epoch: int, scalars: dict[str, float]) -> None:
        """One point per scalar at step `epoch`; flushed so a running TensorBoard sees it at once."""
        if self.writer is None:
            return
        for name, value in scalars.items():
            self.writer.add_scalar(name, float(value), epoch)
        self.writer.flush()

    def close(self) -> None:
        if self.writer is not None:
            self.writer.close()
