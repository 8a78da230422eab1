"""The audit's command line: flags, then every check in order, then issues.csv, pictures and report.md."""
from __future__ import annotations

import argparse
import csv
import os
import shlex
import sys
import time
from datetime import datetime
from pathlib import Path

import yaml

import utils.audit
from utils.audit import pictures
from utils.audit.ceiling import K_VOTE, Ceiling, bin_label, compute_ceilings
from utils.audit.clean import DEFAULT_DROP, check_drop, left_out, write_clean
from utils.audit.conflicts import BOX_IOU_THRESHOLD, conflict_issues, find_conflicts
from utils.audit.duplicates import NEAR_THRESHOLD, duplicate_issues, exact_links, find_pairs
from utils.audit.folds import TRAINERS, check_trainer_flags, plan_folds, train_and_predict
from utils.audit.groups_check import (group_records, leak_issues, leak_overlaps, mixed_view_issues, video_matrix,
                                      video_views)
from utils.audit.issues import CONFLICT_KINDS, MODEL_KINDS, file_issues, relative_name, sort_issues, write_issues_csv
from utils.audit.model_checks import model_issues, prediction_summary
from utils.audit.predict import checkpoint_info, predict_images
from utils.audit.records import AuditData, load_records
from utils.audit.report import Findings, build_report
from utils.cli import (BATCH_SIZE, FRACTION, IMAGE_SIZE, NON_NEGATIVE, POSITIVE_INTEGER, at_least,
                       check_numeric_flags, run_or_exit)
from utils.compare.report import machine_line
from utils.data.dataset_yaml import check_dataset
from utils.data.groups import BY_CHOICES, SplitError, check_out_folder, dataset_splits
from utils.logger import LOGGER
from utils.paths import ROOT, increment_path

NUMERIC_RULES = {"near_thres": FRACTION, "iou_thres": FRACTION, "folds": at_least(2), "seed": NON_NEGATIVE,
                 "imgsz": IMAGE_SIZE, "batch_size": BATCH_SIZE, "top": POSITIVE_INTEGER, "size": at_least(4),
                 "workers": NON_NEGATIVE}


def parse_args(argv: list[str] | None = None) -> tuple[argparse.Namespace, list[str]]:
    """The audit's flags, and everything after '--' (trainer flags for --folds)."""
    argv = list(sys.argv[1:] if argv is None else argv)
    extra: list[str] = []
    if "--" in argv:
        i = argv.index("--")
        argv, extra = argv[:i], argv[i + 1:]
    p = argparse.ArgumentParser(prog="python -m utils.audit", description=utils.audit.__doc__.split("\n\n")[0],
                                epilog="Trainer flags for --folds go after '--' (e.g. -- --cfg models/yolov5n.yaml "
                                       "--img 320 --epochs 10)")
    p.add_argument("--data", required=True, help="dataset YAML (a bare name is looked up in data/)")
    p.add_argument("--project", default=str(ROOT / "runs" / "audit"), help="save to project/name")
    p.add_argument("--name", default="exp", help="save to project/name")
    p.add_argument("--exist-ok", action="store_true", help="existing project/name ok, do not increment")
    p.add_argument("--by", default=None, choices=BY_CHOICES,
                   help="groups for the leakage check and --folds (default patient; skipped when names do not fit)")
    p.add_argument("--group-regex", default=None, help="override --by: first capture group of this regex")
    p.add_argument("--near-thres", type=float, default=NEAR_THRESHOLD, help="signature correlation of a near-duplicate")
    p.add_argument("--iou-thres", type=float, default=BOX_IOU_THRESHOLD, help="box IoU below which duplicates conflict")
    p.add_argument("--size", type=int, nargs=2, default=[64, 48], metavar=("W", "H"), help="signature thumbnail size")
    p.add_argument("--weights", default=None, help="checkpoint: score the labels of the splits it did not train on")
    p.add_argument("--folds", type=int, default=None, help="train K models on patient-grouped folds and score all")
    p.add_argument("--trainer", default="train.py", choices=TRAINERS, help="training script for --folds")
    p.add_argument("--reuse-folds", action="store_true",
                   help="--folds: predict with the folds' last.pt of a finished run (same --name, --exist-ok)")
    p.add_argument("--seed", type=int, default=0, help="seed of the fold deal")
    p.add_argument("--imgsz", "--img", type=int, default=None, 
                   help="--weights inference size (default: its training size)")
    p.add_argument("--batch-size", type=int, default=16, help="--weights / --folds inference batch")
    p.add_argument("--device", default="", help="cuda device, i.e. 0 or cpu")
    p.add_argument("--trust-weights", action="store_true", help="kept for compatibility: no weights file runs code here, so it changes nothing")
    p.add_argument("--write-clean", action="store_true", help="write image lists and a YAML without the flagged files")
    p.add_argument("--drop", nargs="+", default=list(DEFAULT_DROP), help="kinds --write-clean leaves out ('all')")
    p.add_argument("--top", type=int, default=24, help="suspects per contact sheet")
    p.add_argument("--workers", type=int, default=0, help="image decoding threads (0: up to 4)")
    opt = p.parse_args(argv)
    check_numeric_flags(opt, NUMERIC_RULES)
    if extra and opt.folds is None:
        raise SystemExit(f"ERROR: flags after '--' ({shlex.join(extra)}) go to the trainer, and only --folds trains")
    if opt.weights and opt.folds:
        raise SystemExit("ERROR: give --weights or --folds, not both")
    if opt.reuse_folds and not opt.folds:
        raise SystemExit("ERROR: --reuse-folds needs --folds K (the folds to reuse)")
    return opt, extra


