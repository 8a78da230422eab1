"""report.md: what was checked, how, what was found (per kind and split), the ceiling, and what was left out."""
from __future__ import annotations

from collections import Counter
from dataclasses import dataclass, field
from pathlib import Path

from utils.audit.ceiling import Ceiling, bin_label
from utils.audit.conflicts import Conflict
from utils.audit.duplicates import Pair
from utils.audit.groups_check import Grouping, VideoViews
from utils.audit.issues import CONFLICT_KINDS, KINDS, MODEL_KINDS, Issue, relative_name, view_name
from utils.audit.records import AuditData
from utils.audit.signatures import SIGNATURE_SIZE
from utils.compare.report import markdown_table
from utils.data.groups import Overlap


@dataclass
class Findings:
    """Everything one audit found, as the report needs it."""

    data: AuditData
    yaml_file: str
    issues: list[Issue]
    pairs: list[Pair]
    conflicts: list[tuple[Pair, Conflict]]
    grouping: Grouping
    overlaps: list[Overlap]
    videos: Grouping
    video_table: list[VideoViews]
    ceilings: list[Ceiling]
    near_threshold: float
    iou_threshold: float
    command: str = ""
    date: str = ""
    machine: str = ""
    timings: dict[str, float] = field(default_factory=dict)
    model_source: str | None = None  # how the model-based predictions were made
    model_scored: dict[str, int] = field(default_factory=dict)  # split -> images scored by the model
    model_summary: dict = field(default_factory=dict)  # model_checks.prediction_summary
    removed: dict[int, list[Issue]] | None = None  # --write-clean: record -> why it was left out
    clean_yaml: Path | None = None
    clean_kept: dict[str, list[str]] = field(default_factory=dict)
    pictures: list[str] = field(default_factory=list)


def _splits(f: Findings) -> list[str]:
    return list(dict.fromkeys(r.split for r in f.data.records))


def summary_table(f: Findings) -> str:
    """Suspect files per kind and split (only kinds that occur; 0 elsewhere)."""
    splits = _splits(f)
    counts = Counter((i.kind, f.data.records[i.record].split) for i in f.issues)
    rows = []
    for kind, meaning in KINDS.items():
        total = sum(counts[(kind, s)] for s in splits)
        if total:
            rows.append([f"`{kind}`", meaning, *[str(counts[(kind, s)]) for s in splits], str(total)])
    if not rows:
        return "No issue found."
    return markdown_table(["kind", "what it means", *splits, "files"], rows)


def dataset_table(f: Findings) -> str:
    splits = _splits(f)
    rows = []
    for s in splits:
        rs = [r for r in f.data.records if r.split == s]
        row = [s, str(len(rs)), str(sum(len(r.boxes) for r in rs)), str(sum(not r.label_found for r in rs))]
        if f.data.cls_names:
            views = Counter(r.view for r in rs)
            row.append(", ".join(f"{n} {views[i]}" for i, n in enumerate(f.data.cls_names)) + f", none {views[-1]}")
        rows.append(row)
    header = ["split", "images", "boxes", "no label file"] + (["views"] if f.data.cls_names else [])
    return markdown_table(header, rows)


def _pair_scope(p: Pair) -> str:
    return f"{p.split_a}" if not p.across else f"{p.split_a}/{p.split_b}"


def duplicates_section(f: Findings) -> list[str]:
    exact = Counter(_pair_scope(p) for p in f.pairs if p.exact)
    near = Counter(_pair_scope(p) for p in f.pairs if not p.exact)
    order = {s: i for i, s in enumerate(_splits(f))}
    scopes = sorted(set(exact) | set(near), key=lambda s: ("/" in s, [order[x] for x in s.split("/")]))
    lines = ["## Duplicates", "",
             "Exact: the same bytes (blake2b of the file, `utils.data.groups.duplicates`, as `python -m utils.split "
             "--duplicates`). Near: different bytes, but the grey "
             f"{SIGNATURE_SIZE[0]}x{SIGNATURE_SIZE[1]} thumbnails correlate at least {f.near_threshold:g} "
             "(Pearson; blind to brightness and contrast; at 0.98 the med data's pairs all come from one video). "
             "Pairs are counted once; a set of n identical files gives n(n-1)/2 exact pairs.", ""]
    if not scopes:
        return lines + ["No duplicate or near-duplicate pair.", ""]
    rows = [[s if "/" in s else f"within {s}", str(exact[s]), str(near[s])] for s in scopes]
    lines += [markdown_table(["splits", "exact pairs", "near pairs"], rows), ""]
    same = Counter(_pair_scope(p) for p in f.pairs if f.data.records[p.a].path == f.data.records[p.b].path)
    for scope, n in same.items():
        lines += [f"{n} of the {scope} pairs are one file listed by both splits (the YAML names the same "
                  "images twice: a smoke test, not an evaluation).", ""]
    return lines


