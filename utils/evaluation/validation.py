"""Detection evaluation shared by val.py and the training loop: one pass, YOLOv5's table and metrics."""
from __future__ import annotations

import json
from dataclasses import dataclass, field
from pathlib import Path

import numpy as np
import torch
from tqdm import tqdm

from models.yolo_cls import view_loss
from utils.backends.base import Backend, Predictions
from utils.backends.pytorch import ModuleBackend
from utils.boxes import non_max_suppression, scale_boxes, xywh2xyxy, xyxy2xywh
from utils.evaluation.metrics import ConfusionMatrix, ap_per_class, match_predictions
from utils.evaluation.plots import plot_ap_curves, plot_confusion_matrix, plot_view_confusion_matrix
from utils.evaluation.view_metrics import NO_VIEW, ViewAccumulator, ViewMetrics, format_view_table
from utils.logger import LOGGER
from utils.plots import plot_images
from utils.torch_utils import time_sync

IOU_THRESHOLDS = torch.linspace(0.5, 0.95, 10)
TABLE_HEADER = ("%22s" + "%11s" * 6) % ("Class", "Images", "Instances", "P", "R", "mAP50", "mAP50-95")
ROW_FORMAT = "%22s" + "%11i" * 2 + "%11.3g" * 4


@dataclass
class DetectionResult:
    """What one evaluation pass measured; `as_tuple` gives YOLOv5's (P, R, mAP50, mAP50-95, box, obj, cls)."""

    precision: float = 0.0
    recall: float = 0.0
    map50: float = 0.0
    map: float = 0.0
    losses: tuple = (0.0, 0.0, 0.0)
    maps: np.ndarray = field(default_factory=lambda: np.zeros(0))  # mAP50-95 per class (nc)
    per_class: list = field(default_factory=list)  # (name, images, instances, p, r, ap50, ap)
    speed_ms: tuple = (0.0, 0.0, 0.0)  # pre-process, inference, NMS per image
    n_images: int = 0
    n_instances: int = 0
    view: ViewMetrics | None = None  # image-level view metrics when the model has a view head
    view_loss: float = 0.0

    def as_tuple(self) -> tuple:
        return (self.precision, self.recall, self.map50, self.map, *self.losses)

    def view_summary(self) -> dict | None:
        """The view figures results.csv and training_history.json record, or None without a view task."""
        if self.view is None:
            return None
        return {"view_loss": self.view_loss, "view_accuracy": float(self.view.accuracy),
                "view_balanced_accuracy": float(self.view.balanced_accuracy)}


@dataclass
class ImageMatches:
    """One image's predictions matched to its labels: enough to recompute mAP and view accuracy on any subset.

    A patient bootstrap (utils/compare/bootstrap.py) resamples these instead of re-running the model.
    """

    path: str
    correct: np.ndarray  # bool [n_pred, 10]: prediction i is a true positive at IoU threshold j
    conf: np.ndarray  # [n_pred]
    pred_cls: np.ndarray  # [n_pred]
    target_cls: np.ndarray  # [n_labels]
    view_true: int = NO_VIEW
    view_pred: int = NO_VIEW  # arg-max view; NO_VIEW without a view head


def _native_space_labels(labels: torch.Tensor, img_hw: tuple, shape_info) -> torch.Tensor:
    """Label rows (cls, cx, cy, w, h normalised to the letterboxed image) -> (cls, x1, y1, x2, y2) original pixels."""
    h, w = img_hw
    boxes = xywh2xyxy(labels[:, 1:5] * torch.tensor((w, h, w, h), device=labels.device))
    scale_boxes((h, w), boxes, shape_info[0], shape_info[1])
    return torch.cat((labels[:, :1], boxes), 1)


def _save_txt(pred: torch.Tensor, save_conf: bool, shape0: tuple, file: Path) -> None:
    """YOLO-format prediction rows (cls cx cy w h [conf]) normalised to the original image."""
    gain = torch.tensor(shape0)[[1, 0, 1, 0]]
    with open(file, "a") as f:
        for *xyxy, conf, cls in pred.tolist():
            xywh = (xyxy2xywh(torch.tensor(xyxy).view(1, 4)) / gain).view(-1).tolist()
            row = (cls, *xywh, conf) if save_conf else (cls, *xywh)
            f.write(("%g " * len(row)).rstrip() % row + "\n")


def _json_rows(pred: torch.Tensor, path: str) -> list[dict]:
    """COCO-format result rows: image_id from the file stem, bbox as x, y, w, h (top-left) pixels."""
    stem = Path(path).stem
    image_id = int(stem) if stem.isnumeric() else stem
    boxes = xyxy2xywh(pred[:, :4].clone())
    boxes[:, :2] -= boxes[:, 2:] / 2
    return [
        {"image_id": image_id, "category_id": int(p[5]), "bbox": [round(x, 3) for x in b], "score": round(float(p[4]), 5)}
        for p, b in zip(pred.tolist(), boxes.tolist())
    ]


