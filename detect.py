"""Run a trained detector on images, folders, globs or videos and save annotated results.

    python detect.py --weights runs/train/exp/weights/best.pt --source path/to/images
    python detect.py --weights runs/train/exp/weights/best.onnx --source path/to/images   # or .torchscript
"""
from __future__ import annotations

import argparse
import csv
from pathlib import Path

import cv2
import numpy as np
import torch

from utils.backends import load_backend
from utils.backends.base import ViewPrediction, predicted_view
from utils.boxes import non_max_suppression, scale_boxes, xyxy2xywh
from utils.cli import check_img_size, parse_checked, resolve_path, run_or_exit
from utils.data.sources import LoadImages
from utils.logger import LOGGER
from utils.paths import ROOT, increment_path
from utils.plots import colors, draw_box_label, draw_view_label
from utils.torch_utils import select_device, time_sync


def build_parser() -> argparse.ArgumentParser:
    """The command line (numeric flags are checked by parse_opt)."""
    p = argparse.ArgumentParser(description="Detect objects with a YOLOv5-compatible detector")
    p.add_argument("--weights", nargs="+", type=str, required=True, help="model path: .pt, .onnx, .torchscript")
    p.add_argument("--source", type=str, required=True, help="file/dir/glob/video/.txt list")
    p.add_argument("--data", type=str, default="", help="(optional) dataset.yaml path, unused: names come from the checkpoint")
    p.add_argument("--imgsz", "--img", "--img-size", nargs="+", type=int, default=[640], help="inference size h,w")
    p.add_argument("--conf-thres", type=float, default=0.25, help="confidence threshold")
    p.add_argument("--iou-thres", type=float, default=0.45, help="NMS IoU threshold")
    p.add_argument("--max-det", type=int, default=1000, help="maximum detections per image")
    p.add_argument("--device", default="", help="cuda device, i.e. 0 or 0,1,2,3 or cpu")
    p.add_argument("--view-img", action="store_true", help="show results (ignored: no display on these machines)")
    p.add_argument("--save-txt", action="store_true", help="save results to *.txt")
    p.add_argument("--save-csv", action="store_true", help="save results in CSV format")
    p.add_argument("--save-conf", action="store_true", help="save confidences in --save-txt labels")
    p.add_argument("--save-crop", action="store_true", help="save cropped prediction boxes")
    p.add_argument("--nosave", action="store_true", help="do not save images/videos")
    p.add_argument("--classes", nargs="+", type=int, help="filter by class: --classes 0, or --classes 0 2 3")
    p.add_argument("--agnostic-nms", action="store_true", help="class-agnostic NMS")
    p.add_argument("--augment", action="store_true", help="not supported in this project")
    p.add_argument("--project", default=str(ROOT / "runs" / "detect"), help="save results to project/name")
    p.add_argument("--name", default="exp", help="save results to project/name")
    p.add_argument("--exist-ok", action="store_true", help="existing project/name ok, do not increment")
    p.add_argument("--line-thickness", default=3, type=int, help="bounding box thickness (pixels)")
    p.add_argument("--hide-labels", action="store_true", help="hide labels")
    p.add_argument("--hide-conf", action="store_true", help="hide confidences")
    p.add_argument("--half", action="store_true", help="use FP16 half-precision inference (CUDA only)")
    p.add_argument("--vid-stride", type=int, default=1, help="video frame-rate stride")
    p.add_argument("--trust-weights", action="store_true", help="kept for compatibility: no weights file runs code here, so it changes nothing")
    return p


def parse_opt(argv: list[str] | None = None) -> argparse.Namespace:
    p = build_parser()
    opt = parse_checked(p, argv)
    if opt.augment:
        p.error("--augment is not supported by this project yet")
    opt.imgsz = opt.imgsz * 2 if len(opt.imgsz) == 1 else opt.imgsz
    return opt


def describe(pred: torch.Tensor, names: dict) -> str:
    """'2 ARs, 1 MR, ' style summary of one image's detections (YOLOv5's console line)."""
    if not len(pred):
        return "(no detections), "
    counts = torch.bincount(pred[:, 5].long())
    return "".join(f"{int(n)} {names[c]}{'s' * (int(n) > 1)}, " for c, n in enumerate(counts.tolist()) if n)


def view_line(view: ViewPrediction, with_confidence: bool) -> str:
    """The label file's view line: one-hot like the dataset's own labels, or the K probabilities with --save-conf."""
    if with_confidence:
        return " ".join(f"{p:.4f}" for p in view.probabilities)
    return " ".join("1" if i == view.index else "0" for i in range(len(view.probabilities)))


def save_crop(im0: np.ndarray, xyxy: list[float], file: Path) -> None:
    """Write the box region (10 px margin, as YOLOv5's crops) of the original image."""
    h, w = im0.shape[:2]
    x1, y1, x2, y2 = (int(v) for v in xyxy)
    crop = im0[max(y1 - 10, 0):min(y2 + 10, h), max(x1 - 10, 0):min(x2 + 10, w)]
    file.parent.mkdir(parents=True, exist_ok=True)
    cv2.imwrite(str(increment_path(file)), crop)


