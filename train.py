"""Train a YOLOv5-compatible detector (YOLOv5's flags and run folders).

    python train.py --data data/coco128.yaml --cfg models/yolov5n.yaml --weights '' --img 320 --epochs 3
"""
from __future__ import annotations

import argparse
import sys

from utils.checkpoints import CheckpointError
from utils.cli import train_parser
from utils.dataset_yaml import DatasetError
from utils.engine import train


def parse_opt(argv: list[str] | None = None) -> argparse.Namespace:
    return train_parser().parse_args(argv)


def main(opt: argparse.Namespace) -> dict:
    try:
        return train(opt)
    except (DatasetError, CheckpointError) as e:
        sys.exit(f"ERROR: {e}")


if __name__ == "__main__":
    main(parse_opt())
