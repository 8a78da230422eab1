"""YOLOv5's own checkpoints (real files written by ultralytics YOLOv5): every accepted flavour loads.

Flavours: release-style nc=80 (yolov5n, yolov5s), a fine-tuned nc=4 best.pt, a last.pt with `ema` and
`optimizer` set, stripped files, and a `yolov5.`-prefixed copy (module paths renamed in its pickle).
"""
from __future__ import annotations

from collections import OrderedDict
from pathlib import Path

import pytest
import torch

from tests.yolov5_files import (COCO_N, COCO_S, MED_E20, MIDTRAINING, fixture, read_pickle, rename_modules,
                                write_with_pickle)
from utils.checkpoints import YOLOV5_SOURCE, CheckpointError, inference_state, load_checkpoint, save_checkpoint
from utils.model_loading import load_inference_model
from utils.torch_utils import count_parameters
from utils.weights.restricted import InertRecord, globals_in_file, load_restricted, record_class
from utils.weights.yolov5 import module_state, names_yolov5_classes

MED_NAMES = {0: "AR", 1: "MR", 2: "PR", 3: "TR"}


def _raw_tensor(path: Path, key: str, top: str = "model") -> torch.Tensor:
    """One tensor of the pickled module, found by walking its records by hand (dtype as saved)."""
    record = load_restricted(path)[top]
    *modules, leaf = key.split(".")
    for name in modules:
        record = record.state["_modules"][name]
        assert isinstance(record, InertRecord)
    found = record.state["_parameters"].get(leaf)
    return found if found is not None else record.state["_buffers"][leaf]


@pytest.mark.parametrize("path,params", [(COCO_N, 1_872_157), (COCO_S, 7_235_389)])
def test_release_style_nc80(path: Path, params: int):
    model, ckpt = load_inference_model(fixture(path), torch.device("cpu"), fuse=False)
    assert ckpt["source"] == YOLOV5_SOURCE and ckpt["epoch"] == -1 and ckpt["ema"] is None
    assert len(model.names) == 80 and model.names[0] == "person" and model.names[79] == "toothbrush"
    assert count_parameters(model) == params  # YOLOv5's own summary figure for this architecture
    assert model.yaml["width_multiple"] == (0.25 if path == COCO_N else 0.50)
    out = model(torch.zeros(1, 3, 64, 64))
    assert [tuple(m.shape) for m in out.det] == [(1, 3, 8, 8, 85), (1, 3, 4, 4, 85), (1, 3, 2, 2, 85)]


def test_finetuned_nc4_weights_are_the_files_own_in_float32():
    ckpt = load_checkpoint(fixture(MED_E20))
    assert ckpt["names"] == MED_NAMES and ckpt["model_yaml"]["nc"] == 4
    state = ckpt["model"]
    assert all(v.dtype in (torch.float32, torch.int64) for v in state.values())
    assert _raw_tensor(MED_E20, "model.0.conv.weight").dtype == torch.float16  # YOLOv5 saves half precision
    for key in ("model.0.conv.weight", "model.24.m.0.bias", "model.24.anchors", "model.23.cv3.bn.running_var",
                "model.8.m.0.cv2.bn.num_batches_tracked"):
        assert torch.equal(state[key], _raw_tensor(MED_E20, key).float()), key
    assert state["model.24.stride"].tolist() == [8.0, 16.0, 32.0]  # YOLOv5's plain attribute, our buffer


def test_midtraining_last_pt_prefers_ema():
    ckpt = load_checkpoint(fixture(MIDTRAINING))
    assert ckpt["epoch"] == 1 and ckpt["ema"] is not None and ckpt["ema_updates"] == 16
    assert ckpt["optimizer"] is None  # YOLOv5's optimizer cannot continue here; it is dropped
    key = "model.0.conv.weight"
    assert not torch.equal(ckpt["ema"][key], ckpt["model"][key])
    assert inference_state(ckpt) is ckpt["ema"]
    assert torch.equal(ckpt["ema"][key], _raw_tensor(MIDTRAINING, key, "ema").float())


