"""utils/data/groups.py and utils/split.py: group-aware splits (by patient, video or regex) and the leakage check."""
from __future__ import annotations

from pathlib import Path

import pytest
import yaml

from tests.conftest import MED
from utils.data.dataset_yaml import check_dataset
from utils.data.groups import duplicates, group_images, group_of, overlap, split_groups, split_images
from utils.split import main, parse_opt

needs_med = pytest.mark.skipif(not MED.is_dir(), reason="shared med dataset not available")


def _names(patients: int, videos: int, frames: int) -> list[str]:
    """File names `p<i>-unnamed_<v>_1.mp4-<f>.png` for every patient, video and frame."""
    return [f"p{p}-unnamed_{v}_1.mp4-{f}.png" for p in range(patients) for v in range(videos) for f in range(frames)]


def _touch(folder: Path, names: list[str], labels: bool = False) -> list[str]:
    """Distinct small files named `names` in folder (plus a label file each in ../labels)."""
    folder.mkdir(parents=True, exist_ok=True)
    for name in names:
        (folder / name).write_bytes(f"not really a png: {folder / name}".encode())
        if labels:
            label_dir = folder.parent / "labels"
            label_dir.mkdir(exist_ok=True)
            (label_dir / (Path(name).stem + ".txt")).write_text("1 0.5 0.5 0.2 0.2\n\n0 1 0")
    return sorted(str(folder / name) for name in names)


def _tree(root: Path) -> list[str]:
    return sorted(str(p.relative_to(root)) for p in root.rglob("*"))


# ----------------------------------------------------------------------------- group_of

def test_group_of_patient_video_image():
    path = "/data/train/images/ZmNlwq5mZcKcwps=-unnamed_1_1.mp4-47.png"
    assert group_of(path, "patient") == "ZmNlwq5mZcKcwps="
    assert group_of(path, "video") == "ZmNlwq5mZcKcwps=-unnamed_1_1"
    assert group_of(path, "image") == "ZmNlwq5mZcKcwps=-unnamed_1_1.mp4-47.png"
    assert group_of(Path(path), "patient") == "ZmNlwq5mZcKcwps="  # a Path works too


def test_group_of_rejects_names_that_do_not_fit_and_unknown_by():
    with pytest.raises(ValueError, match=r"--by patient: file name nodash\.png"):
        group_of("/x/nodash.png", "patient")
    with pytest.raises(ValueError, match=r"--by video: file name p1-clip-3\.png"):
        group_of("/x/p1-clip-3.png", "video")
    with pytest.raises(ValueError, match=r"--by 'frame' is unknown"):
        group_of("/x/p1-v.mp4-1.png", "frame")


def test_custom_regex_groups_and_names_a_file_that_does_not_match():
    assert group_of("/x/case012_slice3.png", "patient", r"^case(\d+)_") == "012"
    assert group_of("/x/case012_slice3.png", "video", r"slice(\d)") == "3"  # the regex overrides --by
    with pytest.raises(ValueError, match=r"does not match the file name scan7\.png"):
        group_of("/x/scan7.png", "patient", r"^case(\d+)_")
    with pytest.raises(ValueError, match=r"--group-regex 'case\\\\d\+' has no capture group"):
        group_of("/x/case1.png", "patient", r"case\d+")
    with pytest.raises(ValueError, match=r"--group-regex 'case\(' is not a valid regular expression"):
        group_of("/x/case1.png", "patient", "case(")


def test_group_images_sorted_groups_and_images():
    groups = group_images(["/a/p2-v.mp4-2.png", "/a/p1-v.mp4-1.png", "/b/p2-v.mp4-1.png"], "patient")
    assert groups == {"p1": ["/a/p1-v.mp4-1.png"], "p2": ["/a/p2-v.mp4-2.png", "/b/p2-v.mp4-1.png"]}


# ----------------------------------------------------------------------------- split_groups

def _uneven_groups(n: int = 40) -> dict[str, list[str]]:
    """n patients with 1..7 images each (hand-made paths, no files needed)."""
    return {f"p{i:02d}": [f"/d/images/p{i:02d}-v.mp4-{f}.png" for f in range(1 + i % 7)] for i in range(n)}


