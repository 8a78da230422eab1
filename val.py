"""Validate a trained detector on a dataset split and print YOLOv5's table.

    python val.py --weights runs/train/exp/weights/best.pt --data data/coco128.yaml --img 320
    python val.py --weights runs/train/exp/weights/best.onnx --data data/coco128.yaml --img 320   # or .torchscript
"""
from __future__ import annotations

import argparse
from pathlib import Path

from utils.backends import Backend, load_backend
from utils.cli import check_img_size, parse_checked, resolve_path, run_or_exit
from utils.data.dataset_yaml import check_dataset
from utils.data.loaders import create_dataloader
from utils.data.synthetic import ensure_synthetic
from utils.evaluation.validation import DetectionResult, evaluate
from utils.export.metadata import ExportedFileError
from utils.logger import LOGGER
from utils.paths import ROOT, increment_path
from utils.torch_utils import select_device


def build_parser() -> argparse.ArgumentParser:
    """The command line (numeric flags are checked by parse_opt)."""
    p = argparse.ArgumentParser(description="Validate a YOLOv5-compatible detector")
    p.add_argument("--data", type=str, default=str(ROOT / "data" / "synthetic.yaml"), help="dataset.yaml path")
    p.add_argument("--weights", nargs="+", type=str, required=True, help="model path(s): .pt, .onnx, .torchscript")
    p.add_argument("--batch-size", type=int, default=32, help="batch size")
    p.add_argument("--imgsz", "--img", "--img-size", type=int, default=640, help="inference size (pixels)")
    p.add_argument("--conf-thres", type=float, default=0.001, help="confidence threshold")
    p.add_argument("--iou-thres", type=float, default=0.6, help="NMS IoU threshold")
    p.add_argument("--max-det", type=int, default=300, help="maximum detections per image")
    p.add_argument("--task", default="val", choices=["train", "val", "test", "speed"], help="train, val, test or speed")
    p.add_argument("--device", default="", help="cuda device, i.e. 0 or 0,1,2,3 or cpu")
    p.add_argument("--workers", type=int, default=8, help="max dataloader workers")
    p.add_argument("--single-cls", action="store_true", help="treat as single-class dataset")
    p.add_argument("--augment", action="store_true", help="not supported in this project")
    p.add_argument("--verbose", action="store_true", help="report mAP by class")
    p.add_argument("--save-txt", action="store_true", help="save results to *.txt")
    p.add_argument("--save-hybrid", action="store_true", help="not supported in this project")
    p.add_argument("--save-conf", action="store_true", help="save confidences in --save-txt labels")
    p.add_argument("--save-json", action="store_true", help="save a COCO-JSON results file")
    p.add_argument("--project", default=str(ROOT / "runs" / "val"), help="save to project/name")
    p.add_argument("--name", default="exp", help="save to project/name")
    p.add_argument("--exist-ok", action="store_true", help="existing project/name ok, do not increment")
    p.add_argument("--half", action="store_true", help="use FP16 half-precision inference (CUDA only)")
    p.add_argument("--trust-weights", action="store_true", help="kept for compatibility: no weights file runs code here, so it changes nothing")
    return p


def parse_opt(argv: list[str] | None = None) -> argparse.Namespace:
    return parse_checked(build_parser(), argv)


def fixed_size_batches(model: Backend, imgsz: int, batch_size: int) -> tuple[int, bool]:
    """(batch size, rect) for the loader: a file exported without --dynamic gets its own batch and square images.

    YOLOv5's val.py does the same for such files (batch 1, no rectangular batches); a dynamic export
    and a checkpoint keep --batch-size and rectangular batches, so their figures are the checkpoint's.
    """
    if model.dynamic:
        return batch_size, True
    height, width = model.imgsz
    if height != width:
        raise ExportedFileError(f"--weights {model.weights} was exported for {height}x{width} images; val.py needs a "
                                f"square size (export with --imgsz {max(height, width)}) or --dynamic")
    model.check_imgsz(imgsz, imgsz)
    LOGGER.info(f"Forcing --batch-size {model.batch_size} square inference {model.fixed_shape} for a fixed-size "
                f"{model.format} export (no rectangular batches)")
    return model.batch_size, False


def run(opt: argparse.Namespace) -> list[DetectionResult]:
    """Validate each --weights file; returns one result per file."""
    if opt.augment or opt.save_hybrid:
        raise SystemExit("--augment and --save-hybrid are not supported by this project yet")
    if opt.task == "speed":
        opt.conf_thres, opt.iou_thres, opt.save_json, opt.save_txt = 0.25, 0.45, False, False
    device = select_device(opt.device, batch_size=opt.batch_size)
    half = opt.half and device.type != "cpu"
    ensure_synthetic(opt.data)
    data = check_dataset(opt.data)
    split = opt.task if opt.task in ("train", "val", "test") else "val"
    if not data.get(split):
        raise SystemExit(f"--task {opt.task}: {data['yaml_file']} has no '{split}' split")
    save_dir = increment_path(Path(opt.project) / opt.name, exist_ok=opt.exist_ok, mkdir=True)
    results = []
    for weights in opt.weights:
        model = load_backend(resolve_path(weights), device, trust=opt.trust_weights, half=half)
        LOGGER.info(model.describe())
        names = model.names
        if not opt.single_cls and len(names) != int(data["nc"]):
            raise SystemExit(f"--weights {weights} has {len(names)} classes but {opt.data} has nc={data['nc']}")
        view_names = model.view_names
        if view_names and data.get("cls_names") and list(data["cls_names"]) != list(view_names):
            raise SystemExit(f"--weights {weights} classifies views {view_names} but {opt.data} declares "
                             f"cls_names {data['cls_names']}")
        imgsz = check_img_size(opt.imgsz, model.stride)
        batch_size, rect = fixed_size_batches(model, imgsz, opt.batch_size)
        loader, _ = create_dataloader(data[split], imgsz, batch_size, model.stride, single_cls=opt.single_cls,
                                      rect=rect, pad=0.5, workers=opt.workers, prefix=f"{split}: ", nc=len(names),
                                      n_views=len(view_names) if view_names else None,
                                      pin_memory=device.type == "cuda")
        results.append(evaluate(model, loader, names=names, device=device, conf_thres=opt.conf_thres,
                                iou_thres=opt.iou_thres, max_det=opt.max_det, single_cls=opt.single_cls,
                                save_dir=save_dir, plots=opt.task != "speed", save_txt=opt.save_txt,
                                save_conf=opt.save_conf, save_json=opt.save_json, verbose=opt.verbose,
                                view_names=view_names))
    LOGGER.info(f"Results saved to {save_dir}")
    return results


def main(opt: argparse.Namespace) -> list[DetectionResult]:
    return run_or_exit(run, opt)


if __name__ == "__main__":
    main(parse_opt())
