"""AP, matching, confusion matrix and fitness against hand-computed values and pycocotools."""
from __future__ import annotations

import contextlib
import io

import numpy as np
import pytest
import torch

from utils.evaluation.metrics import (
    ConfusionMatrix,
    DetectionMetrics,
    ap_per_class,
    compute_ap,
    fitness,
    match_predictions,
    smooth,
)
from utils.evaluation.plots import plot_ap_curves, plot_confusion_matrix


def test_compute_ap_perfect_detector():
    # recall [0.5, 1], precision [1, 1]; with sentinels recall [0, .5, 1, 1], precision [1, 1, 1, 0].
    # The 101-point grid reads 1 on 0..0.99 and 0 at exactly 1 (the sentinel), so the trapezoid is
    # 0.99 * 1 + 0.01 * (1 + 0) / 2 = 0.995.
    ap, envelope, recall = compute_ap(np.array([0.5, 1.0]), np.array([1.0, 1.0]))
    assert ap == pytest.approx(0.995, abs=1e-9)
    assert recall.tolist() == [0.0, 0.5, 1.0, 1.0]
    assert envelope.tolist() == [1.0, 1.0, 1.0, 0.0]


def test_compute_ap_half_found_precision_one():
    # 1 of 2 objects found, no false positive: recall [0.5], precision [1].
    # Envelope 1 up to recall 0.5, then a straight line to the sentinel (1, 0):
    # area = 0.5 * 1 + 0.5 * 0.5 = 0.75. (COCO's step interpolation gives 51/101 = 0.505 here:
    # YOLOv5's linear ramp to recall 1 is the main systematic difference, see the pycocotools test.)
    ap, _, _ = compute_ap(np.array([0.5]), np.array([1.0]))
    assert ap == pytest.approx(0.75, abs=1e-9)


def test_compute_ap_envelope_uses_best_precision_to_the_right():
    # recall [0.5, 0.5, 1], precision [1, 0.5, 2/3]: envelope [1, 1, 2/3, 2/3, 0] on recall [0, .5, .5, 1, 1].
    # Grid: 1 on 0..0.49; 2/3 at 0.5 (numpy interp takes the last of the repeated 0.5 knots) up to 0.99; 0 at 1.
    # 0.49 + 0.01*(1 + 2/3)/2 + 0.49*2/3 + 0.01*(2/3)/2 = 0.49 + 0.0083333 + 0.3266667 + 0.0033333 = 0.8283333
    ap, envelope, recall = compute_ap(np.array([0.5, 0.5, 1.0]), np.array([1.0, 0.5, 2 / 3]))
    np.testing.assert_allclose(recall, [0.0, 0.5, 0.5, 1.0, 1.0])
    np.testing.assert_allclose(envelope, [1.0, 1.0, 2 / 3, 2 / 3, 0.0])
    assert ap == pytest.approx(0.8283333, abs=1e-6)


def test_smooth_box_filter_with_edge_padding():
    # fraction 0.4 of 5 points -> window 3; padded [3, 3, 0, 0, 0, 0, 0] -> means [2, 1, 0, 0, 0]
    np.testing.assert_allclose(smooth(np.array([3.0, 0, 0, 0, 0]), 0.4), [2, 1, 0, 0, 0])
    # a spike spreads over its window: 10 / 3 on each of three points
    spike = np.array([0, 0, 0, 0, 0, 10.0, 0, 0, 0, 0])
    np.testing.assert_allclose(smooth(spike, 0.2), [0] * 4 + [10 / 3] * 3 + [0] * 3)
    assert len(smooth(np.zeros(1000), 0.1)) == 1000


def test_ap_per_class_hand_case():
    # one class, 2 labels; predictions by confidence: TP, FP, TP -> recall [.5, .5, 1], precision [1, .5, 2/3]
    tp = np.array([[True], [False], [True]])
    result = ap_per_class(tp, np.array([0.9, 0.8, 0.7]), np.array([0, 0, 0]), np.array([0, 0]))
    assert result.ap.shape == (1, 1)
    assert result.ap[0, 0] == pytest.approx(0.8283333, abs=1e-6)  # as in the compute_ap test
    # below conf 0.7 every prediction counts: P = 2/3, R = 1, F1 = 2*(2/3)/(5/3) = 0.8, the best mean F1
    assert result.p[0] == pytest.approx(2 / 3, abs=1e-3)
    assert result.r[0] == pytest.approx(1.0, abs=1e-3)
    assert result.f1[0] == pytest.approx(0.8, abs=1e-3)
    assert result.tp[0] == 2 and result.fp[0] == 1  # 2 TP at recall 1; 2 / (2/3) - 2 = 1 FP
    assert result.unique_classes.dtype.kind == "i"


