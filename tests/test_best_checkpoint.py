"""utils/training/best_checkpoint.py: the best.pt rule, and best.pt with each independent network at its own best epoch."""
from __future__ import annotations

import json
from pathlib import Path

import pytest
import torch

import train
import train_dual
from tests.helpers import med_subset_yaml
from utils.training import engine
from utils.training.best_checkpoint import PerNetworkBest, best_checkpoint_epoch, improves_best


def test_best_checkpoint_epoch_replays_the_best_pt_rule():
    records = [{"epoch": 0, "fitness": 0.0, "validated": True},  # 0 >= the starting 0: saved
               {"epoch": 1, "fitness": 0.4, "validated": True},
               {"epoch": 2, "fitness": 0.9, "validated": False},  # stale figures: never best.pt
               {"epoch": 3, "fitness": 0.4, "validated": True},  # a tie rewrites best.pt (YOLOv5's >=)
               {"epoch": 4, "fitness": 0.3, "validated": True}]
    assert best_checkpoint_epoch(records) == 3
    assert best_checkpoint_epoch(records[:3]) == 1
    assert best_checkpoint_epoch([]) is None
    assert improves_best(0.5, 0.5, True) and not improves_best(0.6, 0.5, False) and not improves_best(0.4, 0.5, True)


def _state(det: float, cls: float) -> dict[str, torch.Tensor]:
    return {"a.w": torch.full((2,), det), "b.w": torch.full((3,), cls), "b.n": torch.tensor(int(cls))}


def test_each_network_is_kept_from_its_own_best_epoch():
    best = PerNetworkBest({"det": "a.", "cls": "b."})
    assert best.update(0, {"det": 0.1, "cls": 0.5}, _state(0, 0), validated=True)
    assert best.update(1, {"det": 0.3, "cls": 0.2}, _state(1, 1), validated=True), "the detector improved"
    assert not best.update(2, {"det": 0.9, "cls": 0.9}, _state(2, 2), validated=False), "stale figures count for nothing"
    assert not best.update(3, {"det": 0.2, "cls": 0.4}, _state(3, 3), validated=True)
    merged = best.merged(_state(3, 3))
    assert merged["a.w"].tolist() == [1, 1] and merged["b.w"].tolist() == [0, 0, 0] and int(merged["b.n"]) == 0
    assert best.state_dict() == {"fitness": {"det": 0.3, "cls": 0.5}, "epoch": {"det": 1, "cls": 0}}
    assert best.last_improved_epoch == 1, "--patience counts from the last strict gain of either network"

    resumed = PerNetworkBest({"det": "a.", "cls": "b."})
    resumed.load_state_dict(best.state_dict(), merged)
    assert resumed.update(4, {"det": 0.25, "cls": 0.6}, _state(4, 4), validated=True)
    again = resumed.merged(_state(5, 5))
    assert again["a.w"].tolist() == [1, 1] and again["b.w"].tolist() == [4, 4, 4], "a resumed run keeps both bests"


@pytest.fixture(scope="module")
def per_network_run(tmp_path_factory, med_root) -> Path:
    """Three epochs whose per-network fitness is scripted (8 images give ties): the detector peaks at
    epoch 1, the classifier at epoch 0, and the last epoch is neither's best."""
    tmp = tmp_path_factory.mktemp("per_network")
    data = med_subset_yaml(tmp, med_root)
    scripted = iter([{"detector": 0.1, "classifier": 0.9}, {"detector": 0.5, "classifier": 0.2},
                     {"detector": 0.3, "classifier": 0.4}])
    with pytest.MonkeyPatch.context() as mp:
        mp.setattr(engine, "part_fitness", lambda fit, view: next(scripted))
        result = train_dual.main(train_dual.parse_opt([
            "--data", str(data), "--epochs", "3", "--save-period", "1", "--project", str(tmp / "runs"),
            "--cfg", "models/yolov5n.yaml", "--img", "96", "--batch-size", "4", "--workers", "0", "--noautoanchor",
            "--noplots", "--hyp", "hyp.medical.yaml", "--cls-optimizer", "AdamW", "--cls-lr0", "0.002"]))
    return Path(result["save_dir"])


