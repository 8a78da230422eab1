"""Groups of images (patient, video, regex), group-wise splits, overlap and duplicates across splits.

The pure logic behind `python -m utils.split` (and anything else that must not split a patient):
no file is written here.
"""
from __future__ import annotations

import hashlib
import os
import random
import re
from collections import Counter
from dataclasses import dataclass
from pathlib import Path
from typing import Iterable, Mapping

import yaml

from utils.data.dataset_yaml import SPLIT_KEYS, DatasetError
from utils.data.labels import img2label_paths, read_label_file
from utils.data.sources import find_images
from utils.paths import ROOT

BY_CHOICES = ("patient", "video", "image")
GROUP_WORD = {"patient": "patients", "video": "videos", "image": "images", "regex": "groups"}
VIDEO_MARK = ".mp4-"
FILL_ORDER = ("test", "val")  # the held-out splits are filled first; train takes every group left


class SplitError(DatasetError):
    """Bad split arguments or file names. A ValueError (through DatasetError), so scripts
    wrapped in utils.cli.run_or_exit report it in one line instead of a traceback."""


# ----------------------------------------------------------------------------- groups

def compile_group_regex(regex: str | re.Pattern | None) -> re.Pattern | None:
    """The --group-regex pattern, compiled; it must have at least one capture group."""
    if regex is None or isinstance(regex, re.Pattern):
        return regex
    try:
        pattern = re.compile(regex)
    except re.error as error:
        raise SplitError(f"--group-regex {regex!r} is not a valid regular expression ({error})") from None
    if pattern.groups < 1:
        raise SplitError(f"--group-regex {regex!r} has no capture group: wrap the group part in (...)")
    return pattern


def check_by(by: str) -> str:
    """`by` itself if it is a known grouping, else a SplitError naming --by."""
    if by not in BY_CHOICES:
        raise SplitError(f"--by {by!r} is unknown: choose one of {', '.join(BY_CHOICES)} (or give --group-regex)")
    return by


def group_of(path: str | Path, by: str = "patient", regex: str | re.Pattern | None = None) -> str:
    """The group of one image, taken from its file name (stem plus suffix).

    patient: the part before the first '-'; video: the part before '.mp4-' (`<patient>-<video>`);
    image: the file name itself. A `regex` overrides `by`: its first capture group, found with
    re.search (anchor it with ^ if needed). A name that does not fit raises SplitError naming it.
    """
    name = Path(path).name
    pattern = compile_group_regex(regex)
    if pattern is not None:
        match = pattern.search(name)
        if match is None or not match.group(1):
            raise SplitError(f"--group-regex {pattern.pattern!r} does not match the file name {name} ({path})")
        return match.group(1)
    check_by(by)
    if by == "patient":
        group, dash, _ = name.partition("-")
        if not dash or not group:
            raise SplitError(f"--by patient: file name {name} ({path}) has no '<patient>-' prefix; use --group-regex")
        return group
    if by == "video":
        group, mark, _ = name.partition(VIDEO_MARK)
        if not mark or not group:
            raise SplitError(f"--by video: file name {name} ({path}) has no '{VIDEO_MARK}'; use --group-regex")
        return group
    return name


def group_images(
    images: Iterable[str], by: str = "patient", regex: str | re.Pattern | None = None
) -> dict[str, list[str]]:
    """{group: sorted image paths}, groups in sorted order."""
    pattern = compile_group_regex(regex)
    groups: dict[str, list[str]] = {}
    for image in images:
        groups.setdefault(group_of(image, by, pattern), []).append(str(image))
    return {group: sorted(groups[group]) for group in sorted(groups)}


# ----------------------------------------------------------------------------- splitting

def check_fractions(fractions: Mapping[str, float]) -> dict[str, float]:
    """{split: fraction} for the held-out splits (val, test); each in [0, 1), together < 1."""
    checked = {}
    for name, value in fractions.items():
        if name not in FILL_ORDER:
            raise SplitError(
                f"unknown split {name!r}: fractions are given for {' and '.join(FILL_ORDER)}; train takes the rest"
            )
        try:
            value = float(value)
        except (TypeError, ValueError):
            raise SplitError(f"--{name} {value!r} is not a number") from None
        if not 0.0 <= value < 1.0:
            raise SplitError(f"--{name} {value}: a fraction must be in [0, 1)")
        checked[name] = value
    total = sum(checked.values())
    if total >= 1.0:
        flags = " + ".join(f"--{name} {value}" for name, value in checked.items())
        raise SplitError(f"{flags} = {total:g}: the fractions must sum to less than 1 (train takes the rest)")
    return checked