def test_split_puts_every_group_in_one_split_and_every_image_in_one_split():
    groups = _uneven_groups()
    assignment = split_groups(groups, {"val": 0.2, "test": 0.1}, seed=3)
    assert set(assignment) == {"train", "val", "test"}
    seen = [group for names in assignment.values() for group in names]
    assert sorted(seen) == sorted(groups) and len(seen) == len(set(seen))  # each group exactly once
    images = split_images(groups, assignment)
    all_images = [image for paths in images.values() for image in paths]
    assert sorted(all_images) == sorted(p for paths in groups.values() for p in paths)
    assert len(all_images) == len(set(all_images))
    assert all(o.shared_groups == 0 for o in overlap(images, "patient"))
    assert all(images[name] == sorted(images[name]) for name in images)


def test_split_is_deterministic_for_a_seed_and_changes_with_the_seed():
    groups = _uneven_groups()
    fractions = {"val": 0.15, "test": 0.15}
    first = split_groups(groups, fractions, seed=0)
    assert split_groups(groups, fractions, seed=0) == first
    assert split_groups(dict(reversed(list(groups.items()))), fractions, seed=0) == first  # input order is irrelevant
    assert split_groups(groups, fractions, seed=1) != first


def test_fractions_are_respected_with_equal_groups():
    groups = {f"g{i:03d}": [f"/d/g{i:03d}-v.mp4-{f}.png" for f in range(5)] for i in range(100)}  # 500 images
    images = split_images(groups, split_groups(groups, {"val": 0.2, "test": 0.1}, seed=7))
    assert {name: len(paths) for name, paths in images.items()} == {"train": 350, "val": 100, "test": 50}


def test_fractions_are_approximately_respected_with_uneven_groups():
    groups = _uneven_groups(200)
    total = sum(len(v) for v in groups.values())
    for seed in range(5):
        images = split_images(groups, split_groups(groups, {"val": 0.15, "test": 0.25}, seed=seed))
        assert abs(len(images["val"]) - 0.15 * total) <= 3.5  # within half the largest group (7 images)
        assert abs(len(images["test"]) - 0.25 * total) <= 3.5


def test_zero_fraction_leaves_that_split_empty_and_small_fraction_still_gets_a_group():
    groups = _uneven_groups(10)
    assignment = split_groups(groups, {"val": 0.001, "test": 0.0}, seed=0)
    assert assignment["test"] == [] and len(assignment["val"]) == 1 and len(assignment["train"]) == 9


@pytest.mark.parametrize("fractions, message", [
    ({"val": -0.1, "test": 0.1}, r"--val -0\.1: a fraction must be in \[0, 1\)"),
    ({"val": 0.1, "test": 1.0}, r"--test 1\.0: a fraction must be in \[0, 1\)"),
    ({"val": 0.6, "test": 0.4}, r"--val 0\.6 \+ --test 0\.4 = 1: the fractions must sum to less than 1"),
    ({"val": "abc", "test": 0.1}, r"--val 'abc' is not a number"),
])
def test_bad_fractions_name_the_flag(fractions, message):
    with pytest.raises(ValueError, match=message):
        split_groups(_uneven_groups(), fractions, seed=0)


def test_too_few_groups_is_an_error():
    with pytest.raises(ValueError, match=r"only 2 group\(s\)"):
        split_groups(_uneven_groups(2), {"val": 0.2, "test": 0.2}, seed=0)


# ----------------------------------------------------------------------------- overlap

def test_overlap_on_a_hand_made_split():
    splits = {
        "train": ["/d/a-v.mp4-1.png", "/d/a-v.mp4-2.png", "/d/a-w.mp4-1.png", "/d/b-v.mp4-1.png", "/d/b-v.mp4-2.png"],
        "val": ["/d/b-v.mp4-3.png", "/d/c-v.mp4-1.png", "/d/c-v.mp4-2.png", "/d/c-v.mp4-3.png", "/d/c-v.mp4-4.png"],
        "test": ["/d/c-w.mp4-1.png", "/d/d-v.mp4-1.png", "/d/d-v.mp4-2.png"],
    }
    by_pair = {(o.first, o.second): o for o in overlap(splits, "patient")}
    assert list(by_pair) == [("train", "val"), ("train", "test"), ("val", "test")]
    train_val = by_pair[("train", "val")]  # patient b is in both: 2 of its images in train, 1 in val
    assert (train_val.groups_first, train_val.groups_second, train_val.shared_groups) == (2, 2, 1)
    assert (train_val.shared_images_second, train_val.images_second) == (1, 5)
    assert (train_val.shared_images_first, train_val.images_first) == (2, 5)
    assert by_pair[("train", "test")].shared_groups == 0
    assert by_pair[("train", "test")].shared_images_second == 0
    val_test = by_pair[("val", "test")]  # patient c: 4 images in val, 1 in test
    assert (val_test.shared_groups, val_test.shared_images_second, val_test.shared_images_first) == (1, 1, 4)
    # by video the same split shares only b-v (train/val) and nothing else
    by_video = {(o.first, o.second): o.shared_groups for o in overlap(splits, "video")}
    assert by_video == {("train", "val"): 1, ("train", "test"): 0, ("val", "test"): 0}