def nearest_csv(path: Path, data: AuditData, ceiling: Ceiling) -> Path:
    """Per held-out frame: its view, the nearest train frame, that frame's view, the correlation."""
    names = data.cls_names
    with open(path, "w", newline="", encoding="utf-8") as f:
        writer = csv.writer(f)
        writer.writerow(["file", "view", "nearest_train_file", "nearest_view", "corr", "agree", "same_video"])
        for j, (q, t) in enumerate(zip(ceiling.query, ceiling.neighbour)):
            a, b = data.records[q], data.records[t]
            same = "" if ceiling.same_video is None else int(ceiling.same_video[j])
            writer.writerow([relative_name(a.path, data.root), names[a.view], relative_name(b.path, data.root),
                             names[b.view], f"{ceiling.corr[j]:.5f}", int(a.view == b.view), same])
    return path


def model_based(opt: argparse.Namespace, extra: list[str], data: AuditData, out: Path, yaml_file: str
                ) -> tuple[list, str | None, dict[str, int], dict]:
    """--weights or --folds: (issue rows, how the predictions were made, images scored per split, how good
    the predictions are)."""
    readable = [r for r in data.records if r.shape is not None]
    if opt.weights:
        info = checkpoint_info(opt.weights, opt.trust_weights)
        if info.names != data.names:
            raise SplitError(f"--weights {opt.weights}: its classes {list(info.names.values())} are not the dataset's "
                             f"{list(data.names.values())}")
        if info.view_names and data.cls_names and info.view_names != data.cls_names:
            raise SplitError(f"--weights {opt.weights}: its views {info.view_names} are not the dataset's cls_names "
                             f"{data.cls_names}")
        trained = info.trained_on
        train_yaml = trained if trained and Path(trained).is_file() else yaml_file
        # realpath: a fold's lists name links to the dataset's files (utils.audit.folds)
        seen = {os.path.realpath(p) for p in dataset_splits(check_dataset(train_yaml)).get("train", [])}
        chosen = [r for r in readable if os.path.realpath(r.path) not in seen]
        imgsz = opt.imgsz or info.imgsz or 640
        paths = sorted({r.path for r in chosen})
        LOGGER.info(f"--weights: scoring {len(paths)} images its training split ({train_yaml}) does not hold")
        by_path = dict(zip(paths, predict_images(opt.weights, paths, imgsz, opt.batch_size, opt.device,
                                                 opt.trust_weights)))
        assumed = "" if train_yaml == trained else f"; assumed, as its recorded data YAML {trained!r} is not found"
        source = f"`--weights {opt.weights}` at {imgsz} px (trained on the train split of {train_yaml}{assumed})"
        preds = [by_path[r.path] for r in chosen]
    else:
        check_trainer_flags(extra)
        grouping = group_records(readable, opt.by or "patient", opt.group_regex, strict=opt.by is not None)
        by = grouping.by if grouping.groups is not None else "image"
        images = sorted({r.path for r in readable})
        runs = plan_folds(images, by, grouping.pattern if grouping.groups is not None else None, opt.folds,
                          opt.seed, out, Path(yaml_file), opt.trainer, extra)
        by_path = train_and_predict(runs, extra, LOGGER.info, reuse=opt.reuse_folds)
        chosen = readable
        preds = [by_path[r.path][0] for r in chosen]
        word = grouping.word if grouping.groups is not None else "images"
        source = (f"out-of-fold, {opt.folds} folds by {word} (`{opt.trainer} {shlex.join(extra)}`, "
                  f"each fold's last.pt)")
    scored: dict[str, int] = {}
    for r in chosen:
        scored[r.split] = scored.get(r.split, 0) + 1
    write_predictions(out / "predictions.csv", data, chosen, preds)
    summary = prediction_summary(chosen, preds)
    return model_issues(data, [r.index for r in chosen], preds, source.split(" (")[0]), source, scored, summary