def conflicts_section(f: Findings) -> list[str]:
    lines = ["## Conflicting labels among duplicates", "",
             "A view differs (both files have one), the box classes differ, or the classes agree but a box "
             f"pair overlaps less than IoU {f.iou_threshold:g} (where a detection stops counting as the same "
             "object for mAP50).", ""]
    if not f.conflicts:
        return lines + ["No conflict.", ""]
    cols = ["exact within", "exact across", "near within", "near across"]
    counts = Counter((c.kind, ("exact " if p.exact else "near ") + ("across" if p.across else "within"))
                     for p, c in f.conflicts)
    rows = [[f"`{k}`", *[str(counts[(k, c)]) for c in cols]] for k in CONFLICT_KINDS]
    lines += [markdown_table(["pairs that disagree", *cols], rows), ""]
    exact_across = [(p, c) for p, c in f.conflicts if p.exact and p.across]
    if exact_across:
        lines += ["Byte-identical files in two splits with different labels:", ""]
        for p, c in exact_across[:20]:
            a, b = f.data.records[p.a], f.data.records[p.b]
            lines.append(f"- `{a.split}/{a.name}` == `{b.split}/{b.name}`: {c.detail}")
        lines.append("")
    return lines


def groups_section(f: Findings) -> list[str]:
    g = f.grouping
    lines = [f"## Group leakage ({g.how})", ""]
    if g.groups is None:
        return lines + [f"Skipped: {g.skipped}", ""]
    lines.append("Groups from the file name, by the rules of `python -m utils.split`.")
    lines.append("")
    for o in f.overlaps:
        lines.append(f"- {o.second}: {o.shared_groups} of {o.groups_second} {g.word} ({o.shared_images_second} of "
                     f"{o.images_second} images) also in {o.first} ({o.shared_images_first} of {o.images_first} "
                     f"{o.first} images)")
    if not f.overlaps:
        lines.append("- one split only: nothing can leak.")
    lines += ["", "A leaked image is scored by a model that has seen its patient; a grouped split "
              "(`python -m utils.split --data ... --by patient`) removes the leak.", ""]
    return lines


def videos_section(f: Findings) -> list[str]:
    lines = ["## Videos with mixed views", ""]
    if not f.data.cls_names:
        return lines + ["No view task (no `cls_names`).", ""]
    if f.videos.groups is None:
        return lines + [f"Skipped: {f.videos.skipped}", ""]
    mixed = [v for v in f.video_table if v.mixed]
    within = sum(v.mixed_within_a_split for v in mixed)
    flagged = sum(i.kind == "mixed_view_group" for i in f.issues)
    lines.append(f"{len(mixed)} of {len(f.video_table)} videos carry more than one view: {within} within one split, "
                 f"{len(mixed) - within} only across splits. {flagged} frames differ from their video's majority "
                 "view (`mixed_view_group`; the majority over all splits, a tie to the first view).")
    for v in sorted(mixed, key=lambda v: -sum(v.total().values()))[:10]:
        parts = "; ".join(f"{s}: " + ", ".join(f"{view_name(k, f.data.cls_names)} {n}" for k, n in sorted(c.items()))
                          for s, c in v.counts.items())
        lines.append(f"- `{v.video}`: {parts}")
    return lines + [""]


def ceiling_section(f: Findings) -> list[str]:
    lines = ["## The view-label ceiling", ""]
    if not f.data.cls_names:
        return lines + ["No view task (no `cls_names`).", ""]
    if not f.ceilings:
        return lines + ["No held-out split with view labels, or no labelled train frame.", ""]
    names = f.data.cls_names
    lines += ["Each labelled frame of a held-out split copies the view of its most similar train frame (the same "
              "signature as the near-duplicates). No model is trained: when trained models score about this, the "
              "labels, not the network, set the ceiling.", ""]
    rows = [[c.split, str(c.n), f"{c.accuracy:.3f}", f"{c.balanced:.3f}", f"{c.accuracy_k:.3f}",
             f"{c.majority_rate:.3f} ({view_name(c.majority_view, names)})"] for c in f.ceilings]
    lines += [markdown_table(["split", "labelled frames", "1-NN copy accuracy", "balanced", "5-NN vote",
                              "majority rate (train's most frequent view)"], rows), ""]
    for c in f.ceilings:
        lines += [f"**{c.split}**: agreement with the nearest train frame by correlation", ""]
        lines += [markdown_table(["correlation", "frames", "same view", "share"],
                                 [[bin_label(b), str(b["n"]), str(b["agree"]),
                                   "-" if b["frac"] is None else f"{b['frac']:.3f}"] for b in reversed(c.bins)]), ""]
        if c.same_video is not None:
            v = c.videos
            lines.append(f"- the nearest train frame is from the same video for {int(c.same_video.sum())} of {c.n} "
                         f"frames; {v['frames_with_video_in_train']} frames have their video in train, and "
                         f"{v['agree_with_video_majority']} of them carry that video's train majority view")
            lines.append(f"- {v['shared']} of the {v['videos_in_split']} {c.split} videos are also in train; "
                         f"{v['shared'] - v['same_majority']} of them have a different majority view in {c.split} "
                         "than in train")
        confusion = "; ".join(f"{names[i]} -> " + ", ".join(f"{names[j]} {int(n)}" for j, n in enumerate(row) if n)
                              for i, row in enumerate(c.confusion))
        lines += [f"- copied view by given view: {confusion}", ""]
    return lines