def test_duplicates_finds_byte_identical_images(tmp_path: Path):
    train = _touch(tmp_path / "train" / "images", ["a-v.mp4-1.png", "a-v.mp4-2.png", "b-v.mp4-1.png"])
    val = _touch(tmp_path / "val" / "images", ["c-v.mp4-1.png", "c-v.mp4-2.png"])
    Path(val[1]).write_bytes(Path(train[0]).read_bytes())  # a val frame identical to a train frame
    Path(train[2]).write_bytes(Path(train[1]).read_bytes())  # and two identical train frames
    found = duplicates({"train": train, "val": val})
    assert found[("train", "val")] == [(val[1], train[0])]
    assert found[("train", "train")] == [(train[2], train[1])]
    assert found[("val", "val")] == []


# ----------------------------------------------------------------------------- command line

def _dataset(tmp_path: Path) -> tuple[Path, Path, list[str]]:
    """A tiny dataset: train and val folders sharing patient p0, and its YAML (with a `path` key)."""
    root = tmp_path / "ds"
    names = _names(patients=12, videos=2, frames=3)  # 72 images, 12 patients, 24 videos
    train = _touch(root / "train" / "images", [n for n in names if not n.endswith("-2.png")], labels=True)
    val = _touch(root / "val" / "images", [n for n in names if n.endswith("-2.png")], labels=True)
    data = tmp_path / "tiny.yaml"
    data.write_text(yaml.safe_dump({
        "path": str(root), "train": "train/images", "val": "val/images",
        "names": {0: "AR", 1: "MR"}, "cls_names": ["PSAX", "PLAX", "A4C"], "download": None, "extra": 7,
    }, sort_keys=False))
    return data, root, train + val


def test_check_reports_the_overlap_of_the_existing_split(tmp_path: Path):
    data, _, _ = _dataset(tmp_path)
    result = main(parse_opt(["--data", str(data), "--check"]))
    (pair,) = result["overlap"]
    assert (pair.first, pair.second, pair.shared_groups, pair.groups_second) == ("train", "val", 12, 12)
    assert (pair.shared_images_second, pair.images_second) == (24, 24)
    assert result["splits"] == {"train": 48, "val": 24}
    result = main(parse_opt(["--data", str(data), "--check", "--by", "image", "--duplicates"]))
    assert result["overlap"][0].shared_groups == 0
    assert all(found == [] for found in result["duplicates"].values())


def test_split_writes_lists_and_a_yaml_that_check_dataset_loads(tmp_path: Path):
    data, root, images = _dataset(tmp_path)
    before = _tree(root)
    out = tmp_path / "splits" / "tiny_video"
    result = main(parse_opt(["--data", str(data), "--by", "video", "--val", "0.25", "--test", "0.25",
                             "--seed", "5", "--out", str(out)]))
    assert _tree(root) == before  # nothing written into the dataset folder
    assert result["yaml"] == out / "tiny_video.yaml"

    raw = yaml.safe_load(result["yaml"].read_text())
    assert "path" not in raw and raw["extra"] == 7 and "download" in raw
    loaded = check_dataset(result["yaml"])
    assert loaded["names"] == {0: "AR", 1: "MR"} and loaded["cls_names"] == ["PSAX", "PLAX", "A4C"]
    lists = {}
    for name in ("train", "val", "test"):
        listing = Path(loaded[name])
        assert listing == (out / f"{name}.txt").resolve() and listing.is_file()
        lines = listing.read_text().splitlines()
        assert lines == sorted(lines) and all(Path(line).is_absolute() and Path(line).is_file() for line in lines)
        lists[name] = lines
    assert sorted(sum(lists.values(), [])) == sorted(images)  # every image exactly once
    assert [len(lists[n]) for n in ("train", "val", "test")] == [36, 18, 18]  # 24 videos of 3 frames: 12/6/6
    assert all(o.shared_groups == 0 for o in overlap(lists, "video"))

    # the loader's own discovery reads the lists back, and the check of the new YAML finds no leak
    from utils.data.sources import find_images
    assert find_images(loaded["val"]) == lists["val"]
    check = main(parse_opt(["--data", str(result["yaml"]), "--check", "--by", "video"]))
    assert all(o.shared_groups == 0 for o in check["overlap"])

    again = main(parse_opt(["--data", str(data), "--by", "video", "--val", "0.25", "--test", "0.25",
                            "--seed", "5", "--out", str(tmp_path / "again")]))
    assert again["images"] == result["images"]  # same seed, same split