def test_stripped_files_have_no_ema():
    for path in (MED_E20, COCO_N, COCO_S):
        ckpt = load_checkpoint(fixture(path))
        assert ckpt["ema"] is None and ckpt["epoch"] == -1 and inference_state(ckpt) is ckpt["model"]


def test_pip_package_module_paths(tmp_path: Path):
    renamed = rename_modules(read_pickle(fixture(MED_E20)), "models.", "yolov5.models.")
    path = write_with_pickle(MED_E20, tmp_path / "pip-best.pt", renamed)
    names = globals_in_file(path)
    assert "yolov5.models.yolo.DetectionModel" in names and "models.yolo.DetectionModel" not in names
    assert names_yolov5_classes(names)
    ckpt = load_checkpoint(path)
    assert ckpt["source_class"] == "yolov5.models.yolo.DetectionModel"
    original = load_checkpoint(MED_E20)["model"]
    assert ckpt["model"].keys() == original.keys()
    assert all(torch.equal(ckpt["model"][k], original[k]) for k in original)


def test_trust_weights_does_not_change_the_path(monkeypatch):
    calls = []
    real_load = torch.load

    def recording_load(*args, **kwargs):
        calls.append(kwargs.get("weights_only"))
        return real_load(*args, **kwargs)

    monkeypatch.setattr(torch, "load", recording_load)
    trusted = load_checkpoint(fixture(MED_E20), trust=True)
    assert calls and all(w is True for w in calls)  # never a plain unpickle, even when trusted
    plain = load_checkpoint(MED_E20)
    assert trusted["names"] == plain["names"] and trusted["model"].keys() == plain["model"].keys()


def test_converted_checkpoint_is_plain_data(tmp_path: Path):
    """What the project writes after starting from a YOLOv5 file still loads with weights_only=True."""
    path = tmp_path / "converted.pt"
    save_checkpoint(load_checkpoint(fixture(MIDTRAINING)), path)
    ckpt = torch.load(path, weights_only=True)
    assert ckpt["source"] == YOLOV5_SOURCE and isinstance(ckpt["model_yaml"]["backbone"], list)


def test_unsupported_yolov5_model_is_refused_clearly(tmp_path: Path):
    data = read_pickle(fixture(MED_E20))
    data = data.replace(b"cmodels.yolo\nDetectionModel\n", b"cmodels.yolo\nSegmentationModel\n")
    path = write_with_pickle(MED_E20, tmp_path / "seg.pt", data)
    with pytest.raises(CheckpointError, match=r"seg\.pt: not a usable YOLOv5 checkpoint .*SegmentationModel"):
        load_checkpoint(path)


def test_module_state_walks_records_like_state_dict():
    """Parameters and persistent buffers by dotted name; Detect's stride attribute added, anchor_grid left out."""
    def record(name: str, **state) -> InertRecord:
        made = record_class(name)()
        made.__setstate__({"_parameters": OrderedDict(), "_buffers": OrderedDict(), "_modules": OrderedDict(),
                           "_non_persistent_buffers_set": set(), **state})
        return made

    conv = record("torch.nn.modules.conv.Conv2d", _parameters=OrderedDict(weight=torch.ones(2, dtype=torch.half),
                                                                           bias=None))
    detect = record("models.yolo.Detect", _buffers=OrderedDict(anchors=torch.ones(3), anchor_grid=torch.ones(4),
                                                               scratch=torch.ones(1)),
                    _non_persistent_buffers_set={"scratch"}, _modules=OrderedDict(m=conv), stride=torch.tensor([8.0]))
    state = module_state(record("models.yolo.Model", _modules=OrderedDict({"24": detect})))
    assert sorted(state) == ["24.anchors", "24.m.weight", "24.stride"]
    assert state["24.m.weight"].dtype == torch.float32
