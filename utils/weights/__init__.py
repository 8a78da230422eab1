"""Weights from files: YOLOv5's own checkpoints read without running code, and YOLOv5's transfer rule."""
