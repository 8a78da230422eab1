"""A checkpoint's metrics on its split's val (and test) set, evaluated in this process and cached in the run folder."""
from __future__ import annotations

import hashlib
import json
from dataclasses import dataclass
from pathlib import Path
from typing import Any

from utils.cli import check_img_size, train_parser
from utils.compare.columns import TEST_PREFIX
from utils.files import write_json_atomic

EVAL_FILE = "compare_eval.json"  # metrics of the evaluated checkpoint, reused while checkpoint and data are unchanged
LAST_EVAL_FILE = "compare_eval_last.json"  # the same for last.pt (--checkpoint last), kept apart so neither evicts


@dataclass
class EvalSettings:
    """What evaluation and model.info need from the train flags."""

    imgsz: int = 640
    batch_size: int = 32  # val.py's default
    workers: int = 8
    device: str = ""
    single_cls: bool = False


def eval_settings(extra: list[str]) -> EvalSettings:
    """Image size, device, workers and single-cls as the train scripts will read them from the extra flags."""
    train_opt, _ = train_parser().parse_known_args(extra)
    return EvalSettings(imgsz=train_opt.imgsz, workers=train_opt.workers, device=train_opt.device,
                        single_cls=train_opt.single_cls)


def evaluate_checkpoint(weights: Path, data_yaml: Path, settings: EvalSettings,
                        tasks: tuple[str, ...] = ("val", "test"), per_image: dict[str, list] | None = None) -> dict:
    """Metrics of one checkpoint on the YAML's val split (in-process, as val.py), plus parameters and GFLOPs.

    Where the YAML also names a test split (utils.split writes one), its metrics are added with the
    test_ prefix: the report picks the best fixed weight on val and compares the strategies on test.
    tasks: the splits to evaluate; per_image: {split: list} to extend with evaluate()'s ImageMatches.
    """
    from utils.data.dataset_yaml import check_dataset
    from utils.data.loaders import create_dataloader
    from utils.data.synthetic import ensure_synthetic
    from utils.evaluation.validation import evaluate
    from utils.model_loading import load_inference_model
    from utils.torch_utils import select_device  # torch and the data code load only when there is work

    device = select_device(settings.device, batch_size=settings.batch_size)
    ensure_synthetic(data_yaml)
    data = check_dataset(data_yaml)
    model, _ = load_inference_model(weights, device, fuse=False)
    info = model.info(settings.imgsz)
    model.fuse()
    view_names = model.view_names
    stride = max(int(model.stride.max()), 32)
    imgsz = check_img_size(settings.imgsz, stride)
    row: dict[str, Any] = {"parameters": int(info["parameters"]), "gflops": float(info["gflops"])}
    for task, prefix in (("val", ""), ("test", TEST_PREFIX)):
        if task not in tasks or not data.get(task):
            continue
        loader, _ = create_dataloader(data[task], imgsz, settings.batch_size, stride, single_cls=settings.single_cls,
                                      rect=True, pad=0.5, workers=settings.workers, prefix=f"{task}: ",
                                      nc=len(model.names), n_views=len(view_names) if view_names else None)
        result = evaluate(model, loader, names=model.names, device=device, single_cls=settings.single_cls,
                          view_names=view_names, per_image=(per_image or {}).get(task))
        row |= {prefix + k: v for k, v in metrics_row(result, list(view_names) if view_names else None).items()}
    return row


def evaluation_key(weights: Path, data_yaml: Path, settings: EvalSettings) -> dict:
    """What an evaluation depends on: the checkpoint file, the dataset YAML's text and the evaluation settings.

    The device and worker count are left out on purpose: they change the figures only in float rounding,
    and a comparison resumed on another machine should keep the evaluations it already has.
    """
    stat = weights.stat()
    return {"checkpoint": weights.name, "size": stat.st_size, "mtime_ns": stat.st_mtime_ns,
            "data": str(data_yaml), "data_sha256": hashlib.sha256(Path(data_yaml).read_bytes()).hexdigest(),
            "imgsz": settings.imgsz, "batch_size": settings.batch_size, "single_cls": settings.single_cls}


def cached_evaluation(run_dir: Path, weights: Path, data_yaml: Path, settings: EvalSettings,
                      cache_name: str = EVAL_FILE) -> dict:
    """evaluate_checkpoint, or its saved result when the checkpoint, data YAML and settings are unchanged.

    A report over many runs is regenerated often (every resume, --report-only); evaluating each
    checkpoint once keeps that cheap. Images changed under an unchanged YAML are not detected.
    cache_name: the file in run_dir that keeps the result (one per checkpoint choice).
    """
    key = evaluation_key(weights, data_yaml, settings)
    try:
        saved = json.loads((run_dir / cache_name).read_text())
        if saved.get("key") == key:
            return saved["metrics"]
    except (OSError, json.JSONDecodeError, KeyError, AttributeError):
        pass
    metrics = evaluate_checkpoint(weights, data_yaml, settings)
    write_json_atomic(run_dir / cache_name, {"key": key, "metrics": metrics}, indent=1)
    return metrics


def f1_score(precision: float, recall: float) -> float:
    """2PR/(P+R), 0 when both are 0."""
    return 2 * precision * recall / (precision + recall) if precision + recall > 0 else 0.0


def metrics_row(result: Any, view_names: list[str] | None) -> dict:
    """CSV metric columns from a DetectionResult: overall, AP50 per class, view accuracy and F1 per view."""
    row = {"mAP50": result.map50, "mAP50_95": result.map, "precision": result.precision, "recall": result.recall,
           "F1": f1_score(result.precision, result.recall)}
    for name, _images, _instances, _p, _r, ap50, _ap in result.per_class:
        row[f"AP50_{name}"] = float(ap50)
    if result.view is not None and view_names:
        row["view_accuracy"] = float(result.view.accuracy)
        row["view_balanced_accuracy"] = float(result.view.balanced_accuracy)
        support = getattr(result.view, "support", None)
        for i, (name, f1) in enumerate(zip(view_names, result.view.f1)):
            if support is None or support[i] > 0:  # a view absent from the val set has no F1
                row[f"F1_{name}"] = float(f1)
    return row