def test_ap_per_class_ignores_classes_without_labels_and_keeps_iou_columns():
    tp = np.array([[1, 1, 0], [1, 0, 0], [0, 0, 0]], dtype=bool)
    result = ap_per_class(tp, np.array([0.9, 0.8, 0.7]), np.array([0, 2, 5]), np.array([0, 2, 2]))
    assert result.unique_classes.tolist() == [0, 2]  # class 5 has predictions only
    assert result.ap.shape == (2, 3)
    # class 0: one label found at IoU columns 0 and 1 -> perfect (0.995), column 2 -> 0
    np.testing.assert_allclose(result.ap[0], [0.995, 0.995, 0.0], atol=1e-9)
    # class 2: 1 of 2 labels, precision 1 -> 0.75 (see the compute_ap test) at column 0, nothing after
    np.testing.assert_allclose(result.ap[1], [0.75, 0.0, 0.0], atol=1e-9)


def test_ap_per_class_reports_pr_at_smoothed_best_f1():
    # 1 label; TP at conf 0.50 then 49 FPs at 0.49, 0.48, ... 0.01. The raw F1 peaks in a sliver just
    # under 0.50 (P ~ 1, R = 1), but that spike is narrower than the 0.1-wide smoothing window, so the
    # reported point sits further down where precision is low. Without smoothing P would be > 0.95.
    conf = np.concatenate(([0.5], np.arange(49, 0, -1) / 100))
    tp = np.zeros((50, 1), dtype=bool)
    tp[0] = True
    result = ap_per_class(tp, conf, np.zeros(50), np.zeros(1))
    assert result.r[0] == pytest.approx(1.0)
    assert result.p[0] < 0.5


def test_match_predictions_one_label_two_identical_detections():
    labels = torch.tensor([[0, 0.0, 0.0, 10.0, 10.0]])
    detections = torch.tensor([[0.0, 0.0, 10.0, 10.0, 0.9, 0], [0.0, 0.0, 10.0, 10.0, 0.8, 0]])
    correct = match_predictions(detections, labels)
    assert correct.shape == (2, 10) and correct.dtype == torch.bool
    assert correct[0].all() and not correct[1].any()


def test_match_predictions_threshold_is_inclusive_and_class_must_match():
    labels = torch.tensor([[1, 0.0, 0.0, 10.0, 10.0]])
    # (0,0)-(10,7.5) inside the label: IoU = 75 / 100 = 0.75 exactly
    detections = torch.tensor([[0.0, 0.0, 10.0, 7.5, 0.9, 1]])
    iouv = torch.tensor([0.5, 0.75, 0.76])
    assert match_predictions(detections, labels, iouv).tolist() == [[True, True, False]]
    wrong_class = detections.clone()
    wrong_class[0, 5] = 0
    assert not match_predictions(wrong_class, labels, iouv).any()
    # default 0.50:0.05:0.95 -> TP at 0.50 .. 0.70 for sure, never at 0.80 and above
    default = match_predictions(detections, labels)[0]
    assert default[:5].all() and not default[6:].any()


def test_match_predictions_label_goes_to_most_confident_detection():
    labels = torch.tensor([[0, 0.0, 0.0, 10.0, 10.0]])
    detections = torch.tensor(
        [
            [0.0, 0.0, 10.0, 6.0, 0.9, 0],  # IoU 0.6, more confident
            [0.0, 0.0, 10.0, 9.0, 0.8, 0],  # IoU 0.9
        ]
    )
    correct = match_predictions(detections, labels, torch.tensor([0.5, 0.7]))
    # at 0.5 both qualify: the confident one wins (as greedy COCO matching would); at 0.7 only the second
    assert correct.tolist() == [[True, False], [False, True]]


