"""--sync-bn without GPUs: everything around SyncBatchNorm's statistics sync.

The sync itself needs CUDA and 2+ processes (NCCL), which CI does not have. What CI can check is
the rest of the pipeline a converted model goes through: in one process SyncBatchNorm has no one
to sync with and normalises exactly like BatchNorm2d, so a training run with every BatchNorm
converted must reproduce the plain run bit for bit. Any step that treats SyncBatchNorm as
something else (weight decay on its weights, EMA, validation, checkpoint keys) breaks
that equality.
"""
from __future__ import annotations

import csv
from pathlib import Path

import pytest
import torch
from torch import nn

import train
import train_dual
from tests.helpers import med_subset_yaml
from utils.training import engine

SCRIPTS = {"train.py": train, "train_dual.py": train_dual}


def _run(tmp: Path, script: str, name: str, data: Path) -> Path:
    module = SCRIPTS[script]
    args = ["--data", str(data), "--epochs", "2", "--project", str(tmp / name), "--cfg", "models/yolov5n.yaml",
            "--img", "96", "--batch-size", "4", "--workers", "0", "--noautoanchor", "--noplots", "--weights", "",
            "--hyp", "hyp.medical.yaml", "--seed", "0", "--no-channels-last"]
    return Path(module.main(module.parse_opt(args))["save_dir"])


def _rows(run: Path) -> list[dict[str, str]]:
    with open(run / "results.csv") as f:
        return [{k.strip(): v.strip() for k, v in row.items()} for row in csv.DictReader(f)]


@pytest.mark.parametrize("script", list(SCRIPTS))
def test_a_sync_batchnorm_model_trains_exactly_like_the_plain_one(tmp_path, med_root, monkeypatch, script):
    data = med_subset_yaml(tmp_path, med_root)
    threads = torch.get_num_threads()
    torch.set_num_threads(1)  # summation order, and so the bits, depend on the thread count
    try:
        plain = _run(tmp_path, script, "plain", data)
        converted = []

        def convert(model, requested, ctx, device):
            model = nn.SyncBatchNorm.convert_sync_batchnorm(model)
            converted.append(sum(isinstance(m, nn.SyncBatchNorm) for m in model.modules()))
            return model

        monkeypatch.setattr(engine, "sync_batchnorm", convert)
        synced = _run(tmp_path, script, "synced", data)
    finally:
        torch.set_num_threads(threads)

    assert converted and converted[0] > 50, "every BatchNorm of the model was converted"
    assert _rows(synced) == _rows(plain)  # losses, mAP, view accuracy and learning rates, as printed
    for weights in ("last.pt", "best.pt"):
        plain_state = torch.load(plain / "weights" / weights, weights_only=True)["model"]
        synced_state = torch.load(synced / "weights" / weights, weights_only=True)["model"]
        assert synced_state.keys() == plain_state.keys(), "a --sync-bn checkpoint loads into a plain model"
        for key, value in plain_state.items():
            assert torch.equal(synced_state[key], value), (weights, key)