def split_groups(
    groups: Mapping[str, list[str]], fractions: Mapping[str, float], seed: int = 0
) -> dict[str, list[str]]:
    """Deal whole groups out to test, val and train; return {split: sorted group names}.

    `groups` is {group: images}; `fractions` is {"val": v, "test": t} (fractions of all images),
    train takes the rest. The sorted group names are shuffled with random.Random(seed); then a
    greedy fill: test first, then val, each walks the shuffled groups still free and takes a group
    whenever that brings the split's image count closer to its target (fraction x all images),
    so groups too big for the gap are skipped and smaller ones later in the order fill it.
    A split with a fraction > 0 gets at least one group (the smallest free one if none fitted),
    and at least one group is always left for each split still to fill, train included.
    """
    fractions = check_fractions(fractions)
    sizes = {group: len(images) for group, images in groups.items()}
    total = sum(sizes.values())
    held_out = [name for name in FILL_ORDER if fractions.get(name, 0.0) > 0]
    if len(sizes) < len(held_out) + 1:
        wanted = ", ".join(["train", *held_out])
        raise SplitError(f"only {len(sizes)} group(s): cannot give each of {wanted} at least one whole group")

    free = sorted(sizes)
    random.Random(seed).shuffle(free)
    result: dict[str, list[str]] = {name: [] for name in ("train", "val", "test")}
    for i, name in enumerate(held_out):
        keep_back = len(held_out) - i  # one group at least for each later split (and train)
        target = fractions[name] * total
        chosen: list[str] = []
        count = 0
        for group in free:
            if len(free) - len(chosen) - 1 < keep_back:
                break
            if abs(count + sizes[group] - target) < abs(count - target):
                chosen.append(group)
                count += sizes[group]
        if not chosen:  # target below half the smallest group: still hold out one group
            chosen = [min(free, key=lambda g: sizes[g])]
        taken = set(chosen)
        free = [group for group in free if group not in taken]
        result[name] = sorted(chosen)
    result["train"] = sorted(free)
    return result


def split_images(groups: Mapping[str, list[str]], assignment: Mapping[str, list[str]]) -> dict[str, list[str]]:
    """{split: sorted image paths} from {group: images} and split_groups' {split: groups}."""
    return {name: sorted(image for group in names for image in groups[group]) for name, names in assignment.items()}


# ----------------------------------------------------------------------------- overlap

@dataclass
class Overlap:
    """Groups of split `second` that also occur in split `first`, and the images involved."""

    first: str
    second: str
    groups_first: int  # distinct groups in `first`
    groups_second: int  # distinct groups in `second`
    shared_groups: int  # groups in both
    images_first: int
    images_second: int
    shared_images_first: int  # images of `first` whose group is also in `second`
    shared_images_second: int  # images of `second` whose group is also in `first`


def overlap(
    splits: Mapping[str, list[str]], by: str = "patient", regex: str | re.Pattern | None = None
) -> list[Overlap]:
    """One Overlap per pair of splits, in the given order (train/val, train/test, val/test)."""
    pattern = compile_group_regex(regex)
    names = [name for name in splits]
    grouped = {name: [group_of(image, by, pattern) for image in splits[name]] for name in names}
    result = []
    for i, first in enumerate(names):
        for second in names[i + 1:]:
            set_first, set_second = set(grouped[first]), set(grouped[second])
            shared = set_first & set_second
            result.append(Overlap(
                first=first,
                second=second,
                groups_first=len(set_first),
                groups_second=len(set_second),
                shared_groups=len(shared),
                images_first=len(grouped[first]),
                images_second=len(grouped[second]),
                shared_images_first=sum(group in shared for group in grouped[first]),
                shared_images_second=sum(group in shared for group in grouped[second]),
            ))
    return result


def file_hash(path: str | Path) -> str:
    """Hex digest of a file's bytes (blake2b, 128 bits)."""
    digest = hashlib.blake2b(digest_size=16)
    with open(path, "rb") as file:
        for block in iter(lambda: file.read(1 << 20), b""):
            digest.update(block)
    return digest.hexdigest()


