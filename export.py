"""Export a trained model to ONNX or TorchScript, for runtimes outside this repository's PyTorch code.

    python export.py --weights runs/train/exp/weights/best.pt --include onnx torchscript --imgsz 320
    python detect.py --weights runs/train/exp/weights/best.onnx --img 320 --source path/to/images

YOLOv5's flags where they apply. The files are written beside the weights (best.onnx, best.torchscript):
input `images` [B, 3, H, W] float in [0, 1]; output `output0` [B, N, 5 + nc] as YOLOv5's (cx, cy, w, h
in input pixels, objectness, class scores, after sigmoid); joint and dual models add `view_probs`
[B, K]. Metadata: utils/export/metadata.py. Detection, joint and dual checkpoints, and YOLOv5's own .pt.
"""
from __future__ import annotations

import argparse
import time
from pathlib import Path

import torch

from utils.cli import OptionError, check_img_size, parse_checked, resolve_path, run_or_exit
from utils.export.metadata import ExportMetadata
from utils.export.wrapper import ExportModule, model_task
from utils.export.writers import SUFFIXES, export_onnx, export_torchscript, output_file
from utils.logger import LOGGER
from utils.model_loading import load_inference_model
from utils.torch_utils import select_device

YOLOV5_ONLY_FORMATS = ("openvino", "engine", "coreml", "saved_model", "pb", "tflite", "edgetpu", "tfjs", "paddle")
DEFAULT_OPSET = 17  # YOLOv5 master's default


def build_parser() -> argparse.ArgumentParser:
    """The command line (numeric flags are checked by parse_opt)."""
    p = argparse.ArgumentParser(description="Export a YOLOv5-compatible model to ONNX / TorchScript")
    p.add_argument("--weights", type=str, required=True, help="model.pt path (ours or YOLOv5's)")
    p.add_argument("--imgsz", "--img", "--img-size", nargs="+", type=int, default=[640, 640], help="image (h, w)")
    p.add_argument("--batch-size", type=int, default=1, help="batch size")
    p.add_argument("--device", default="cpu", help="cuda device, i.e. 0 or 0,1,2,3 or cpu")
    p.add_argument("--half", action="store_true", help="FP16 half-precision export (CUDA only)")
    p.add_argument("--inplace", action="store_true", help="accepted for YOLOv5 compatibility (nothing is in place)")
    p.add_argument("--dynamic", action="store_true", help="ONNX/TorchScript: any batch size and image size")
    p.add_argument("--simplify", action="store_true",
                   help="accepted for YOLOv5 compatibility: no simplifier is run (onnxruntime optimises at load)")
    p.add_argument("--opset", type=int, default=DEFAULT_OPSET, help="ONNX: opset version")
    p.add_argument("--include", nargs="+", default=["torchscript"], help="torchscript, onnx")
    p.add_argument("--trust-weights", action="store_true", help="kept for compatibility: no weights file runs code here, so it changes nothing")
    return p


def parse_opt(argv: list[str] | None = None) -> argparse.Namespace:
    opt = parse_checked(build_parser(), argv)
    opt.imgsz = opt.imgsz * 2 if len(opt.imgsz) == 1 else opt.imgsz
    return opt


def check_formats(include: list[str]) -> list[str]:
    """The --include formats, lower-cased; one this project does not export stops with what it does export."""
    formats = [f.lower().lstrip(".") for f in include]
    for fmt in formats:
        if fmt not in SUFFIXES:
            known = "a YOLOv5 format not exported by this project" if fmt in YOLOV5_ONLY_FORMATS else "unknown"
            raise OptionError(f"--include {fmt}: {known}; supported: {', '.join(SUFFIXES)}")
    return list(dict.fromkeys(formats))


def run(opt: argparse.Namespace) -> list[Path]:
    """Export --weights to each --include format; returns the files written."""
    t0 = time.time()
    formats = check_formats(opt.include)
    if len(opt.imgsz) != 2:
        raise OptionError(f"--imgsz {' '.join(map(str, opt.imgsz))}: expected one size or two (height width)")
    device = select_device(opt.device)
    if opt.half and device.type == "cpu":
        raise OptionError("--half only compatible with GPU export, i.e. use --device 0")
    if opt.simplify:
        LOGGER.warning("WARNING ⚠️ --simplify: no simplifier is used here; onnxruntime optimises the graph when it "
                       "loads it, so the file is exported as without the flag")
    weights = Path(resolve_path(opt.weights))
    model, _ = load_inference_model(weights, device, trust=opt.trust_weights)
    stride = max(int(model.stride.max()), 32)
    imgsz = [check_img_size(s, stride) for s in opt.imgsz]
    with_views = bool(model.view_names)
    if opt.half:
        model.half()
    module = ExportModule(model, with_views).eval()
    example = torch.zeros(opt.batch_size, 3, *imgsz, device=device, dtype=torch.float16 if opt.half else torch.float32)
    with torch.no_grad():
        for _ in range(2):  # dry runs, as YOLOv5: anything shape-dependent is settled before tracing
            out = module(example)
    shapes = [tuple(t.shape) for t in (out if with_views else (out,))]
    meta = ExportMetadata(names=dict(model.names), stride=stride, imgsz=(imgsz[0], imgsz[1]), batch=opt.batch_size,
                          dynamic=opt.dynamic, half=opt.half, task=model_task(model),
                          view_names=list(model.view_names) if with_views else None)
    views = f" and view_probs {shapes[1]}" if with_views else ""
    LOGGER.info(f"\nPyTorch: starting from {weights} with input shape {tuple(example.shape)}, output0 {shapes[0]}"
                f"{views} ({meta.task} model{', dynamic axes' if opt.dynamic else ''})")
    files = []
    for fmt in formats:
        t = time.time()
        file = output_file(weights, fmt)
        if fmt == "onnx":
            export_onnx(module, example, file, meta, opset=opt.opset)
        else:
            export_torchscript(module, example, file, meta)
        LOGGER.info(f"{fmt}: export success ✅ {time.time() - t:.1f}s, saved as {file} "
                    f"({file.stat().st_size / 1e6:.1f} MB)")
        files.append(file)
    LOGGER.info(f"\nExport complete ({time.time() - t0:.1f}s)\nResults saved to {weights.parent}")
    for file in files:
        LOGGER.info(f"Detect:   python detect.py --weights {file} --img {imgsz[0]}\n"
                    f"Validate: python val.py --weights {file} --img {imgsz[0]}\n"
                    f"Python:   torch.hub.load('.', 'custom', path='{file}', source='local')")
    return files


def main(opt: argparse.Namespace) -> list[Path]:
    return run_or_exit(run, opt)


if __name__ == "__main__":
    main(parse_opt())
