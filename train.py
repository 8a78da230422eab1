"""Train a YOLOv5-compatible detector (YOLOv5's flags and run folders).

    python train.py --data data/coco128.yaml --cfg models/yolov5n.yaml --weights '' --img 320 --epochs 3
"""
from __future__ import annotations

import argparse

from utils.cli import parse_checked, run_or_exit, train_parser
from utils.training.engine import train


build_parser = train_parser  # the command line: YOLOv5's train.py flags


def parse_opt(argv: list[str] | None = None) -> argparse.Namespace:
    return parse_checked(build_parser(), argv)


def main(opt: argparse.Namespace) -> dict:
    return run_or_exit(train, opt)


if __name__ == "__main__":
    main(parse_opt())