def test_match_predictions_two_labels_one_to_one():
    labels = torch.tensor([[0, 0.0, 0.0, 10.0, 10.0], [0, 20.0, 0.0, 30.0, 10.0]])
    detections = torch.tensor(
        [[20.0, 0.0, 30.0, 10.0, 0.7, 0], [0.0, 0.0, 10.0, 10.0, 0.6, 0], [1.0, 0.0, 10.0, 10.0, 0.5, 0]]
    )
    correct = match_predictions(detections, labels, torch.tensor([0.5]))
    assert correct[:, 0].tolist() == [True, True, False]


def test_confusion_matrix_counts():
    cm = ConfusionMatrix(nc=2, conf=0.25, iou_thres=0.45)
    labels = torch.tensor(
        [
            [0, 0.0, 0.0, 10.0, 10.0],  # A, true class 0
            [1, 20.0, 0.0, 30.0, 10.0],  # B, true class 1
            [1, 50.0, 50.0, 60.0, 60.0],  # C, true class 1, never detected
        ]
    )
    detections = torch.tensor(
        [
            [0.0, 0.0, 10.0, 10.0, 0.9, 1],  # on A but says class 1 -> confusion (pred 1, true 0)
            [20.0, 0.0, 30.0, 10.0, 0.8, 1],  # on B, right -> (1, 1)
            [80.0, 80.0, 90.0, 90.0, 0.7, 0],  # on nothing -> (pred 0, true background)
            [50.0, 50.0, 60.0, 60.0, 0.1, 1],  # on C but below conf 0.25 -> ignored, so C is missed
        ]
    )
    cm.process_batch(detections, labels)
    expected = np.zeros((3, 3))
    expected[1, 0] = 1
    expected[1, 1] = 1
    expected[0, 2] = 1
    expected[2, 1] = 1  # C: predicted background
    np.testing.assert_array_equal(cm.matrix, expected)
    tp, fp = cm.tp_fp()
    assert tp.tolist() == [0, 1] and fp.tolist() == [1, 1]  # row sums minus diagonal, background dropped


def test_confusion_matrix_without_detections_and_without_labels():
    cm = ConfusionMatrix(nc=2)
    cm.process_batch(None, torch.tensor([0.0, 1.0, 1.0]))  # class column only, as YOLOv5 val passes it
    cm.process_batch(torch.zeros((0, 6)), torch.tensor([[0, 0.0, 0.0, 5.0, 5.0]]))
    cm.process_batch(torch.tensor([[0.0, 0.0, 5.0, 5.0, 0.9, 1]]), torch.zeros((0, 5)))
    assert cm.matrix[2].tolist() == [2, 2, 0]  # missed labels
    assert cm.matrix[1, 2] == 1  # false alarm on an image with no labels


def test_fitness_weights():
    # 0*0.5 + 0*0.6 + 0.1*0.7 + 0.9*0.4 = 0.43
    assert fitness(np.array([[0.5, 0.6, 0.7, 0.4]])).tolist() == pytest.approx([0.43])
    assert fitness(np.array([0.5, 0.6, 0.7, 0.4])) == pytest.approx(0.43)


# ---------------------------------------------------------------- pycocotools cross-check

N_CLASSES, WIDTH, HEIGHT = 3, 640, 480


def _synthetic_dataset(
    seed: int, n_images: int = 20, low_score_tail: bool = True
) -> list[tuple[np.ndarray, np.ndarray]]:
    """Per image (labels [m,5] cls x1 y1 x2 y2, detections [n,6] x1 y1 x2 y2 conf cls sorted by conf).

    Detections: jittered GT (15% missed, 10% wrong class), 0-2 confident false positives and a tail of
    20-40 low-score boxes, which is what NMS at val's conf 0.001 produces.
    """
    rng = np.random.default_rng(seed)
    size = np.array([WIDTH, HEIGHT])
    data = []
    for _ in range(n_images):
        n = rng.integers(1, 6)
        wh = rng.uniform(30, 200, (n, 2))
        xy = rng.uniform(0, 1, (n, 2)) * (size - wh)
        labels = np.c_[rng.integers(0, N_CLASSES, n), xy, xy + wh]
        detections = []
        for cls, x1, y1, x2, y2 in labels:
            if rng.random() < 0.15:
                continue
            w, h = x2 - x1, y2 - y1
            jitter = rng.normal(0, 0.08, 4) * np.array([w, h, w, h])
            cls = cls if rng.random() < 0.9 else rng.integers(0, N_CLASSES)
            box = np.array([x1, y1, x2, y2]) + jitter
            detections.append([*box, rng.uniform(0.3, 1), cls])
        n_tail = rng.integers(20, 40) if low_score_tail else 0
        for n_fp, top_score in ((rng.integers(0, 3), 0.6), (n_tail, 0.05)):
            for _ in range(n_fp):
                fp_wh = rng.uniform(20, 150, 2)
                fp_xy = rng.uniform(0, 1, 2) * (size - fp_wh)
                detections.append([*fp_xy, *(fp_xy + fp_wh), rng.uniform(0.001, top_score), rng.integers(0, N_CLASSES)])
        detections = np.array(detections).reshape(-1, 6)
        data.append((labels, detections[np.argsort(-detections[:, 4])]))
    return data


