"""--precise-bn: BatchNorm statistics recomputed for the weights that are validated and saved."""
from __future__ import annotations

import json
from pathlib import Path

import pytest
import torch
from torch import nn

import train
from tests.helpers import med_subset_yaml
from utils import engine
from utils.cli import OptionError
from utils.precise_bn import RecentBatches, recalibrate_batchnorm


def test_recent_batches_keep_the_last_images_of_the_epoch():
    recent = RecentBatches(6)
    for value in range(4):  # four batches of 4 images: 16 images
        recent.add(torch.full((4, 1), value))
    assert recent.images == 8, "dropping batch 2 would leave 4 < 6 images"
    assert [int(b[0, 0]) for b in recent] == [2, 3]
    recent.clear()
    assert recent.images == 0 and list(recent) == []
    with pytest.raises(ValueError):
        RecentBatches(0)


def _net() -> nn.Sequential:
    torch.manual_seed(0)
    return nn.Sequential(nn.Conv2d(2, 3, 3, bias=False), nn.BatchNorm2d(3, momentum=0.03), nn.ReLU(),
                         nn.Dropout(0.5), nn.Conv2d(3, 2, 1, bias=False), nn.BatchNorm2d(2, momentum=0.03))


def test_recalibration_averages_each_batch_statistics_at_the_current_weights():
    net = _net()
    batches = [torch.randn(4, 2, 6, 6) * (i + 1) + i for i in range(3)]
    for bn in (net[1], net[5]):  # stale statistics, as after fast-moving weights
        bn.running_mean.fill_(50.0)
        bn.running_var.fill_(0.01)
    net.train()
    net[3].train()
    seen = recalibrate_batchnorm(net, batches, prepare=lambda x: x)
    assert seen == 12

    # by hand: the first BN sees conv1's output; each batch's channel mean and unbiased variance, averaged
    with torch.no_grad():
        first = [net[0](x) for x in batches]
        mean = torch.stack([y.mean(dim=(0, 2, 3)) for y in first]).mean(0)
        var = torch.stack([y.transpose(0, 1).reshape(3, -1).var(dim=1) for y in first]).mean(0)
        # the second BN sees the first normalised by its batch statistics, with dropout off (eval)
        second = []
        for y in first:
            normed = (y - y.mean(dim=(0, 2, 3), keepdim=True)) / torch.sqrt(
                y.var(dim=(0, 2, 3), unbiased=False, keepdim=True) + net[1].eps)
            normed = normed * net[1].weight.view(1, -1, 1, 1) + net[1].bias.view(1, -1, 1, 1)
            second.append(net[4](torch.relu(normed)))
        mean2 = torch.stack([y.mean(dim=(0, 2, 3)) for y in second]).mean(0)
    torch.testing.assert_close(net[1].running_mean, mean)
    torch.testing.assert_close(net[1].running_var, var)
    torch.testing.assert_close(net[5].running_mean, mean2)
    # modes and momenta as they were
    assert all(m.training for m in net.modules()) and net[1].momentum == net[5].momentum == 0.03


def test_recalibration_leaves_an_eval_model_in_eval_mode():
    net = _net().eval()
    recalibrate_batchnorm(net, [torch.randn(2, 2, 5, 5)], prepare=lambda x: x)
    assert not any(m.training for m in net.modules())


def test_negative_precise_bn_is_refused():
    with pytest.raises(OptionError, match="--precise-bn -1"):
        engine.recent_batches_for_precise_bn(train.parse_opt(["--precise-bn", "-1"]), _net(), main=True)
    assert engine.recent_batches_for_precise_bn(train.parse_opt([]), _net(), main=True) is None  # off by default


def test_the_saved_ema_carries_the_statistics_validation_used(tmp_path, med_root, monkeypatch):
    """Wiring: before each validation the EMA model is recalibrated on the epoch's last N images, and
    the checkpoint written after it holds exactly those statistics."""
    calls = []

    def spy(model, batches, prepare):
        seen = recalibrate_batchnorm(model, batches, prepare)
        calls.append((seen, {k: v.clone() for k, v in model.state_dict().items() if k.endswith("running_mean")}))
        return seen

    monkeypatch.setattr(engine, "recalibrate_batchnorm", spy)
    data = med_subset_yaml(tmp_path, med_root)  # 8 images, batch 4: two batches per epoch
    result = train.main(train.parse_opt([
        "--data", str(data), "--epochs", "2", "--project", str(tmp_path / "runs"), "--cfg", "models/yolov5n.yaml",
        "--img", "96", "--batch-size", "4", "--workers", "0", "--noautoanchor", "--noplots", "--weights", "",
        "--hyp", "hyp.medical.yaml", "--precise-bn", "5"]))
    assert [seen for seen, _ in calls] == [8, 8], "5 images asked: the last two batches of 4 hold them"
    history = json.loads((Path(result["save_dir"]) / "training_history.json").read_text())["epochs"]
    assert all(0 < e["precise_bn_s"] < e["time_s"] for e in history)
    saved = torch.load(Path(result["save_dir"]) / "weights" / "last.pt", weights_only=True)["model"]
    final = calls[-1][1]
    assert len(final) > 50
    for key, value in final.items():
        assert torch.equal(saved[key], value), key