def duplicates(splits: Mapping[str, list[str]]) -> dict[tuple[str, str], list[tuple[str, str]]]:
    """Byte-identical images: {(first, second): [(image of second, an identical image of first)]}.

    A pair (name, name) lists the copies inside one split (each later copy with its first copy).
    """
    hashes = {image: file_hash(image) for name in splits for image in splits[name]}
    first_of: dict[str, dict[str, str]] = {}  # split -> {hash: first image with it}
    result: dict[tuple[str, str], list[tuple[str, str]]] = {}
    names = list(splits)
    for name in names:
        seen: dict[str, str] = {}
        within = []
        for image in sorted(splits[name]):
            digest = hashes[image]
            if digest in seen:
                within.append((image, seen[digest]))
            else:
                seen[digest] = image
        first_of[name] = seen
        result[(name, name)] = within
    for i, first in enumerate(names):
        for second in names[i + 1:]:
            result[(first, second)] = [
                (image, first_of[first][hashes[image]]) for image in sorted(splits[second])
                if hashes[image] in first_of[first]
            ]
    return result


# ----------------------------------------------------------------------------- dataset I/O

def dataset_splits(data: dict) -> dict[str, list[str]]:
    """{split: sorted absolute image paths} for the splits a checked dataset dict names."""
    # find_images: the training loader's own rules (suffixes, .txt lists, folders)
    # absolute like the loader sees them (a .txt list may hold paths relative to the working directory)
    return {key: sorted(os.path.abspath(f) for f in find_images(data[key])) for key in SPLIT_KEYS if data.get(key)}


def label_counts(images: list[str], nc: int, n_views: int | None) -> tuple[Counter, Counter]:
    """(boxes per class, images per view index; -1 = no view) read from the images' label files."""
    boxes, views = Counter(), Counter()
    for label_file in img2label_paths(images):
        parsed = read_label_file(label_file, nc, n_views)
        boxes.update(int(c) for c in parsed.boxes[:, 0])
        if n_views:
            views[parsed.view] += 1
    return boxes, views


def _dataset_roots(images: Iterable[str]) -> set[Path]:
    """Folders that hold the dataset: the parent of the last images/ folder, else the image's folder."""
    roots = set()
    for folder in {os.path.dirname(os.path.abspath(image)) for image in images}:
        parts = Path(folder).parts
        if "images" in parts:
            index = len(parts) - 1 - parts[::-1].index("images")
            roots.add(Path(*parts[:index]).resolve())
        else:
            roots.add(Path(folder).resolve())
    return roots


def check_out_folder(out: Path, images: Iterable[str], raw: dict, flag: str = "--out") -> None:
    """Refuse an output folder inside the dataset (the shared data is read-only and must stay clean).

    `flag` names the option that chose the folder in the error message."""
    roots = _dataset_roots(images)
    if raw.get("path"):
        base = Path(raw["path"])
        roots.add((base if base.is_absolute() else ROOT / base).resolve())
    target = out.resolve()
    for root in roots:
        if target == root or root in target.parents:
            raise SplitError(f"{flag} {out} is inside the dataset folder {root}: choose a folder outside it")


def write_split(out: Path, images: Mapping[str, list[str]], raw: dict, yaml_name: str, command: str) -> Path:
    """Write <out>/{train,val,test}.txt and <out>/<yaml_name>.yaml; return the YAML path."""
    out.mkdir(parents=True, exist_ok=True)
    config = {key: value for key, value in raw.items() if key not in ("path", *SPLIT_KEYS)}
    lists = {}
    for name in SPLIT_KEYS:
        listing = out / f"{name}.txt"
        paths = sorted(images.get(name, []))
        listing.write_text("".join(f"{p}\n" for p in paths), encoding="utf-8")
        lists[name] = str(listing.resolve())
    ordered = {"train": lists["train"], "val": lists["val"]}
    if images.get("test"):
        ordered["test"] = lists["test"]  # an empty test list would only make `val.py --task test` fail
    ordered.update(config)
    yaml_file = out / f"{yaml_name}.yaml"
    header = (f"# Made by: {command}\n"
              "# train/val/test list absolute image paths; labels are found beside them (images/ -> labels/).\n")
    yaml_file.write_text(header + yaml.safe_dump(ordered, sort_keys=False, allow_unicode=True), encoding="utf-8")
    return yaml_file