def test_dual_best_pt_holds_each_network_from_its_best_epoch(per_network_run):
    weights = per_network_run / "weights"
    history = json.loads((per_network_run / "training_history.json").read_text())["epochs"]
    det_epoch, cls_epoch = (best_checkpoint_epoch([{**r, "fitness": r["part_fitness"][name]} for r in history])
                            for name in ("detector", "classifier"))
    assert (det_epoch, cls_epoch) == (1, 0), "the scripted fitness, replayed from the history"
    best = torch.load(weights / "best.pt", weights_only=True)
    assert best["best_parts"]["epoch"] == {"detector": 1, "classifier": 0}
    last = torch.load(weights / "epoch2.pt", weights_only=True)["ema"]
    for prefix in ("detector.", "classifier."):  # epoch 2 trained on, so its stem differs from the kept one
        stem = next(k for k in best["model"] if k.startswith(prefix) and k.endswith("conv.weight"))
        assert not torch.equal(best["model"][stem], last[stem]), stem
    for prefix, epoch in (("detector.", det_epoch), ("classifier.", cls_epoch)):
        kept = torch.load(weights / f"epoch{epoch}.pt", weights_only=True)["ema"]
        for key, value in best["model"].items():
            if key.startswith(prefix):
                assert torch.equal(value, kept[key]), f"{key} is not from epoch {epoch}"


def test_per_network_fitness_is_refused_for_a_shared_network(tmp_path):
    with pytest.raises(SystemExit, match="per-network.*train_dual.py"):
        train.main(train.parse_opt(["--fitness", "per-network", "--epochs", "1", "--project", str(tmp_path)]))


class _Crash(Exception):
    """Stands in for a process killed after epoch 1's checkpoints were written."""


def test_a_resumed_per_network_run_keeps_the_networks_bests(tmp_path, med_root):
    data = med_subset_yaml(tmp_path, med_root)
    scripted = [{"detector": 0.5, "classifier": 0.2}, {"detector": 0.3, "classifier": 0.4}]

    def crash_after_two(fit, view):
        if not scripted:
            raise _Crash
        return scripted.pop(0)

    with pytest.MonkeyPatch.context() as mp:
        mp.setattr(engine, "part_fitness", crash_after_two)
        with pytest.raises(_Crash):
            train_dual.main(train_dual.parse_opt([
                "--data", str(data), "--epochs", "3", "--save-period", "1", "--project", str(tmp_path / "runs"),
                "--cfg", "models/yolov5n.yaml", "--img", "96", "--batch-size", "4", "--workers", "0",
                "--noautoanchor", "--noplots", "--hyp", "hyp.medical.yaml"]))
    weights = tmp_path / "runs" / "exp" / "weights"
    assert torch.load(weights / "last.pt", weights_only=True)["best_parts"]["epoch"] == {"detector": 0,
                                                                                       "classifier": 1}
    with pytest.MonkeyPatch.context() as mp:
        mp.setattr(engine, "part_fitness", lambda fit, view: {"detector": 0.4, "classifier": 0.6})
        train_dual.main(train_dual.parse_opt(["--resume", str(weights / "last.pt")]))
    best = torch.load(weights / "best.pt", weights_only=True)
    assert best["best_parts"] == {"fitness": {"detector": 0.5, "classifier": 0.6},
                                  "epoch": {"detector": 0, "classifier": 2}}
    for prefix, epoch in (("detector.", 0), ("classifier.", 2)):  # the detector restored from the earlier best.pt
        kept = torch.load(weights / f"epoch{epoch}.pt", weights_only=True)["ema"]
        assert all(torch.equal(v, kept[k]) for k, v in best["model"].items() if k.startswith(prefix)), prefix