def _ours(data) -> tuple[dict, DetectionMetrics]:
    metrics = DetectionMetrics(N_CLASSES)
    for labels, detections in data:
        metrics.update(torch.tensor(detections, dtype=torch.float32), torch.tensor(labels, dtype=torch.float32))
    return metrics.compute(), metrics


def _pycocotools(data) -> tuple[float, float]:
    """(mAP50, mAP50-95) from COCOeval, built in memory, one 'all' area range, no detection cap in the way."""
    from pycocotools.coco import COCO
    from pycocotools.cocoeval import COCOeval

    gt = {"images": [], "annotations": [], "categories": [{"id": c} for c in range(N_CLASSES)]}
    results = []
    for image_id, (labels, detections) in enumerate(data):
        gt["images"].append({"id": image_id, "width": WIDTH, "height": HEIGHT})
        for cls, x1, y1, x2, y2 in labels:
            box = [x1, y1, x2 - x1, y2 - y1]
            gt["annotations"].append(
                {"id": len(gt["annotations"]) + 1, "image_id": image_id, "category_id": int(cls),
                 "bbox": box, "area": box[2] * box[3], "iscrowd": 0}
            )
        for x1, y1, x2, y2, score, cls in detections:
            box = [x1, y1, x2 - x1, y2 - y1]
            results.append({"image_id": image_id, "category_id": int(cls), "bbox": box, "score": score})
    with contextlib.redirect_stdout(io.StringIO()):  # pycocotools prints progress
        coco_gt = COCO()
        coco_gt.dataset = gt
        coco_gt.createIndex()
        evaluator = COCOeval(coco_gt, coco_gt.loadRes(results), "bbox")
        evaluator.params.maxDets = [1000]  # more than any image has: nothing capped
        evaluator.params.areaRng, evaluator.params.areaRngLbl = [[0, 1e10]], ["all"]
        evaluator.evaluate()
        evaluator.accumulate()
    precision = evaluator.eval["precision"][:, :, :, 0, 0]  # [iou, recall point, class], -1 = no labels

    def mean_valid(x: np.ndarray) -> float:
        return float(x[x > -1].mean())

    return mean_valid(precision[0]), mean_valid(precision)


def _step_interpolated_map(metrics: DetectionMetrics) -> tuple[float, float]:
    """COCO's AP definition (101 recall points, envelope at the first point reaching that recall, 0 beyond the
    last recall) applied to OUR true-positive flags: isolates matching differences from interpolation ones."""
    tp = np.concatenate(metrics._correct)
    conf = np.concatenate(metrics._conf)
    pred_cls = np.concatenate(metrics._pred_cls)
    target_cls = np.concatenate(metrics._target_cls)
    order = np.argsort(-conf, kind="stable")
    tp, pred_cls = tp[order], pred_cls[order]
    ap = []
    for cls in np.unique(target_cls):
        tp_cls = tp[pred_cls == cls]
        tp_cum, fp_cum = tp_cls.cumsum(0), (~tp_cls).cumsum(0)
        recall = tp_cum / (target_cls == cls).sum()
        precision = tp_cum / (tp_cum + fp_cum)
        row = []
        for j in range(tp.shape[1]):
            envelope = np.maximum.accumulate(precision[::-1, j])[::-1]
            first = np.searchsorted(recall[:, j], np.linspace(0, 1, 101), side="left")
            row.append(np.mean([envelope[i] if i < len(envelope) else 0.0 for i in first]))
        ap.append(row)
    ap = np.array(ap)
    return float(ap[:, 0].mean()), float(ap.mean())


