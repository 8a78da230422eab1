"""Group-aware dataset splits: check a split for leakage, or make a new one by patient or video.

The med data's file names are `<patient>-<video>.mp4-<frame>.png`, and the shipped split puts
frames of the same patient in train and val, so validation scores are optimistic. This tool
regroups every image the dataset YAML names (train, val and test) and deals out whole groups.

    python -m utils.split --data data/med.yaml --check                 # overlap of the shipped split
    python -m utils.split --data data/med.yaml --check --by video --duplicates
    python -m utils.split --data data/med.yaml --by patient --val 0.15 --test 0.15 --seed 0
    python train.py --data runs/splits/med_patient_s0/med_patient_s0.yaml ...

Groups: --by patient = the file name up to its first '-'; --by video = the file name up to
'.mp4-' (`<patient>-<video>`); --by image = every image its own group (a plain random split);
--group-regex REGEX overrides --by: the first capture group of re.search(REGEX, file name).

A new split writes <out>/train.txt, val.txt, test.txt (sorted absolute image paths; labels are
found by the usual images/ -> labels/ rule, so they stay in the shared dataset folder) and
<out>/<out name>.yaml: the original YAML's keys without `path`, with train/val/test pointing at
the lists. Nothing is ever written into the dataset folder. Re-running with the same arguments
overwrites <out> with the same content.
"""
from __future__ import annotations

import argparse
import shlex
from pathlib import Path
from typing import Mapping

import yaml

from utils.cli import run_or_exit
from utils.data.dataset_yaml import check_dataset
from utils.data.groups import (BY_CHOICES, GROUP_WORD, Overlap, check_by, check_fractions,
                               check_out_folder, compile_group_regex, dataset_splits, duplicates, group_images,
                               group_of, label_counts, overlap, split_groups, split_images, write_split)
from utils.logger import LOGGER
from utils.paths import ROOT

# ----------------------------------------------------------------------------- reports

def _overlap_lines(pairs: list[Overlap], word: str) -> list[str]:
    lines = []
    for o in pairs:
        lines.append(
            f"{o.second}: {o.shared_groups} of {o.groups_second} {word} ({o.shared_images_second} of "
            f"{o.images_second} images) also in {o.first} ({o.shared_images_first} of {o.images_first} "
            f"{o.first} images)"
        )
    return lines


def _table(
    images: Mapping[str, list[str]], by: str, regex, names: dict[int, str], cls_names: list[str] | None
) -> list[str]:
    """Per split: images, share of all images, groups, boxes per class and images per view."""
    total = sum(len(v) for v in images.values()) or 1
    word = GROUP_WORD["regex" if regex else by]
    pattern = compile_group_regex(regex)
    header = ["split", "images", "share", word] + [names[i] for i in sorted(names)]
    if cls_names:
        header += [*cls_names, "no view"]
    rows = []
    for name, paths in images.items():
        boxes, views = label_counts(paths, len(names), len(cls_names) if cls_names else None)
        row = [name, str(len(paths)), f"{len(paths) / total:.3f}", str(len({group_of(p, by, pattern) for p in paths}))]
        row += [str(boxes[i]) for i in sorted(names)]
        if cls_names:
            row += [str(views[i]) for i in range(len(cls_names))] + [str(views[-1])]
        rows.append(row)
    widths = [max(len(r[i]) for r in [header, *rows]) for i in range(len(header))]

    def fmt(row: list[str]) -> str:  # split name left-aligned, numbers right-aligned
        return "  ".join(c.ljust(w) if i == 0 else c.rjust(w) for i, (c, w) in enumerate(zip(row, widths)))

    return [fmt(header), *[fmt(r) for r in rows]]


# ----------------------------------------------------------------------------- command line

