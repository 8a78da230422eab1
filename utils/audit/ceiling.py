"""The view-label ceiling: what copying the view of the nearest train frame scores on each held-out split.

No model is involved: for each labelled frame of a held-out split, the train frame with the most
correlated signature (utils.audit.signatures) lends its view. Where frames come from videos and the
same video sits in both splits, a real model can do little better than this copy, and little worse:
so when the copy scores about what every trained model scores, the labels, not the network, set
the ceiling; and when near-identical frames disagree, no classifier can get both right.
"""
from __future__ import annotations

from collections import Counter
from dataclasses import dataclass, field
from pathlib import Path

import numpy as np

from utils.audit.records import AuditData
from utils.audit.signatures import nearest_neighbours
from utils.evaluation.view_metrics import compute_view_metrics, view_confusion

BIN_EDGES = (-1.0, 0.90, 0.95, 0.97, 0.99, 1.0)  # correlation bins of the agreement table, ascending
K_VOTE = 5  # neighbours in the majority-vote variant
NEAR = BIN_EDGES[1]  # a nearest train frame this correlated is the same scene (video); below, another one


def majority_vote(neighbour_labels: np.ndarray) -> np.ndarray:
    """Most frequent label per row of [n, k] neighbour labels (ordered nearest first).

    A tie goes to the tied label whose first occurrence is nearest, so k=1 behaviour is recovered
    when the vote is split.
    """
    votes = []
    for row in np.asarray(neighbour_labels):
        counts = Counter(row.tolist())
        best = max(counts.values())
        votes.append(next(label for label in row.tolist() if counts[label] == best))
    return np.array(votes, dtype=np.int64)


def agreement_by_bin(corr: np.ndarray, agree: np.ndarray, edges: tuple[float, ...] = BIN_EDGES) -> list[dict]:
    """Per correlation bin [lo, hi): count and fraction that agree; the last bin includes hi.

    The point is to see whether agreement rises towards 1.0 as frames become identical; an empty
    bin has fraction None rather than a misleading 0. Values outside the edges are clipped into the
    end bins: a self-match computes as 1.0000000000000002 and must not fall out of the top bin.
    """
    corr = np.clip(np.asarray(corr, dtype=np.float64), edges[0], edges[-1])
    agree = np.asarray(agree, dtype=bool)
    rows = []
    for i, (lo, hi) in enumerate(zip(edges[:-1], edges[1:])):
        last = i == len(edges) - 2
        mask = (corr >= lo) & ((corr <= hi) if last else (corr < hi))
        n = int(mask.sum())
        frac = float(agree[mask].mean()) if n else None
        rows.append(dict(lo=lo, hi=hi, n=n, agree=int(agree[mask].sum()), frac=frac))
    return rows


def bin_label(row: dict) -> str:
    """'>=0.99', '0.95-0.97', '<0.90'."""
    if row["lo"] <= -1.0:
        return f"<{row['hi']:.2f}"
    if row["hi"] >= 1.0:
        return f">={row['lo']:.2f}"
    return f"{row['lo']:.2f}-{row['hi']:.2f}"


@dataclass
class Ceiling:
    """The nearest-train-frame copy on one held-out split."""

    split: str
    n: int  # labelled frames of the split
    n_train: int  # labelled train frames copied from
    accuracy: float
    balanced: float
    accuracy_k: float
    balanced_k: float
    majority_view: int  # train's most frequent view
    majority_rate: float  # share of the split carrying it (always answering that view)
    bins: list[dict]
    confusion: np.ndarray  # rows: the split's label, columns: the copied label
    query: np.ndarray  # record indices of the split's labelled frames
    neighbour: np.ndarray  # record index of each one's nearest train frame
    corr: np.ndarray
    same_video: np.ndarray | None = None  # bool per frame: the nearest train frame is from its video
    videos: dict = field(default_factory=dict)  # video-level figures, see video_figures