def write_predictions(path: Path, data: AuditData, records: list, preds: list) -> Path:
    """predictions.csv: per scored file its view probabilities and its boxes with conf >= 0.25 (cls:conf)."""
    with open(path, "w", newline="", encoding="utf-8") as f:
        writer = csv.writer(f)
        views = [f"p_{n}" for n in data.cls_names or []]
        writer.writerow(["file", "split", *views, "boxes"])
        for r, p in zip(records, preds):
            probs = [f"{v:.4f}" for v in p.view_probs] if views and p.view_probs is not None else [""] * len(views)
            boxes = " ".join(f"{data.names.get(int(b[5]), int(b[5]))}:{b[4]:.2f}" for b in p.boxes if b[4] >= 0.25)
            writer.writerow([relative_name(r.path, data.root), r.split, *probs, boxes])
    return path


def draw(data: AuditData, issues: list, f: Findings, out: Path, top: int) -> list[str]:
    """Contact sheets, the video heat map and the ceiling's bars; returns their names under `out`."""
    made = []
    sheets = {"sheet_conflicts.jpg": CONFLICT_KINDS, "sheet_mixed_views.jpg": ("mixed_view_group",),
              "sheet_duplicates_across.jpg": ("exact_duplicate_across", "near_duplicate_across")}
    sheets |= {f"sheet_{kind}.jpg": (kind,) for kind in MODEL_KINDS}
    for name, kinds in sheets.items():
        chosen = sorted((i for i in issues if i.kind in kinds), key=lambda i: (-i.score, i.record))
        if pictures.contact_sheet(chosen, data, out / name, top):
            made.append(name)
    if data.cls_names and f.video_table:
        splits = list(dict.fromkeys(r.split for r in data.records))
        rows, columns, matrix, total = video_matrix(f.video_table, splits, data.cls_names)
        if rows:
            title = (f"frames per view of the videos in several splits or with mixed views ({len(rows)} of {total});"
                     "\ncolour: share of the video's frames in that split")
            pictures.view_heatmap(rows, columns, matrix, out / "video_views.png", title)
            made.append("video_views.png")
    for c in f.ceilings:
        pictures.agreement_bars(c.bins, [bin_label(b) for b in c.bins], out / f"agreement_{c.split}.png", c.split)
        made.append(f"agreement_{c.split}.png")
        made.append(nearest_csv(out / f"nearest_train_{c.split}.csv", data, c).name)
    return made