def run(opt: argparse.Namespace) -> Path:
    """Detect on every frame of --source; returns the folder results were written to."""
    device = select_device(opt.device)
    model = load_backend(resolve_path(opt.weights[0]), device, trust=opt.trust_weights,
                         half=opt.half and device.type != "cpu")
    LOGGER.info(model.describe())
    names, stride = model.names, model.stride
    imgsz = [check_img_size(s, stride) for s in opt.imgsz]
    model.check_imgsz(*imgsz)  # a fixed-size export runs only at its own size
    model.warmup(*imgsz)
    save_dir = increment_path(Path(opt.project) / opt.name, exist_ok=opt.exist_ok, mkdir=True)
    if opt.save_txt:
        (save_dir / "labels").mkdir(exist_ok=True)
    # auto (the smallest stride multiple around the image) only where any size runs; else the full square, as YOLOv5
    source = LoadImages(opt.source, img_size=imgsz, stride=stride, auto=model.dynamic, vid_stride=opt.vid_stride)
    csv_rows: list[list] = []
    writers: dict[str, cv2.VideoWriter] = {}
    dt, seen = [0.0, 0.0, 0.0], 0
    for path, img, im0, vid_cap, info in source:
        t0 = time_sync()
        x = torch.from_numpy(np.ascontiguousarray(img)).to(device).float()[None] / 255
        t1 = time_sync()
        with torch.inference_mode():
            out = model(x)
        view = predicted_view(out.view_probs, model.view_names, 0)
        t2 = time_sync()
        pred = non_max_suppression(out.decoded, opt.conf_thres, opt.iou_thres, opt.classes, opt.agnostic_nms,
                                   max_det=opt.max_det)[0]
        t3 = time_sync()
        dt = [dt[0] + t1 - t0, dt[1] + t2 - t1, dt[2] + t3 - t2]
        seen += 1
        pred[:, :4] = scale_boxes(x.shape[2:], pred[:, :4], im0.shape[:2])
        p = Path(path)
        frame = getattr(source, "frame", 0)
        stem = p.stem if vid_cap is None else f"{p.stem}_{frame}"
        annotated = im0.copy()
        gain = torch.tensor(im0.shape)[[1, 0, 1, 0]]
        for *xyxy, conf, cls in reversed(pred.tolist()):
            c = int(cls)
            label = None if opt.hide_labels else (names[c] if opt.hide_conf else f"{names[c]} {conf:.2f}")
            if opt.save_txt:
                xywh = (xyxy2xywh(torch.tensor(xyxy).view(1, 4)) / gain).view(-1).tolist()
                row = (c, *xywh, conf) if opt.save_conf else (c, *xywh)
                with open(save_dir / "labels" / f"{stem}.txt", "a") as f:
                    f.write(("%g " * len(row)).rstrip() % row + "\n")
            if opt.save_crop:
                save_crop(im0, xyxy, save_dir / "crops" / names[c] / f"{stem}.jpg")
            if not opt.nosave:
                draw_box_label(annotated, xyxy, label, colors(c, True), opt.line_thickness)
        if opt.save_txt and view is not None:
            with open(save_dir / "labels" / f"{stem}.txt", "a") as f:
                f.write("\n" + view_line(view, opt.save_conf) + "\n")
        if opt.save_csv:
            view_cols = [] if view is None else [view.name, f"{view.confidence:.2f}"]
            image_rows = [[p.name, names[int(c)], f"{conf:.2f}", *view_cols] for conf, c in pred[:, 4:6].tolist()]
            csv_rows += image_rows or ([[p.name, "", "", *view_cols]] if view is not None else [])
        if not opt.nosave:
            if view is not None:
                draw_view_label(annotated, f"{view.name} {view.confidence:.2f}", opt.line_thickness)
            if vid_cap is None:
                cv2.imwrite(str(save_dir / p.name), annotated)
            else:
                if path not in writers:
                    fps = vid_cap.get(cv2.CAP_PROP_FPS) or 30
                    h, w = annotated.shape[:2]
                    writers[path] = cv2.VideoWriter(str((save_dir / p.name).with_suffix(".mp4")), cv2.VideoWriter_fourcc(*"mp4v"), fps, (w, h))
                writers[path].write(annotated)
        view_text = "" if view is None else f"view {view.name} {view.confidence:.2f}, "
        LOGGER.info(f"{info}{x.shape[2]}x{x.shape[3]} {describe(pred, names)}{view_text}{(t2 - t1) * 1e3:.1f}ms")
    for writer in writers.values():
        writer.release()
    if opt.save_csv:
        with open(save_dir / "predictions.csv", "w", newline="") as f:
            header = ["Image Name", "Prediction", "Confidence"] + (["View", "View Confidence"] if model.view_names else [])
            csv.writer(f).writerows([header, *csv_rows])
    per_image = tuple(t / max(seen, 1) * 1e3 for t in dt)
    LOGGER.info("Speed: %.1fms pre-process, %.1fms inference, %.1fms NMS per image at shape %s" % (*per_image, (1, 3, *imgsz)))
    LOGGER.info(f"Results saved to {save_dir}")
    return save_dir


def main(opt: argparse.Namespace) -> Path:
    return run_or_exit(run, opt)


if __name__ == "__main__":
    main(parse_opt())
