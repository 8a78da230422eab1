"""The comparison's column names, their labels and digits in the report, and which mean nothing for a strategy."""
from __future__ import annotations

DETECTION_COLUMNS = ("mAP50", "mAP50_95", "precision", "recall", "F1")
VIEW_COLUMNS = ("view_accuracy", "view_balanced_accuracy")
COST_COLUMNS = ("train_time_s", "train_loop_s", "step_ms", "iterations_per_epoch", "peak_rss_gb", "parameters",
                "gflops")
EPOCH_CHOICE_COLUMNS = ("best_epoch", "view_accuracy_peak", "view_peak_epoch")  # beside best.pt's view_accuracy
INTERFERENCE_COLUMNS = ("interference_n", "interference_mean_cosine", "interference_conflict_fraction",
                        "interference_median_norm_ratio")
ID_COLUMNS = ("split", "strategy", "seed", "status", "trained_now", "run_dir", "checkpoint", "epochs_done")
TEST_PREFIX = "test_"  # CSV columns of the held-out test split, where the dataset YAML has one
LAST_PREFIX = "last_"  # the headline columns again, scored at last.pt (the epoch-choice check beside best.pt)
LAST_COLUMNS = ("mAP50", "view_accuracy", TEST_PREFIX + "mAP50", TEST_PREFIX + "view_accuracy")
SINGLE_TASK = ("detection_only", "view_only")
LABELS = {"mAP50": "mAP50", "mAP50_95": "mAP50-95", "precision": "P", "recall": "R", "F1": "F1",
          "view_accuracy": "view acc", "view_balanced_accuracy": "view bal. acc", "train_time_s": "train time (s)",
          "train_loop_s": "train loop (s)", "step_ms": "step (ms)", "iterations_per_epoch": "it/epoch",
          "peak_rss_gb": "peak RSS (GB)", "parameters": "parameters", "gflops": "GFLOPs",
          "best_epoch": "best.pt epoch", "view_accuracy_peak": "peak view acc", "view_peak_epoch": "its epoch"}
DIGITS = {"train_time_s": 1, "train_loop_s": 1, "step_ms": 0, "iterations_per_epoch": 0, "peak_rss_gb": 2,
          "parameters": 0, "gflops": 2, "best_epoch": 1, "view_peak_epoch": 1}


def not_applicable(strategy: str, column: str) -> bool:
    """Columns that mean nothing for a strategy: detection for view_only, view for detection_only."""
    column = column.removeprefix(TEST_PREFIX)
    detection = column in DETECTION_COLUMNS or column.startswith("AP50_")
    view = column in VIEW_COLUMNS or column.startswith("F1_")
    return (strategy == "view_only" and detection) or (strategy == "detection_only" and view)


def ordered_columns(rows: list[dict], prefix: str) -> list[str]:
    """Columns starting with `prefix`, in order of first appearance."""
    seen: list[str] = []
    for row in rows:
        for key in row:
            if key.startswith(prefix) and key not in seen:
                seen.append(key)
    return seen