def model_section(f: Findings) -> list[str]:
    lines = ["## Model-based label issues (cleanlab)", ""]
    if f.model_source is None:
        return lines + ["Not run (opt-in: `--weights best.pt` or `--folds K`).", ""]
    scored = ", ".join(f"{s} {n}" for s, n in f.model_scored.items()) or "none"
    lines += [f"Predictions: {f.model_source}. Images scored: {scored}. View issues: `cleanlab.filter."
              "find_label_issues` (confident learning), ranked by self-confidence; box issues: "
              "`cleanlab.object_detection.filter.find_label_issues`, the kind from the lowest of its pooled "
              "overlooked / swap / badloc scores. Score = 1 - cleanlab's label quality.", ""]
    lines += _prediction_quality(f)
    splits = _splits(f)
    free = {}  # model-free findings about the label or the file (a group leak says nothing about the label)
    for i in f.issues:
        if i.kind not in MODEL_KINDS and i.kind != "group_leak":
            free.setdefault(i.record, set()).add(i.kind)
    rows = []
    for kind in MODEL_KINDS:
        found = [i for i in f.issues if i.kind == kind]
        also = [i for i in found if i.record in free]
        kinds = Counter(k for i in also for k in free[i.record])
        rows.append([f"`{kind}`", *[str(sum(f.data.records[i.record].split == s for i in found)) for s in splits],
                     f"{len(also)} of {len(found)}", ", ".join(f"{k} {n}" for k, n in kinds.most_common(4)) or "-"])
    return lines + [markdown_table(["kind", *splits, "also flagged without a model (leaks aside)", "by"], rows), ""]


def _prediction_quality(f: Findings) -> list[str]:
    """How good the judging model is, and a warning when cleanlab flags far more than label noise explains."""
    q, lines = f.model_summary, []
    if q.get("view_accuracy") is not None:
        ceiling = "; ".join(f"{c.split} 1-NN copy {c.accuracy:.3f}" for c in f.ceilings)
        lines.append(f"- the predictions' view accuracy: {q['view_accuracy']:.3f} on {q['view_n']} labelled images"
                     + (f" (model-free: {ceiling})" if ceiling else ""))
    if q.get("boxes_found") is not None:
        lines.append(f"- label boxes that a same-class prediction (conf >= 0.25) overlaps at IoU >= 0.5: "
                     f"{q['boxes_found']:.1%} of {q['boxes_n']}")
    scored = sum(f.model_scored.values())
    flagged = len({i.record for i in f.issues if i.kind in MODEL_KINDS})
    if scored and flagged / scored > 0.2:
        share = flagged / scored
        lines.append(f"- **cleanlab flags {flagged} of {scored} scored images ({share:.0%}): more than label "
                     "noise explains. A model this weak makes correct labels look wrong; trust the model-free "
                     "conflicts first, train the folds longer, or leave these kinds out of --drop.**")
    return lines + [""] if lines else []


def clean_section(f: Findings) -> list[str]:
    if f.removed is None:
        return []
    lines = ["## Left out by --write-clean", ""]
    kept = ", ".join(f"{s} {len(v)}" for s, v in f.clean_kept.items())
    lines.append(f"Wrote `{f.clean_yaml}` (images kept: {kept}); {len(f.removed)} records left out:")
    lines.append("")
    for s, v in f.clean_kept.items():
        if not v:
            lines += [f"**WARNING: {s} is empty after cleaning.**", ""]
    rows = []
    for index in sorted(f.removed, key=lambda i: f.data.records[i].order):
        r = f.data.records[index]
        why = "; ".join(f"{i.kind}: {i.evidence}" for i in f.removed[index])
        rows.append([f"`{relative_name(r.path, f.data.root)}`", r.split, why.replace("|", "/")])
    return lines + [markdown_table(["file", "split", "why"], rows) if rows else "Nothing was left out.", ""]


def build_report(f: Findings) -> str:
    """The whole report.md."""
    timing = ", ".join(f"{k} {v:.1f} s" for k, v in f.timings.items())
    lines = [f"# Dataset audit: {f.yaml_file}", "",
             f"`{f.command}`", "", f"{f.date}; {f.machine}", "", f"Time: {timing}.", "",
             "## Summary", "", "Suspect files per kind and split (one row per file and kind in `issues.csv`; "
             "score: higher = more suspect).", "", summary_table(f), "", dataset_table(f), ""]
    for section in (ceiling_section, duplicates_section, conflicts_section, groups_section, videos_section,
                    model_section, clean_section):
        lines += section(f)
    if f.pictures:
        lines += ["## Pictures", ""] + [f"- [{p}]({p})" for p in f.pictures] + [""]
    return "\n".join(lines)