def parse_opt(argv: list[str] | None = None) -> argparse.Namespace:
    p = argparse.ArgumentParser(prog="python -m utils.split", description=__doc__.split("\n\n")[0])
    p.add_argument("--data", type=str, required=True, help="dataset.yaml path (a bare name is looked up in data/)")
    p.add_argument("--by", type=str, default="patient", help=f"group by: {', '.join(BY_CHOICES)} (default patient)")
    p.add_argument("--group-regex", type=str, default=None,
                   help="override --by: the first capture group of this regex, searched in the file name")
    p.add_argument("--val", type=float, default=0.15, help="fraction of all images for val, in [0, 1)")
    p.add_argument("--test", type=float, default=0.15, help="fraction of all images for test, in [0, 1)")
    p.add_argument("--seed", type=int, default=0, help="seed of the group shuffle")
    p.add_argument("--out", type=str, default=None, help="output folder (default runs/splits/<yaml stem>_<by>_s<seed>)")
    p.add_argument("--check", action="store_true", help="only report the group overlap of the YAML's own splits")
    p.add_argument("--duplicates", action="store_true", help="also report byte-identical images across splits")
    return p.parse_args(argv)


def run(opt: argparse.Namespace) -> dict:
    """--check: report overlaps; otherwise make, write and report a new split. Returns what it found."""
    regex = compile_group_regex(opt.group_regex)
    by = check_by(opt.by)
    word = GROUP_WORD["regex" if regex else by]
    data = check_dataset(opt.data)
    yaml_file = Path(data["yaml_file"])
    source = dataset_splits(data)
    names, cls_names = data["names"], data.get("cls_names")

    if opt.check:
        how = f"--group-regex {regex.pattern}" if regex else f"--by {by}"
        LOGGER.info(f"{yaml_file}: overlap of its splits by {word} ({how})")
        for line in _table(source, by, regex, names, cls_names):
            LOGGER.info(line)
        pairs = overlap(source, by, regex)
        for line in _overlap_lines(pairs, word):
            LOGGER.info(line)
        result = {"splits": {k: len(v) for k, v in source.items()}, "overlap": pairs}
        if opt.duplicates:
            result["duplicates"] = dups = duplicates(source)
            for (first, second), found in dups.items():
                where = f"within {first}" if first == second else f"{second} images with a copy in {first}"
                LOGGER.info(f"byte-identical duplicates, {where}: {len(found)}")
        return result

    fractions = check_fractions({"val": opt.val, "test": opt.test})
    everything = sorted({image for paths in source.values() for image in paths})  # an image named twice counts once
    label = "regex" if regex else by
    out = Path(opt.out) if opt.out else ROOT / "runs" / "splits" / f"{yaml_file.stem}_{label}_s{opt.seed}"
    raw = yaml.safe_load(yaml_file.read_text(encoding="utf-8"))
    check_out_folder(out, everything, raw)

    groups = group_images(everything, by, regex)
    assignment = split_groups(groups, fractions, opt.seed)
    images = split_images(groups, assignment)
    pairs = overlap(images, by, regex)
    assert all(o.shared_groups == 0 for o in pairs), "internal error: a group landed in two splits"
    if fractions["val"] == 0:
        LOGGER.warning("WARNING ⚠️ --val 0: the val list is empty, and train.py needs a non-empty val split")

    flags = ["--data", opt.data, *(["--group-regex", opt.group_regex] if regex else ["--by", by]),
             "--val", f"{opt.val:g}", "--test", f"{opt.test:g}", "--seed", str(opt.seed), "--out", str(out)]
    command = "python -m utils.split " + " ".join(shlex.quote(str(f)) for f in flags)
    new_yaml = write_split(out, images, raw, out.name, command)
    LOGGER.info(f"{yaml_file}: {len(everything)} images in {len(groups)} {word}, split by {word} with seed {opt.seed} "
                f"(asked: val {fractions['val']:g}, test {fractions['test']:g}, train the rest)")
    for line in _table(images, by, regex, names, cls_names):
        LOGGER.info(line)
    LOGGER.info(f"no {word[:-1]} in two splits. Wrote {out}/train.txt, val.txt, test.txt and {new_yaml}")
    LOGGER.info(f"train with: python train.py --data {new_yaml}")
    return {"yaml": new_yaml, "out": out, "groups": assignment, "images": images, "overlap": pairs}


def main(opt: argparse.Namespace) -> dict:
    return run_or_exit(run, opt)


if __name__ == "__main__":
    main(parse_opt())