def run(opt: argparse.Namespace, extra: list[str], argv: list[str]) -> Path:
    """The whole audit; returns the output folder."""
    t0 = time.perf_counter()
    drop = check_drop(opt.drop)
    dataset = check_dataset(opt.data)
    splits = dataset_splits(dataset)
    raw = yaml.safe_load(Path(dataset["yaml_file"]).read_text(encoding="utf-8"))
    out = increment_path(Path(opt.project) / opt.name, exist_ok=opt.exist_ok)
    check_out_folder(out, [p for v in splits.values() for p in v], raw, flag="--project/--name")
    out.mkdir(parents=True, exist_ok=True)
    cls_names = dataset.get("cls_names")
    records, signatures = load_records(splits, dataset["nc"], len(cls_names) if cls_names else None,
                                       tuple(opt.size), opt.workers or None)
    data = AuditData(records, signatures, dataset["names"], cls_names, dataset["path"])
    LOGGER.info(f"{dataset['yaml_file']}: " + ", ".join(f"{s} {len(v)}" for s, v in splits.items())
                + f" images read in {time.perf_counter() - t0:.1f} s")

    links = exact_links(records)
    pairs = find_pairs(data, links, opt.near_thres)
    conflicts = find_conflicts(data, pairs, opt.iou_thres)
    grouping = group_records(records, opt.by or "patient", opt.group_regex, strict=bool(opt.by or opt.group_regex))
    videos = group_records(records, "video", None, strict=False)
    if videos.groups is None and opt.group_regex:
        videos = grouping  # names without '.mp4-': the user's groups stand in for videos
    table = video_views(data, videos.groups) if videos.groups is not None else []
    issues = (file_issues(records) + duplicate_issues(data, links, pairs) + conflict_issues(data, conflicts)
              + leak_issues(data, grouping))
    if videos.groups is not None:
        issues += mixed_view_issues(data, videos.groups, table)
    ceilings = compute_ceilings(data, videos.groups, K_VOTE)
    timings = {"model-free checks": time.perf_counter() - t0}

    source, scored, summary = None, {}, {}
    if opt.weights or opt.folds:
        t1 = time.perf_counter()
        found, source, scored, summary = model_based(opt, extra, data, out, dataset["yaml_file"])
        issues += found
        timings["model-based checks"] = time.perf_counter() - t1
    issues = sort_issues(issues)
    write_issues_csv(out / "issues.csv", issues, records, data.root)

    findings = Findings(data=data, yaml_file=dataset["yaml_file"], issues=issues, pairs=pairs, conflicts=conflicts,
                        grouping=grouping, overlaps=leak_overlaps(data, grouping), videos=videos, video_table=table,
                        ceilings=ceilings, near_threshold=opt.near_thres, iou_threshold=opt.iou_thres,
                        command="python -m utils.audit " + shlex.join(argv),
                        date=datetime.now().astimezone().isoformat(timespec="seconds"),
                        machine=machine_line(opt.device), model_source=source, model_scored=scored,
                        model_summary=summary)
    if opt.write_clean:
        findings.removed = left_out(issues, drop)
        findings.clean_yaml, findings.clean_kept = write_clean(
            out / "clean", data, findings.removed, raw, f"{Path(dataset['yaml_file']).stem}_clean", findings.command)
    findings.pictures = draw(data, issues, findings, out, opt.top)
    timings["total"] = time.perf_counter() - t0
    findings.timings = timings
    (out / "report.md").write_text(build_report(findings), encoding="utf-8")
    for c in ceilings:
        LOGGER.info(f"{c.split}: copying the nearest train frame's view scores {c.accuracy:.3f} "
                    f"(balanced {c.balanced:.3f}); the majority view scores {c.majority_rate:.3f}")
    LOGGER.info(f"{len(issues)} issue rows ({len({i.record for i in issues})} files) in {timings['total']:.1f} s; "
                f"wrote {out / 'report.md'}, {out / 'issues.csv'}"
                + (f" and {findings.clean_yaml}" if findings.clean_yaml else ""))
    return out


def main(argv: list[str] | None = None) -> Path:
    argv = list(sys.argv[1:] if argv is None else argv)
    opt, extra = parse_args(argv)
    return run_or_exit(run, opt, extra, argv)
