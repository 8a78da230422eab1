"""Exported models (ONNX, TorchScript): the graph they hold, the metadata they carry, and how they are written."""