@pytest.mark.parametrize("seed", [0, 1, 2])
def test_map_agrees_with_pycocotools(seed):
    data = _synthetic_dataset(seed)
    ours, metrics = _ours(data)
    coco_map50, coco_map = _pycocotools(data)
    assert 0.3 < coco_map50 < 0.95  # a meaningful, imperfect detector
    # Matching: our TP flags scored COCO's way reproduce COCOeval (same one-to-one, confidence-first result
    # on these boxes; COCO could still differ when a detection's best label is taken and it falls back to
    # its second-best label, which YOLOv5 does not do).
    step_map50, step_map = _step_interpolated_map(metrics)
    assert step_map50 == pytest.approx(coco_map50, abs=1e-3)
    assert step_map == pytest.approx(coco_map, abs=1e-3)
    # Interpolation: YOLOv5 integrates a linear envelope with trapezoids and ramps from the last recall down to
    # (recall 1, precision 0), so it reads systematically a little HIGHER here; the ramp's area
    # 0.5 * (1 - max recall) * last precision is small when a low-score tail pulls the last precision down.
    assert abs(ours["map50"] - coco_map50) < 0.02
    assert abs(ours["map"] - coco_map) < 0.02
    assert ours["map50"] >= coco_map50 - 1e-3


def test_without_low_score_tail_yolov5_ap_reads_higher_than_coco():
    # Same detector, but NMS kept only confident boxes: the last precision stays high, so the linear ramp to
    # (recall 1, precision 0) adds 0.5 * (1 - max recall) * last precision, several points of mAP50.
    # This is why val runs at conf 0.001: it is a property of the formula, not of the matching.
    data = _synthetic_dataset(0, low_score_tail=False)
    ours, metrics = _ours(data)
    coco_map50, _ = _pycocotools(data)
    assert _step_interpolated_map(metrics)[0] == pytest.approx(coco_map50, abs=1e-3)
    assert ours["map50"] - coco_map50 > 0.03


def test_detection_metrics_summary_fields():
    data = _synthetic_dataset(0, n_images=5)
    ours, metrics = _ours(data)
    all_labels = np.concatenate([labels[:, 0] for labels, _ in data]).astype(int)
    assert ours["nt"].tolist() == np.bincount(all_labels, minlength=N_CLASSES).tolist()
    assert ours["seen"] == 5
    assert ours["map50"] == pytest.approx(float(np.mean(ours["ap50"])))
    assert ours["map"] <= ours["map50"]
    assert 0 <= ours["mp"] <= 1 and 0 <= ours["mr"] <= 1
    assert metrics.confusion_matrix.matrix.sum() > 0


def test_detection_metrics_empty_inputs():
    metrics = DetectionMetrics(2)
    metrics.update(torch.zeros((0, 6)), torch.tensor([[1, 0.0, 0.0, 5.0, 5.0]]))  # missed label
    metrics.update(torch.tensor([[0.0, 0.0, 5.0, 5.0, 0.9, 0]]), torch.zeros((0, 5)))  # background image
    result = metrics.compute()
    assert result["map50"] == 0.0 and result["nt"].tolist() == [0, 1]
    assert DetectionMetrics(2).compute()["map"] == 0.0  # nothing at all


def test_ap_per_class_plots(tmp_path):
    tp = np.array([[True], [False], [True]])
    result = ap_per_class(tp, np.array([0.9, 0.8, 0.7]), np.array([0, 1, 0]), np.array([0, 0, 1]),
                          names={0: "AR", 1: "MR"})
    plot_ap_curves(result, tmp_path)
    for name in ("PR_curve.png", "F1_curve.png", "P_curve.png", "R_curve.png"):
        assert (tmp_path / name).stat().st_size > 1000, name
    cm = ConfusionMatrix(2)
    cm.process_batch(torch.tensor([[0.0, 0.0, 5.0, 5.0, 0.9, 0]]), torch.tensor([[1, 0.0, 0.0, 5.0, 5.0]]))
    assert plot_confusion_matrix(cm.matrix, ["AR", "MR"], tmp_path).stat().st_size > 1000
