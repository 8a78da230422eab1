"""The Python API (utils/api, hubconf.py): torch.hub.load('.', 'custom', path=..., source='local') and Model
take paths, numpy arrays and PIL images, and return YOLOv5's Detections plus views, matching detect.py."""
from __future__ import annotations

import sys
from pathlib import Path

import cv2
import numpy as np
import pytest
import torch
from PIL import Image

import detect
import export
from tests.conftest import ROOT
from tests.export_models import make_checkpoints
from tests.helpers import MED_NAMES, MED_VIEWS, one_torch_thread  # noqa: F401 (a fixture)
from utils.api import Model
from utils.export.metadata import ExportedFileError

XYXY_COLUMNS = ["xmin", "ymin", "xmax", "ymax", "confidence", "class", "name"]


pytestmark = pytest.mark.usefixtures("one_torch_thread")


@pytest.fixture(scope="module")
def checkpoints(tmp_path_factory) -> dict[str, Path]:
    files = make_checkpoints(tmp_path_factory.mktemp("api"))
    for kind in ("detect", "joint"):
        export.run(export.parse_opt(["--weights", str(files[kind]), "--include", "onnx", "--imgsz", "320"]))
    return files


@pytest.fixture(scope="module")
def images(med_root) -> list[Path]:
    return sorted((med_root / "valid" / "images").glob("*.png"))[:3]


def hub_load(path: Path, monkeypatch) -> Model:
    monkeypatch.chdir(ROOT)
    monkeypatch.setattr(sys, "path", list(sys.path))  # torch.hub puts the repository first on sys.path
    return torch.hub.load(".", "custom", path=str(path), source="local", _verbose=False)


def test_hub_load_takes_paths_arrays_and_pil_images(checkpoints, images, monkeypatch, capsys, tmp_path):
    model = hub_load(checkpoints["joint"], monkeypatch)
    assert isinstance(model, Model) and model.names == dict(enumerate(MED_NAMES)) and model.view_names == MED_VIEWS
    rgb = cv2.imread(str(images[1]))[..., ::-1]
    results = model([str(images[0]), rgb, Image.open(images[2])], size=320)
    assert len(results) == 3 and results.files[0] == images[0].with_suffix(".jpg").name
    same = model([images[0], images[1], images[2]], size=320)  # the same pictures as paths give the same boxes
    for mine, theirs in zip(results.xyxy, same.xyxy):
        assert torch.allclose(mine, theirs)
    frame = results.pandas().xyxy[0]
    assert list(frame.columns) == XYXY_COLUMNS and len(frame) == len(results.xyxy[0]) > 0
    assert set(frame["name"]) <= set(MED_NAMES)
    assert all(v.name in MED_VIEWS and 0 < v.confidence <= 1 for v in results.views)
    views = results.pandas().views
    assert list(views.columns) == ["image", "view", "confidence", *MED_VIEWS] and len(views) == 3
    assert np.allclose(views[MED_VIEWS].sum(axis=1), 1, atol=1e-5)
    h, w = rgb.shape[:2]
    assert torch.allclose(results.xyxyn[1][:, :4], results.xyxy[1][:, :4] / torch.tensor([w, h, w, h]))
    results.print()
    printed = capsys.readouterr().out
    assert "image 1/3: " in printed and f"view {results.views[0].name}" in printed and "Speed:" in printed
    folder = results.save(save_dir=tmp_path / "exp")
    assert sorted(p.name for p in folder.iterdir()) == sorted(results.files)


def test_api_boxes_and_view_match_detect_py(checkpoints, images, tmp_path):
    weights = checkpoints["joint"]
    detect.run(detect.parse_opt(["--weights", str(weights), "--source", str(images[0]), "--img", "320",
                                 "--save-txt", "--save-conf", "--nosave", "--project", str(tmp_path)]))
    rows = (tmp_path / "exp" / "labels" / f"{images[0].stem}.txt").read_text().strip().split("\n\n")
    boxes = np.array([[float(v) for v in line.split()] for line in rows[0].splitlines()])
    view_probs = np.array([float(v) for v in rows[1].split()])
    results = Model(weights, device="cpu")(images[0], size=320)
    ours = results.xywhn[0].numpy()  # x, y, w, h, conf, cls; detect.py writes cls, x, y, w, h, conf (reversed order)
    ours = ours[::-1][:, [5, 0, 1, 2, 3, 4]]
    assert ours.shape == boxes.shape and np.allclose(ours, boxes, atol=1e-5)  # %g keeps 6 significant digits
    assert np.allclose(results.views[0].probabilities, view_probs, atol=1e-4)


def test_exported_file_through_the_api(checkpoints, images, monkeypatch):
    pt = Model(checkpoints["joint"], device="cpu")
    onnx_model = hub_load(checkpoints["joint"].with_suffix(".onnx"), monkeypatch)
    assert onnx_model.backend.imgsz == (320, 320) and onnx_model.view_names == MED_VIEWS
    on_onnx = onnx_model(str(images[0]))  # a fixed-size export runs at its own size
    assert on_onnx.s == (1, 3, 320, 320)
    assert len(on_onnx.xyxy[0]) and on_onnx.views[0].name in MED_VIEWS
    with pytest.raises(ExportedFileError, match="exported for 320x320"):
        onnx_model(str(images[0]), size=416)
    with pytest.raises(ExportedFileError, match="detection-only model"):
        Model(checkpoints["detect"].with_suffix(".onnx"), need_views=True)
    assert pt([str(images[0])], size=320).views[0].name == pt(str(images[0]), size=320).views[0].name


def test_refused_inputs_and_downloads(checkpoints, monkeypatch):
    model = Model(checkpoints["detect"], device="cpu")
    assert model(np.zeros((64, 48, 3), np.uint8)).views == [None]
    for bad, error in (("https://example.com/a.jpg", ValueError), (np.zeros((4, 4, 3), np.float32), ValueError),
                       (42, TypeError), ("no/such/image.png", FileNotFoundError)):
        with pytest.raises(error):
            model(bad)
    monkeypatch.chdir(ROOT)
    monkeypatch.setattr(sys, "path", list(sys.path))
    with pytest.raises(ValueError, match="never does"):
        torch.hub.load(".", "yolov5n", source="local", _verbose=False)
    untrained = torch.hub.load(".", "yolov5n", pretrained=False, classes=4, source="local", _verbose=False)
    assert len(untrained(np.zeros((64, 64, 3), np.uint8), size=64)) == 1
