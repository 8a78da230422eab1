"""benchmarks/checkpoint_interference.py: the tasks' shared-layer gradients measured on saved checkpoints."""
from __future__ import annotations

import random
import sys
from pathlib import Path

import pytest
import torch
import yaml

from models.yolo_cls import build_model, shared_parameters
from tests.helpers import med_subset_yaml
from utils.checkpoints import load_checkpoint
from utils.data.loaders import create_dataloader
from utils.training.loss import ComputeLoss
from utils.training.step import task_losses

ROOT = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(ROOT / "benchmarks"))
import checkpoint_interference as benchmark  # noqa: E402


def test_checkpoint_weights_prefer_the_balancer_over_the_hyp():
    gradnorm = {"balancer": {"task_names": ["det", "view"], "weights": torch.tensor([1.8, 0.2])},
                "hyp": {"det_task": 1.0, "view_task": 1.0}}
    assert benchmark.checkpoint_weights(gradnorm) == pytest.approx({"det": 1.8, "view": 0.2})
    assert benchmark.checkpoint_weights({"hyp": {"det_task": 1.0, "view_task": 0.03}}) == {"det": 1.0, "view": 0.03}
    assert benchmark.checkpoint_weights({"hyp": {}}) is None


def test_measurement_matches_a_direct_gradient_computation(tmp_path, med_root, monkeypatch):
    """A 2-epoch joint run at view weight 0.5, saved every epoch: the benchmark's cosine on one batch equals the cosine
    of the two task gradients computed here directly, and its weighted ratio is the unweighted one times 0.5."""
    import train

    data = med_subset_yaml(tmp_path, med_root)
    hyp = tmp_path / "hyp.yaml"
    hyp.write_text((ROOT / "data/hyps/hyp.medical.yaml").read_text() + "\nview_task: 0.5\n")
    run = Path(train.main(train.parse_opt([
        "--data", str(data), "--epochs", "2", "--project", str(tmp_path / "runs"), "--cfg", "models/yolov5n.yaml",
        "--img", "96", "--batch-size", "4", "--workers", "0", "--noautoanchor", "--noplots", "--weights", "",
        "--hyp", str(hyp), "--save-period", "1"]))["save_dir"])
    table = benchmark.main(["--runs", str(run), "--data", str(data), "--img", "96", "--batches", "1",
                            "--batch-size", "4", "--out", str(tmp_path / "out")])
    assert table["epoch"].tolist() == [0, 1]  # last.pt is epoch 1 again and counted once
    assert (tmp_path / "out" / "checkpoint_interference.png").is_file()
    assert table["weight_view"].tolist() == [0.5, 0.5]
    assert (table["median_ratio_weighted"] / table["median_ratio_unweighted"]).tolist() == pytest.approx([0.5, 0.5])
    assert table["run"].tolist() == [f"{run.parent.name}/{run.name}"] * 2

    # a second call keeps what the CSV holds instead of measuring again; other settings are refused
    args = ["--runs", str(run), "--data", str(data), "--img", "96", "--batch-size", "4", "--out", str(tmp_path / "out")]
    with monkeypatch.context() as m:
        m.setattr(benchmark, "measure", lambda *a, **k: pytest.fail("measured again"))
        again = benchmark.main([*args, "--batches", "1"])
    assert again["mean_cosine"].tolist() == pytest.approx(table["mean_cosine"].tolist(), rel=1e-4)
    with pytest.raises(SystemExit, match="other settings"):
        benchmark.main([*args, "--batches", "2"])

    ckpt = load_checkpoint(run / "weights" / "epoch1.pt")
    model = build_model(ckpt["model_yaml"], nc=len(ckpt["names"]), n_views=3)
    model.load_state_dict(ckpt["model"])
    model.train()
    images = benchmark.find_images(str(data_list(data)))
    random.Random(0).shuffle(images)
    loader, _ = create_dataloader(images[:4], 96, 4, 32, workers=0, nc=4, n_views=3)
    imgs, targets, views, *_ = next(iter(loader))
    torch.manual_seed(0)  # the view head's dropout mask, drawn as the benchmark draws it
    losses, _ = task_losses(model(imgs.float() / 255), targets, views, ComputeLoss(model, ckpt["hyp"]), 4)
    params = shared_parameters(model)
    flat = []
    for name in ("det", "view"):
        grads = torch.autograd.grad(losses[name], params, retain_graph=True, allow_unused=True)
        flat.append(torch.cat([(torch.zeros_like(p) if g is None else g).reshape(-1) for p, g in zip(params, grads)]))
    cosine = float(torch.nn.functional.cosine_similarity(flat[0].double(), flat[1].double(), dim=0))
    ratio = float(flat[1].double().norm() / flat[0].double().norm())
    measured = table[table["epoch"] == 1].iloc[0]
    assert measured["mean_cosine"] == pytest.approx(cosine, rel=1e-4, abs=1e-6)
    assert measured["median_ratio_unweighted"] == pytest.approx(ratio, rel=1e-4)


def data_list(data_yaml: Path) -> Path:
    """The image list a med_subset_yaml points its train split at."""
    return Path(yaml.safe_load(data_yaml.read_text())["train"])