@torch.inference_mode()
def evaluate(
    model: torch.nn.Module | Backend,
    dataloader,
    *,
    names: dict,
    device: torch.device,
    conf_thres: float = 0.001,
    iou_thres: float = 0.6,
    max_det: int = 300,
    single_cls: bool = False,
    compute_loss=None,
    save_dir: Path | None = None,
    plots: bool = False,
    save_txt: bool = False,
    save_conf: bool = False,
    save_json: bool = False,
    verbose: bool = False,
    training: bool = False,
    half: bool = False,
    view_names: list | None = None,
    amp_dtype: torch.dtype | None = None,
    per_image: list | None = None,
) -> DetectionResult:
    """Run the model over `dataloader`, print YOLOv5's table, return the metrics.

    model: a Backend (val.py: a checkpoint or an exported file), or a model in memory (training's EMA),
    run as it is through ModuleBackend with `half` and `amp_dtype` (the forward in autocast to that
    dtype during an AMP run). The loss, the decoding of boxes and the view figures always use float32
    outputs. Predictions and labels are both mapped back to each image's original pixels before
    matching, as YOLOv5 does, so metrics do not depend on the letterbox.
    per_image: a list to extend with one ImageMatches per image, in loader order (the metrics do not change).
    """
    nc = 1 if single_cls else len(names)
    module = model if isinstance(model, torch.nn.Module) else None
    backend = model if module is None else ModuleBackend(module, device, view_names=view_names, half=half,
                                                         amp_dtype=amp_dtype)
    was_training = module is not None and module.training
    if module is not None:
        module.eval()
    iouv = IOU_THRESHOLDS.to(device)
    confusion = ConfusionMatrix(nc=nc)
    stats: list = []
    json_rows: list = []
    loss_sum = torch.zeros(3, device=device)
    dt = [0.0, 0.0, 0.0]
    seen = 0
    views_seen = ViewAccumulator(len(view_names)) if view_names else None
    view_loss_sum = 0.0
    image_views: list[tuple[str, int, int]] = []  # (path, true, predicted) per image, for per_image
    if save_txt and save_dir is not None:
        (save_dir / "labels").mkdir(parents=True, exist_ok=True)
    bar = tqdm(dataloader, desc=TABLE_HEADER, bar_format="{l_bar}{bar:10}{r_bar}", disable=training and not verbose)
    for batch_i, (imgs, targets, views, paths, shapes) in enumerate(bar):
        t0 = time_sync()
        imgs = imgs.to(device, non_blocking=True).float() / 255
        targets = targets.to(device, non_blocking=True)
        batch, _, height, width = imgs.shape
        t1 = time_sync()
        out: Predictions = backend(imgs)
        if compute_loss is not None and out.raw is not None:
            loss_sum += compute_loss(out.raw.det, targets)[1]
        scores = out.view_scores()
        if views_seen is not None and scores is not None:
            views = views.to(device, non_blocking=True)
            views_seen.update(scores, views)
            view_loss_sum += float(view_loss(scores, views))
        t2 = time_sync()
        preds = non_max_suppression(out.decoded, conf_thres, iou_thres, multi_label=True, agnostic=single_cls,
                                    max_det=max_det)
        t3 = time_sync()
        dt[0] += t1 - t0
        dt[1] += t2 - t1
        dt[2] += t3 - t2

        if per_image is not None:
            image_views += _views_per_image(paths, views, scores)
        for si, pred in enumerate(preds):
            labels = targets[targets[:, 0] == si, 1:]
            nl, npr = labels.shape[0], pred.shape[0]
            shape0, ratio_pad = shapes[si]
            seen += 1
            correct = torch.zeros(npr, len(iouv), dtype=torch.bool, device=device)
            if npr == 0:  # one stats entry per image, even an empty one, so stats[i] is image i
                stats.append((correct, torch.zeros(0, device=device), torch.zeros(0, device=device), labels[:, 0]))
                if nl and plots:
                    confusion.process_batch(None, labels[:, 0])
                continue
            if single_cls:
                pred[:, 5] = 0
            predn = pred.clone()
            scale_boxes((height, width), predn[:, :4], shape0, ratio_pad)
            if nl:
                labelsn = _native_space_labels(labels, (height, width), shapes[si])
                correct = match_predictions(predn, labelsn, iouv)
                if plots:
                    confusion.process_batch(predn, labelsn)
            stats.append((correct, pred[:, 4], pred[:, 5], labels[:, 0]))
            if save_txt and save_dir is not None:
                _save_txt(predn, save_conf, shape0, save_dir / "labels" / f"{Path(paths[si]).stem}.txt")
            if save_json:
                json_rows += _json_rows(predn, paths[si])

        if plots and save_dir is not None and batch_i < 3:
            plot_images(imgs, targets, paths, save_dir / f"val_batch{batch_i}_labels.jpg", names)
            plot_images(imgs, _preds_to_targets(preds), paths, save_dir / f"val_batch{batch_i}_pred.jpg", names)

    result = _summarise(stats, nc, names, seen, plots, save_dir)
    if per_image is not None:
        per_image += [ImageMatches(path, *(x.cpu().numpy() for x in stat), true, pred)
                      for (path, true, pred), stat in zip(image_views, stats)]
    result.losses = tuple((loss_sum.cpu() / max(len(dataloader), 1)).tolist())
    result.speed_ms = tuple(x / max(seen, 1) * 1e3 for x in dt)
    _print_table(result, nc, verbose or (nc < 50 and not training), training)
    if not training:
        shape = (dataloader.batch_size or 1, 3, *imgs.shape[2:]) if seen else (0,)
        LOGGER.info("Speed: %.1fms pre-process, %.1fms inference, %.1fms NMS per image at shape %s" % (*result.speed_ms, shape))
    if plots and save_dir is not None:
        plot_confusion_matrix(confusion.matrix, list(names.values()), save_dir / "confusion_matrix.png")
    if views_seen is not None:
        result.view = views_seen.compute()
        result.view_loss = view_loss_sum / max(len(dataloader), 1)
        LOGGER.info(format_view_table(result.view, list(view_names)))
        if plots and save_dir is not None:
            plot_view_confusion_matrix(result.view.confusion, list(view_names), save_dir / "view_confusion_matrix.png")
    if save_json and save_dir is not None:
        file = save_dir / "predictions.json"
        file.write_text(json.dumps(json_rows))
        LOGGER.info(f"COCO-format predictions saved to {file}")
    if save_txt and save_dir is not None:
        LOGGER.info(f"Results saved to {save_dir}")
    if module is not None:
        module.train(was_training)
    return result


