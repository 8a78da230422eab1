"""How consistent are the VIEW labels between the train and valid split? A label-noise probe.

Every model reaches only 0.61-0.70 view accuracy on valid. This script tests one
explanation without any model: frames are cut from videos, and the same clip can have
frames in both splits. If a valid frame has a near-identical train frame (same clip,
nearly the same pixels) that carries a DIFFERENT view label, no classifier can get both
right, and the valid accuracy ceiling is set by the labels, not by the model.

Method: every image is read as grayscale, shrunk to a tiny fixed size (default 64x48,
INTER_AREA), flattened and standardised (mean removed, unit norm), so the dot product of
two images is their Pearson correlation. For each labelled valid frame, the most
correlated labelled train frame is its nearest neighbour (1-NN); a k=5 majority vote is
reported too. The frames are then binned by that correlation.

How to read it:
  * The agreement table is the key output. In the >=0.99 bin the two frames are almost
    the same picture; agreement there should be ~1.0 if the labels are consistent. An
    agreement well below 1.0 at high correlation means label disagreement between
    near-duplicate frames, i.e. an accuracy ceiling no model can beat.
  * The 1-NN accuracy is a model-free baseline: a "classifier" that only copies the
    label of the most similar train frame.
  * Byte-identical pairs (same file hash in both splits) are exact duplicates; any
    disagreement there is pure label noise.
  * The clip section groups frames by video clip (file name up to '.mp4') and asks
    whether a valid frame's label matches the majority label of its clip's train frames.

    python benchmarks/view_neighbours.py [--data data/med.yaml] [--size 64 48] [--out runs/view_neighbours]
"""
from __future__ import annotations

import argparse
import csv
import hashlib
import sys
from collections import Counter, defaultdict
from pathlib import Path

import cv2
import numpy as np
from tqdm import tqdm

ROOT = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(ROOT))

from utils.data.dataset_yaml import check_dataset  # noqa: E402
from utils.data.labels import img2label_paths, read_label_file  # noqa: E402
from utils.data.sources import find_images  # noqa: E402
from utils.evaluation.view_metrics import compute_view_metrics, view_confusion  # noqa: E402

DEFAULT_EDGES = (-1.0, 0.90, 0.95, 0.97, 0.99, 1.0)  # correlation bin edges, ascending


# ------------------------------------------------------------------------------------ pure parts

def standardise(vectors: np.ndarray) -> np.ndarray:
    """Rows minus their mean, divided by their norm: then a dot product IS the Pearson correlation.

    A constant row (zero norm after centring) becomes all zeros, so it correlates 0 with
    everything instead of producing NaNs.
    """
    x = np.asarray(vectors, dtype=np.float64)
    x = x - x.mean(axis=1, keepdims=True)
    norm = np.linalg.norm(x, axis=1, keepdims=True)
    return np.divide(x, norm, out=np.zeros_like(x), where=norm > 0)


def nearest_neighbours(query: np.ndarray, reference: np.ndarray, k: int = 1) -> tuple[np.ndarray, np.ndarray]:
    """Indices [n_query, k] of the k most correlated reference rows, and those correlations.

    Both inputs must already be standardised. Sorted by decreasing correlation; ties go
    to the lower reference index (stable sort), so results are deterministic.
    """
    sims = np.asarray(query) @ np.asarray(reference).T
    k = min(k, sims.shape[1])
    order = np.argsort(-sims, axis=1, kind="stable")[:, :k]
    return order, np.take_along_axis(sims, order, axis=1)


def majority_vote(neighbour_labels: np.ndarray) -> np.ndarray:
    """Most frequent label per row of [n, k] neighbour labels (ordered nearest first).

    A tie goes to the tied label whose first occurrence is nearest, so k=1 behaviour is
    recovered when the vote is split.
    """
    votes = []
    for row in np.asarray(neighbour_labels):
        counts = Counter(row.tolist())
        best = max(counts.values())
        votes.append(next(label for label in row.tolist() if counts[label] == best))
    return np.array(votes, dtype=np.int64)