def test_split_with_a_custom_regex_and_default_out(tmp_path: Path, monkeypatch):
    import utils.split as split

    root = tmp_path / "ds"
    images = _touch(root / "images", [f"case{c:02d}_slice{s}.jpg" for c in range(10) for s in range(4)])
    data = tmp_path / "cases.yaml"
    data.write_text(yaml.safe_dump({"train": str(root / "images"), "val": str(root / "images"), "names": ["x"]}))
    monkeypatch.setattr(split, "ROOT", tmp_path / "repo")  # default out goes under <ROOT>/runs/splits
    result = main(parse_opt(["--data", str(data), "--group-regex", r"^case(\d+)_", "--seed", "2"]))
    assert result["out"] == tmp_path / "repo" / "runs" / "splits" / "cases_regex_s2"
    assert sorted(sum(result["images"].values(), [])) == images  # an image named by train and val counts once
    assert all(o.shared_groups == 0 for o in overlap(result["images"], "patient", r"^case(\d+)_"))

    (root / "images" / "other.jpg").write_bytes(b"x")
    with pytest.raises(SystemExit, match=r"ERROR: --group-regex .* does not match the file name other\.jpg"):
        main(parse_opt(["--data", str(data), "--group-regex", r"^case(\d+)_", "--out", str(tmp_path / "o")]))


@pytest.mark.parametrize("flags, message", [
    (["--val", "1.5"], r"ERROR: --val 1\.5: a fraction must be in \[0, 1\)"),
    (["--val", "0.5", "--test", "0.5"], r"ERROR: --val 0\.5 \+ --test 0\.5 = 1"),
    (["--by", "frame"], r"ERROR: --by 'frame' is unknown"),
])
def test_bad_flags_exit_with_one_line(tmp_path: Path, flags, message):
    data, _, _ = _dataset(tmp_path)
    with pytest.raises(SystemExit, match=message):
        main(parse_opt(["--data", str(data), "--out", str(tmp_path / "out"), *flags]))
    assert not (tmp_path / "out").exists()


def test_out_inside_the_dataset_folder_is_refused(tmp_path: Path):
    data, root, _ = _dataset(tmp_path)
    before = _tree(root)
    with pytest.raises(SystemExit, match=r"ERROR: --out .* is inside the dataset folder"):
        main(parse_opt(["--data", str(data), "--out", str(root / "splits")]))
    assert _tree(root) == before


# ----------------------------------------------------------------------------- the real med data

@needs_med
def test_real_med_check_finds_the_known_leak_and_a_patient_split_has_none(med_root: Path, tmp_path: Path):
    check = main(parse_opt(["--data", "data/med.yaml", "--check", "--by", "patient"]))
    (pair,) = check["overlap"]  # med.yaml ships train and val only
    assert (pair.first, pair.second) == ("train", "val")
    assert (pair.shared_groups, pair.groups_second) == (33, 34)
    assert (pair.shared_images_second, pair.images_second) == (182, 183)

    result = main(parse_opt(["--data", "data/med.yaml", "--by", "patient", "--val", "0.15", "--test", "0.15",
                             "--seed", "0", "--out", str(tmp_path / "med_patient_s0")]))
    images = result["images"]
    assert sum(len(v) for v in images.values()) == 1042 + 183
    assert all(len(images[name]) > 0 for name in ("train", "val", "test"))
    assert all(str(med_root.resolve()) in path for paths in images.values() for path in paths)
    assert all(o.shared_groups == 0 and o.shared_images_second == 0 for o in result["overlap"])
    recheck = main(parse_opt(["--data", str(result["yaml"]), "--check"]))
    assert all(o.shared_groups == 0 for o in recheck["overlap"])
