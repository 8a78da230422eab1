"""Dataset YAML: lookup, path resolution, names, and errors that name the file and the problem."""
from __future__ import annotations

from pathlib import Path

import pytest
import yaml

from utils.data.dataset_yaml import DatasetError, check_dataset
from utils.paths import ROOT

MED = ROOT.parent / "shared" / "datasets" / "Regurgitation-YOLODataset-1new"


def write_yaml(folder: Path, content: dict | str, name: str = "d.yaml") -> Path:
    path = folder / name
    path.write_text(content if isinstance(content, str) else yaml.safe_dump(content))
    return path


@pytest.fixture
def split_dirs(tmp_path):
    for split in ("train", "val"):
        (tmp_path / "images" / split).mkdir(parents=True)
    return tmp_path


def test_bare_name_is_looked_up_in_data_folder():
    data = check_dataset("med.yaml")
    assert data["yaml_file"] == str(ROOT / "data" / "med.yaml")
    assert data["train"] == str((MED / "train" / "images").resolve())
    assert data["val"] == str((MED / "valid" / "images").resolve())
    assert data["test"] is None  # the test split is deliberately not shipped
    assert data["names"] == {0: "AR", 1: "MR", 2: "PR", 3: "TR"}
    assert data["nc"] == 4
    assert data["cls_names"] == ["PSAX", "PLAX", "A4C"]


def test_coco128_yaml():
    data = check_dataset("coco128.yaml")
    assert data["nc"] == 80 and len(data["names"]) == 80
    assert data["names"][0] == "person" and data["names"][79] == "toothbrush"
    assert data["cls_names"] is None
    assert data["train"] == data["val"]
    assert Path(data["train"]).is_dir()


def test_names_list_and_dict_give_the_same_mapping(split_dirs):
    common = {"path": str(split_dirs), "train": "images/train", "val": "images/val"}
    as_list = check_dataset(write_yaml(split_dirs, {**common, "names": ["a", "b"]}, "l.yaml"))
    as_dict = check_dataset(write_yaml(split_dirs, {**common, "names": {1: "b", 0: "a"}}, "m.yaml"))
    assert as_list["names"] == as_dict["names"] == {0: "a", 1: "b"}
    assert as_list["nc"] == 2


def test_paths_keep_their_shape_and_become_absolute(split_dirs):
    data = check_dataset(
        write_yaml(
            split_dirs,
            {"path": str(split_dirs), "train": ["images/train", "images/val"], "val": "images/val", "names": ["a"]},
        )
    )
    assert data["train"] == [str(split_dirs / "images" / "train"), str(split_dirs / "images" / "val")]
    assert data["val"] == str(split_dirs / "images" / "val")
    assert data["path"] == str(split_dirs)


def test_relative_path_resolves_against_repo_root(tmp_path):
    relative = Path("..") / "shared" / "datasets" / "coco128"
    data = check_dataset(
        write_yaml(
            tmp_path, {"path": str(relative), "train": "images/train2017", "val": "images/train2017", "names": ["x"]}
        )
    )
    assert data["path"] == str((ROOT / relative).resolve())


def test_missing_train_names_the_key_and_file(split_dirs):
    path = write_yaml(split_dirs, {"path": str(split_dirs), "val": "images/val", "names": ["a"]})
    with pytest.raises(DatasetError) as error:
        check_dataset(path)
    assert "'train'" in str(error.value) and str(path) in str(error.value)


def test_missing_folder_names_the_path(split_dirs):
    content = {"path": str(split_dirs), "train": "images/train", "val": "images/nope", "names": ["a"]}
    path = write_yaml(split_dirs, content)
    with pytest.raises(DatasetError) as error:
        check_dataset(path)
    assert str(split_dirs / "images" / "nope") in str(error.value) and "'val'" in str(error.value)


def test_missing_test_folder_is_an_error_only_when_declared(split_dirs):
    base = {"path": str(split_dirs), "train": "images/train", "val": "images/val", "names": ["a"]}
    assert check_dataset(write_yaml(split_dirs, base))["test"] is None
    data = check_dataset(write_yaml(split_dirs, {**base, "test": "images/test"}, "t.yaml"))
    assert data["test"] == str(split_dirs / "images" / "test")  # optional split: not checked


def test_nc_must_match_names(split_dirs):
    path = write_yaml(
        split_dirs, {"path": str(split_dirs), "train": "images/train", "val": "images/val", "names": ["a"], "nc": 3}
    )
    with pytest.raises(DatasetError, match="nc=3"):
        check_dataset(path)


def test_file_not_found_and_not_a_mapping(tmp_path):
    with pytest.raises(DatasetError, match="no_such_dataset.yaml"):
        check_dataset("no_such_dataset.yaml")
    path = write_yaml(tmp_path, "- just\n- a list\n")
    with pytest.raises(DatasetError, match="mapping") as error:
        check_dataset(path)
    assert str(path) in str(error.value)


def test_dataset_error_is_a_value_error():
    assert issubclass(DatasetError, ValueError)