def agreement_by_bin(corr: np.ndarray, agree: np.ndarray, edges: tuple[float, ...] = DEFAULT_EDGES) -> list[dict]:
    """Per correlation bin [lo, hi): count and fraction that agree; the last bin includes hi.

    The point is to see whether agreement rises towards 1.0 as frames become identical;
    an empty bin has fraction None rather than a misleading 0. Values outside the edges
    are clipped into the end bins: a self-match computes as 1.0000000000000002 in float
    arithmetic and must not silently fall out of the top bin.
    """
    corr = np.clip(np.asarray(corr, dtype=np.float64), edges[0], edges[-1])
    agree = np.asarray(agree, dtype=bool)
    rows = []
    for i, (lo, hi) in enumerate(zip(edges[:-1], edges[1:])):
        last = i == len(edges) - 2
        mask = (corr >= lo) & ((corr <= hi) if last else (corr < hi))
        n = int(mask.sum())
        rows.append(dict(lo=lo, hi=hi, n=n, agree=int(agree[mask].sum()), frac=float(agree[mask].mean()) if n else None))
    return rows


def clip_id(file_name: str) -> str:
    """Video clip a frame came from: the name up to and including '.mp4' (else the stem)."""
    head, sep, _ = file_name.partition(".mp4")
    return head + sep if sep else Path(file_name).stem


# ------------------------------------------------------------------------------------ I/O

def load_split(images_dir: str, size: tuple[int, int], n_views: int, nc: int, desc: str) -> dict:
    """Tiny grayscale vectors, view labels (-1 = none), file names and hashes of one split."""
    files = find_images(images_dir)
    vectors, views, names, hashes = [], [], [], []
    for image_path, label_path in tqdm(list(zip(files, img2label_paths(files))), desc=desc, unit="img"):
        raw = Path(image_path).read_bytes()
        image = cv2.imdecode(np.frombuffer(raw, np.uint8), cv2.IMREAD_GRAYSCALE)
        if image is None:
            print(f"WARNING: cannot read {image_path}, skipped")
            continue
        vectors.append(cv2.resize(image, size, interpolation=cv2.INTER_AREA).astype(np.float32).ravel())
        views.append(read_label_file(label_path, nc=nc, n_views=n_views).view)
        names.append(Path(image_path).name)
        hashes.append(hashlib.sha256(raw).hexdigest())
    return dict(x=standardise(np.stack(vectors)), views=np.array(views, dtype=np.int64), names=names, hashes=hashes)


def plot_bins(rows: list[dict], path: Path) -> None:
    """Bar chart of agreement fraction per correlation bin, with the frame count on each bar."""
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    labels = [_bin_label(r) for r in rows]
    fracs = [r["frac"] if r["frac"] is not None else 0.0 for r in rows]
    fig, ax = plt.subplots(figsize=(6, 3.5))
    bars = ax.bar(labels, fracs, color="tab:blue")
    for bar, r in zip(bars, rows):
        ax.text(bar.get_x() + bar.get_width() / 2, bar.get_height() + 0.02, f"n={r['n']}", ha="center", fontsize=8)
    ax.set_ylim(0, 1.1)
    ax.set_xlabel("correlation with nearest train frame")
    ax.set_ylabel("fraction with same view label")
    ax.set_title("Valid vs nearest train frame: view-label agreement")
    fig.tight_layout()
    fig.savefig(path, dpi=120)
    plt.close(fig)


def _bin_label(row: dict) -> str:
    if row["lo"] <= -1.0:
        return f"<{row['hi']:.2f}"
    if row["hi"] >= 1.0:
        return f">={row['lo']:.2f}"
    return f"{row['lo']:.2f}-{row['hi']:.2f}"


# ------------------------------------------------------------------------------------ main

