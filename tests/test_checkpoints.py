"""Checkpoints: plain data, atomic writes, refusal of files that would run code."""
from __future__ import annotations

import pickle
from pathlib import Path

import pytest
import torch

from utils.checkpoints import CheckpointError, build_checkpoint, load_checkpoint, save_checkpoint, to_plain


def _tiny_checkpoint() -> dict:
    layer = torch.nn.Linear(2, 2)
    return build_checkpoint(model_yaml={"nc": 1, "backbone": [[-1, 1, "Conv", [16, 3]]]}, model_state=layer.state_dict(),
                            names={0: "a"}, epoch=3, best_fitness=0.5, opt={"save_dir": Path("/x"), "freeze": (0,)})


def test_roundtrip_with_weights_only(tmp_path: Path):
    path = tmp_path / "w" / "last.pt"
    save_checkpoint(_tiny_checkpoint(), path)
    ckpt = torch.load(path, weights_only=True)
    assert ckpt["epoch"] == 3 and ckpt["names"] == {0: "a"} and ckpt["opt"]["save_dir"] == "/x"
    assert load_checkpoint(path)["best_fitness"] == 0.5


def test_failed_write_keeps_old_file_and_leaves_no_temp(tmp_path: Path, monkeypatch):
    path = tmp_path / "last.pt"
    save_checkpoint(_tiny_checkpoint(), path)
    before = path.read_bytes()

    def exploding_save(obj, f):
        f.write(b"partial")
        raise OSError("disk full")

    monkeypatch.setattr(torch, "save", exploding_save)
    with pytest.raises(OSError):
        save_checkpoint(_tiny_checkpoint(), path)
    assert path.read_bytes() == before
    assert [p.name for p in tmp_path.iterdir()] == ["last.pt"]


class _RunsCode:
    def __reduce__(self):
        return (print, ("this would run arbitrary code",))


def test_crafted_pickle_is_refused_even_when_trusted(tmp_path: Path, capsys):
    path = tmp_path / "evil.pt"
    torch.save({"model": _RunsCode(), "model_yaml": {}}, path)
    for trust in (False, True):  # no weights file runs code, whatever --trust-weights says
        with pytest.raises(CheckpointError, match="no weights file runs code here"):
            load_checkpoint(path, trust=trust)
    assert "this would run arbitrary code" not in capsys.readouterr().out


def test_foreign_and_missing_files_get_clear_errors(tmp_path: Path):
    foreign = tmp_path / "foreign.pt"
    torch.save({"state_dict": {}}, foreign)
    with pytest.raises(CheckpointError, match="not a checkpoint of this project"):
        load_checkpoint(foreign)
    garbage = tmp_path / "garbage.pt"
    garbage.write_bytes(b"\x00not a zip")
    with pytest.raises(CheckpointError, match="garbage.pt"):
        load_checkpoint(garbage)
    with pytest.raises(CheckpointError, match="not found"):
        load_checkpoint(tmp_path / "missing.pt")


def test_to_plain_converts_paths_tuples_and_numpy():
    import numpy as np

    out = to_plain({"p": Path("a/b"), "t": (1, 2), "n": np.float32(0.5), "nested": {"x": [Path("c")]}})
    assert out == {"p": "a/b", "t": [1, 2], "n": 0.5, "nested": {"x": ["c"]}}
    pickle.dumps(out)


def test_inference_model_is_fused_frozen_and_in_eval_mode(tmp_path: Path):
    from models.yolo import DetectionModel
    from utils.model_loading import load_inference_model

    model = DetectionModel("yolov5n.yaml", nc=2)
    path = tmp_path / "n.pt"
    save_checkpoint(build_checkpoint(model_yaml=model.yaml, model_state=model.state_dict(), names={0: "a", 1: "b"},
                                     epoch=0, best_fitness=0.0), path)
    loaded, _ = load_inference_model(path, torch.device("cpu"))
    assert not loaded.training
    assert not any(p.requires_grad for p in loaded.parameters())
    assert not any(isinstance(m, torch.nn.BatchNorm2d) for m in loaded.modules())  # folded into the convolutions