def compute_ceilings(data: AuditData, videos: list[str] | None, k: int = K_VOTE) -> list[Ceiling]:
    """A Ceiling per held-out split with view labels; none without a view task or labelled train frames."""
    if not data.cls_names:
        return []
    n_views = len(data.cls_names)
    records = data.records
    views = np.array([r.view for r in records], dtype=np.int64)
    train = np.array([r.index for r in records if r.split == "train" and r.view >= 0], dtype=np.int64)
    if not len(train):
        return []
    majority = int(np.bincount(views[train], minlength=n_views).argmax())
    result = []
    for split in dict.fromkeys(r.split for r in records if r.split != "train"):
        query = np.array([r.index for r in records if r.split == split and r.view >= 0], dtype=np.int64)
        if not len(query):
            continue
        nn, corr = nearest_neighbours(data.signatures[query], data.signatures[train], k=k)
        truth, copied = views[query], views[train][nn]
        pred1, predk = copied[:, 0], majority_vote(copied)
        m1, mk = compute_view_metrics(truth, pred1, n_views), compute_view_metrics(truth, predk, n_views)
        ceiling = Ceiling(split=split, n=len(query), n_train=len(train), accuracy=float((pred1 == truth).mean()),
                          balanced=float(m1.balanced_accuracy), accuracy_k=float((predk == truth).mean()),
                          balanced_k=float(mk.balanced_accuracy), majority_view=majority,
                          majority_rate=float((truth == majority).mean()),
                          bins=agreement_by_bin(corr[:, 0], pred1 == truth),
                          confusion=view_confusion(truth, pred1, n_views), query=query, neighbour=train[nn[:, 0]],
                          corr=corr[:, 0])
        if videos is not None:
            ceiling.same_video = np.array([videos[q] == videos[t] for q, t in zip(query, ceiling.neighbour)])
            ceiling.videos = video_figures(views, videos, train, query)
        result.append(ceiling)
    return result


def _majorities(views: np.ndarray, videos: list[str], indices: np.ndarray) -> dict[str, int]:
    """Each video's most frequent view among `indices` (a tie goes to the lower view index)."""
    counts: dict[str, Counter] = {}
    for i in indices:
        counts.setdefault(videos[i], Counter())[int(views[i])] += 1
    return {v: min(c, key=lambda view: (-c[view], view)) for v, c in counts.items()}


def video_figures(views: np.ndarray, videos: list[str], train: np.ndarray, query: np.ndarray) -> dict:
    """How the held-out frames relate to their video's train frames.

    frames_with_video_in_train, agree_with_video_majority (frames whose label is their video's train
    majority), shared (videos in both), same_majority (shared videos whose majorities agree).
    """
    train_major, query_major = _majorities(views, videos, train), _majorities(views, videos, query)
    inside = [i for i in query if videos[i] in train_major]
    shared = sorted(set(train_major) & set(query_major))
    return {
        "frames_with_video_in_train": len(inside),
        "agree_with_video_majority": sum(int(views[i]) == train_major[videos[i]] for i in inside),
        "shared": len(shared),
        "same_majority": sum(train_major[v] == query_major[v] for v in shared),
        "videos_in_split": len(query_major),
    }


def split_ceilings(data_yaml: str | Path) -> dict[str, dict[str, float]]:
    """{held-out split: accuracy, balanced, majority_rate, n} of the nearest-train-frame copy for a dataset YAML.

    The model-free part of `python -m utils.audit` that other tools print beside a view accuracy (the
    comparison's report): empty without a view task. Reads every image once (seconds to a minute).
    near_share: the share of frames whose nearest train frame correlates >= NEAR. The copy bounds a model
    only where most frames have such a twin; on a patient-grouped split it is a memorisation baseline.
    """
    from utils.audit.records import load_records
    from utils.data.dataset_yaml import check_dataset
    from utils.data.groups import dataset_splits

    dataset = check_dataset(data_yaml)
    cls_names = dataset.get("cls_names")
    if not cls_names:
        return {}
    records, signatures = load_records(dataset_splits(dataset), dataset["nc"], len(cls_names))
    data = AuditData(records, signatures, dataset["names"], cls_names, dataset["path"])
    return {c.split: {"accuracy": c.accuracy, "balanced": c.balanced, "majority_rate": c.majority_rate, "n": c.n,
                      "near_share": float((c.corr >= NEAR).mean())}
            for c in compute_ceilings(data, None)}