def main(argv: list[str] | None = None) -> dict:
    parser = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    parser.add_argument("--data", default="data/med.yaml")
    parser.add_argument("--size", type=int, nargs=2, default=[64, 48], metavar=("W", "H"))
    parser.add_argument("--out", default="runs/view_neighbours")
    parser.add_argument("--k", type=int, default=5, help="neighbours in the majority vote")
    opt = parser.parse_args(argv)
    cv2.setNumThreads(1)

    data = check_dataset(opt.data)
    names = data["cls_names"]
    if not names:
        raise SystemExit(f"{opt.data} declares no cls_names: no view task to measure")
    n_views, nc, size = len(names), data["nc"], (opt.size[0], opt.size[1])
    train = load_split(data["train"], size, n_views, nc, "train")
    valid = load_split(data["val"], size, n_views, nc, "valid")

    t_idx = np.flatnonzero(train["views"] >= 0)
    v_idx = np.flatnonzero(valid["views"] >= 0)
    print(f"\ntrain: {len(train['names'])} images, {len(t_idx)} with a view label;"
          f" valid: {len(valid['names'])} images, {len(v_idx)} with a view label; size {size[0]}x{size[1]}")
    print("view counts  train: " + ", ".join(f"{n}={int((train['views'] == i).sum())}" for i, n in enumerate(names))
          + " | valid: " + ", ".join(f"{n}={int((valid['views'] == i).sum())}" for i, n in enumerate(names)))

    nn, corr = nearest_neighbours(valid["x"][v_idx], train["x"][t_idx], k=opt.k)
    y_true = valid["views"][v_idx]
    nn_labels = train["views"][t_idx][nn]  # [n_valid, k]
    pred1, predk = nn_labels[:, 0], majority_vote(nn_labels)
    corr1 = corr[:, 0]
    agree = pred1 == y_true

    print(f"\n1-NN accuracy      {agree.mean():.3f}  balanced {compute_view_metrics(y_true, pred1, n_views).balanced_accuracy:.3f}")
    print(f"{opt.k}-NN vote accuracy {(predk == y_true).mean():.3f}  balanced {compute_view_metrics(y_true, predk, n_views).balanced_accuracy:.3f}")
    chance = max(np.bincount(y_true, minlength=n_views)) / len(y_true)
    print(f"majority-class     {chance:.3f}")

    rows = agreement_by_bin(corr1, agree)
    print("\nagreement of valid label with nearest train label, by correlation")
    print(f"{'corr bin':>12} {'n':>5} {'agree':>6} {'frac':>6}")
    for r in reversed(rows):
        frac = f"{r['frac']:.3f}" if r["frac"] is not None else "   -"
        print(f"{_bin_label(r):>12} {r['n']:>5} {r['agree']:>6} {frac:>6}")

    matrix = view_confusion(y_true, pred1, n_views)
    width = max(len(n) for n in names) + 2
    print("\nconfusion (rows: valid label, cols: nearest-train label)")
    print(" " * width + "".join(f"{n:>{width}}" for n in names))
    for i, n in enumerate(names):
        print(f"{n:>{width}}" + "".join(f"{v:>{width}}" for v in matrix[i]))

    # exact duplicates across splits, by file hash
    by_hash: dict[str, list[int]] = defaultdict(list)
    for i, h in enumerate(train["hashes"]):
        by_hash[h].append(i)
    pairs = [(vi, ti) for vi, h in enumerate(valid["hashes"]) for ti in by_hash.get(h, [])]
    labelled = [(vi, ti) for vi, ti in pairs if valid["views"][vi] >= 0 and train["views"][ti] >= 0]
    disagree = [(vi, ti) for vi, ti in labelled if valid["views"][vi] != train["views"][ti]]
    print(f"\nbyte-identical train/valid pairs: {len(pairs)} ({len(labelled)} both labelled, {len(disagree)} disagree on view)")
    for vi, ti in disagree[:10]:
        print(f"  {valid['names'][vi]} [{names[valid['views'][vi]]}] == {train['names'][ti]} [{names[train['views'][ti]]}]")

    # video clips shared across splits
    train_clip_views: dict[str, list[int]] = defaultdict(list)
    for i in t_idx:
        train_clip_views[clip_id(train["names"][i])].append(int(train["views"][i]))
    mixed = {c: v for c, v in train_clip_views.items() if len(set(v)) > 1}
    valid_clips = {clip_id(valid["names"][i]) for i in v_idx}
    shared = valid_clips & set(train_clip_views)
    in_train = np.array([clip_id(valid["names"][i]) in train_clip_views for i in v_idx])
    clip_vote = np.array([Counter(train_clip_views[clip_id(valid["names"][i])]).most_common(1)[0][0]
                          if ok else -1 for i, ok in zip(v_idx, in_train)])
    same_clip = np.array([clip_id(valid["names"][v_idx[j]]) == clip_id(train["names"][t_idx[nn[j, 0]]])
                          for j in range(len(v_idx))])
    print(f"\nclips: train {len(train_clip_views)}, valid {len(valid_clips)}, shared {len(shared)};"
          f" train clips with mixed view labels: {len(mixed)}")
    print(f"valid frames whose clip has labelled train frames: {int(in_train.sum())}/{len(v_idx)};"
          f" their label == clip's train majority: {(clip_vote[in_train] == y_true[in_train]).mean():.3f}")
    print(f"nearest train frame is from the same clip: {int(same_clip.sum())}/{len(v_idx)};"
          f" agreement then {agree[same_clip].mean() if same_clip.any() else float('nan'):.3f},"
          f" otherwise {agree[~same_clip].mean() if (~same_clip).any() else float('nan'):.3f}")
    valid_clip_views: dict[str, list[int]] = defaultdict(list)
    for i in v_idx:
        valid_clip_views[clip_id(valid["names"][i])].append(int(valid["views"][i]))
    mixed_valid = sum(len(set(v)) > 1 for v in valid_clip_views.values())
    clip_matrix = view_confusion(
        [Counter(valid_clip_views[c]).most_common(1)[0][0] for c in sorted(shared)],
        [Counter(train_clip_views[c]).most_common(1)[0][0] for c in sorted(shared)], n_views)
    print(f"valid clips with mixed view labels: {mixed_valid}/{len(valid_clip_views)};"
          f" shared clips whose valid majority == train majority: {int(np.trace(clip_matrix))}/{len(shared)}")
    print("clip-level confusion over shared clips (rows: valid majority, cols: train majority)")
    print(" " * width + "".join(f"{n:>{width}}" for n in names))
    for i, n in enumerate(names):
        print(f"{n:>{width}}" + "".join(f"{v:>{width}}" for v in clip_matrix[i]))
    for clip, views in sorted(mixed.items(), key=lambda kv: -len(kv[1]))[:5]:
        print(f"  mixed train clip {clip}: " + ", ".join(f"{names[v]}={c}" for v, c in sorted(Counter(views).items())))

    print("\n10 highest-correlation disagreeing pairs")
    print(f"{'corr':>7}  {'valid file':<44} {'label':<5}  {'train file':<44} {'label':<5}")
    for j in [j for j in np.argsort(-corr1, kind="stable") if not agree[j]][:10]:
        vi, ti = v_idx[j], t_idx[nn[j, 0]]
        print(f"{corr1[j]:7.4f}  {valid['names'][vi]:<44} {names[y_true[j]]:<5}  {train['names'][ti]:<44} {names[pred1[j]]:<5}")

    out = Path(opt.out)
    out.mkdir(parents=True, exist_ok=True)
    csv_path, png_path = out / "view_neighbours.csv", out / "agreement_by_corr.png"
    with open(csv_path, "w", newline="") as f:
        writer = csv.writer(f)
        writer.writerow(["file", "view", "nn_train_file", "nn_view", "corr", "agree", "same_clip"])
        for j, vi in enumerate(v_idx):
            writer.writerow([valid["names"][vi], names[y_true[j]], train["names"][t_idx[nn[j, 0]]],
                             names[pred1[j]], f"{corr1[j]:.5f}", int(agree[j]), int(same_clip[j])])
    plot_bins(rows, png_path)
    print(f"\nwrote {csv_path} and {png_path}")
    return dict(acc1=float(agree.mean()), acck=float((predk == y_true).mean()), bins=rows)


if __name__ == "__main__":
    main()