def _views_per_image(paths, views: torch.Tensor, scores: torch.Tensor | None) -> list[tuple[str, int, int]]:
    """(path, true view, arg-max view) of each image of a batch; NO_VIEW where a label or the head is missing."""
    true = views.reshape(-1).tolist()
    pred = scores.argmax(1).tolist() if scores is not None else [NO_VIEW] * len(paths)
    return [(str(p), int(t), int(q)) for p, t, q in zip(paths, true, pred)]


def _preds_to_targets(preds: list[torch.Tensor]) -> torch.Tensor:
    """NMS output per image -> rows (img, cls, cx, cy, w, h, conf) in pixels, for plot_images."""
    rows = []
    for i, p in enumerate(preds):
        p = p[:, :6].float().cpu()
        idx = torch.full((p.shape[0], 1), i, dtype=torch.float32)
        rows.append(torch.cat((idx, p[:, 5:6], xyxy2xywh(p[:, :4]), p[:, 4:5]), 1))
    return torch.cat(rows, 0) if rows else torch.zeros((0, 7))


def _summarise(stats: list, nc: int, names: dict, seen: int, plots: bool, save_dir: Path | None) -> DetectionResult:
    """Turn per-image matches into P, R, mAP50, mAP50-95 overall and per class."""
    result = DetectionResult(n_images=seen, maps=np.zeros(nc))
    if not stats:
        return result
    tp, conf, pred_cls, target_cls = (torch.cat(x, 0).cpu().numpy() for x in zip(*stats))
    result.n_instances = len(target_cls)
    counts = np.bincount(target_cls.astype(int), minlength=nc)
    images_with = _images_per_class(stats, nc)
    if result.n_instances:  # unlike YOLOv5, also with no true positive yet, so a first epoch still plots curves
        per_class = ap_per_class(tp, conf, pred_cls, target_cls, names=names)
        if plots:
            plot_ap_curves(per_class, save_dir or Path("."))
        p, r, ap, classes = per_class.p, per_class.r, per_class.ap, per_class.unique_classes
        ap50, ap_all = ap[:, 0], ap.mean(1)
        result.precision, result.recall = float(p.mean()), float(r.mean())
        result.map50, result.map = float(ap50.mean()), float(ap_all.mean())
        for i, c in enumerate(classes):
            result.maps[int(c)] = ap_all[i]
            result.per_class.append((names[int(c)], int(images_with[int(c)]), int(counts[int(c)]), p[i], r[i], ap50[i], ap_all[i]))
    return result


def _images_per_class(stats: list, nc: int) -> np.ndarray:
    """Number of images in which each class has at least one label (YOLOv5's per-class 'Images' column)."""
    seen = np.zeros(nc, dtype=int)
    for *_, target_cls in stats:
        for c in torch.unique(target_cls).long().tolist():
            seen[c] += 1
    return seen


def _print_table(result: DetectionResult, nc: int, per_class: bool, training: bool) -> None:
    """YOLOv5's table: `all` first, then one row per class when asked."""
    if training:
        LOGGER.info(TABLE_HEADER)
    LOGGER.info(ROW_FORMAT % ("all", result.n_images, result.n_instances, result.precision, result.recall, result.map50, result.map))
    if result.n_instances == 0:
        LOGGER.warning("WARNING ⚠️ no labels found in the validation set, can not compute metrics without labels")
    if per_class and nc > 1:
        for row in result.per_class:
            LOGGER.info(ROW_FORMAT % row)
