"""utils/training/precise_bn.py and benchmarks/precise_bn.py: BatchNorm statistics recomputed for the weights evaluated."""
from __future__ import annotations

import sys
from pathlib import Path

import torch
from torch import nn

from tests.helpers import med_subset_yaml
from utils.training.precise_bn import recalibrate_batchnorm

ROOT = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(ROOT / "benchmarks"))
import precise_bn as benchmark  # noqa: E402


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


def test_benchmark_compares_each_epoch_as_saved_and_recalibrated(tmp_path, med_root):
    """One 2-epoch run with --save-period 1; the benchmark validates both epochs twice and the
    columns differ only through the statistics (the as-saved column matches the run's own results)."""
    import train

    data = med_subset_yaml(tmp_path, med_root)
    run = Path(train.main(train.parse_opt([
        "--data", str(data), "--epochs", "2", "--project", str(tmp_path / "runs"), "--cfg", "models/yolov5n.yaml",
        "--img", "96", "--batch-size", "4", "--workers", "0", "--noautoanchor", "--noplots", "--weights", "",
        "--hyp", "hyp.medical.yaml", "--save-period", "1"]))["save_dir"])
    table = benchmark.main(["--run", str(run), "--data", str(data), "--img", "96", "--images", "8",
                            "--batch-size", "4", "--out", str(tmp_path / "out")])
    assert table["epoch"].tolist() == [0, 1]
    assert (tmp_path / "out" / "precise_bn.csv").is_file() and (tmp_path / "out" / "precise_bn.png").is_file()
    history = [line.split(",") for line in (run / "results.csv").read_text().splitlines()]
    header = [h.strip() for h in history[0]]
    run_view = [float(row[header.index("metrics/view_accuracy")]) for row in history[1:]]
    # epoch<N>.pt is written after that epoch's validation, so "as saved" is what the run validated
    assert table["view_accuracy_as_saved"].round(4).tolist() == [round(v, 4) for v in run_view]
