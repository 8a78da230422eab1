"""Multi-process training (torchrun, gloo on CPU) against one process with the same global batch.

Why the equivalence runs train on 16 copies of one image: with distinct images two processes
cannot match one process exactly, by design. Without SyncBatchNorm (CUDA only) each rank
normalises over its own B/2 images, and YOLOv5's box/cls losses are means over each rank's
matched targets. Measured on 16 distinct med frames, the first-epoch view loss differed by
2.5 % (and 0.6 % for identical images with the view head's dropout on, whose masks differ per
rank). With identical images and dropout 0 both effects vanish and what remains is float
summation order (BatchNorm over 4 vs 8 images, the all-reduce): losses and task weights then
agree to 5 significant digits, so the tests ask for 1e-3 relative. A real mistake is far
outside that: one process at half the batch (what a missing x world-size loss scale or a
wrong per-rank batch amounts to) moved the first-epoch view loss by 26 %.
That every rank trains on its own share of the data is tested on the sampler directly.
"""
from __future__ import annotations

import csv
import json
import os
import socket
import subprocess
import sys
from pathlib import Path

import pytest
import torch
import torch.distributed as dist
import torch.multiprocessing as mp
import yaml

from utils.cli import OptionError
from utils.data.loaders import train_sampler
from utils.training.distributed import (DistContext, all_reduce_mean, any_rank, broadcast_object, check_ranks_agree,
                               context_from_env, per_rank_batch_size, rank_device, setup_distributed)
from utils.logger import LOGGER

ROOT = Path(__file__).resolve().parents[1]
MED = ROOT.parent / "shared" / "datasets" / "Regurgitation-YOLODataset-1new"
NO_AUGMENTATION = ("hsv_h", "hsv_s", "hsv_v", "degrees", "translate", "scale", "shear", "perspective", "flipud",
                   "fliplr", "mosaic", "mixup", "copy_paste")


# ----------------------------------------------------------------------------- pure parts

def test_context_from_env_reads_torchrun_variables():
    assert context_from_env({}) == DistContext(rank=0, local_rank=-1, world_size=1)
    ctx = context_from_env({"RANK": "1", "LOCAL_RANK": "1", "WORLD_SIZE": "2"})
    assert (ctx.rank, ctx.local_rank, ctx.world_size, ctx.enabled, ctx.is_main) == (1, 1, 2, True, False)
    with pytest.raises(SystemExit, match="RANK=2"):
        context_from_env({"RANK": "2", "WORLD_SIZE": "2"})
    with pytest.raises(SystemExit, match="integers"):
        context_from_env({"WORLD_SIZE": "two"})


def test_batch_size_is_the_total_over_processes():
    assert per_rank_batch_size(16, DistContext(world_size=2)) == 8
    assert per_rank_batch_size(16, DistContext()) == 16
    with pytest.raises(SystemExit, match="--batch-size 15 must be a multiple of WORLD_SIZE 2"):
        per_rank_batch_size(15, DistContext(world_size=2))


@pytest.mark.parametrize("epoch", [0, 1, 5])
def test_two_ranks_share_the_global_batches_of_one_process(epoch):
    n, global_batch = 24, 8
    one = train_sampler(range(n), shuffle=True, seed=3)
    ranks = [train_sampler(range(n), shuffle=True, seed=3, world_size=2, rank=r) for r in (0, 1)]
    for s in (one, *ranks):
        s.set_epoch(epoch)
    order = list(one)
    shares = [list(s) for s in ranks]
    assert sorted(shares[0] + shares[1]) == list(range(n))  # every image once per epoch, no overlap
    half = global_batch // 2
    for b in range(n // global_batch):
        global_batch_1 = set(order[b * global_batch:(b + 1) * global_batch])
        global_batch_2 = set(shares[0][b * half:(b + 1) * half]) | set(shares[1][b * half:(b + 1) * half])
        assert global_batch_1 == global_batch_2


def test_sampler_order_changes_with_the_epoch_and_repeats_for_the_same_epoch():
    s = train_sampler(range(50), shuffle=True, seed=0)
    s.set_epoch(0)
    first = list(s)
    s.set_epoch(1)
    second = list(s)
    s.set_epoch(0)
    assert list(s) == first != second


def test_each_rank_takes_its_own_gpu_from_the_device_flag():
    """YOLOv5: `torchrun --nproc_per_node 2 train.py --device 2,3` trains on GPUs 2 and 3."""
    assert rank_device("2,3", 0, cuda_count=4) == torch.device("cuda", 2)
    assert rank_device("cuda:2, 3", 1, cuda_count=4) == torch.device("cuda", 3)
    assert rank_device("", 1, cuda_count=2) == torch.device("cuda", 1)  # no flag: LOCAL_RANK-th GPU
    assert rank_device("", 1, cuda_count=0) == torch.device("cpu")  # no GPU: gloo on the CPU
    assert rank_device("cpu", 1, cuda_count=4) == torch.device("cpu")
    with pytest.raises(OptionError, match="LOCAL_RANK 2 has no GPU: --device '2,3' lists 2"):
        rank_device("2,3", 2, cuda_count=4)
    with pytest.raises(OptionError, match="LOCAL_RANK 2 has no GPU: this machine has 2"):
        rank_device("", 2, cuda_count=2)
    with pytest.raises(OptionError, match="'0,1' requested, 0 CUDA device"):  # not a silent fall-back to the CPU
        rank_device("0,1", 0, cuda_count=0)
    with pytest.raises(OptionError, match="listed twice"):
        rank_device("1,1", 0, cuda_count=2)
    with pytest.raises(OptionError, match="DDP runs on CUDA"):
        rank_device("mps", 0, cuda_count=0)


def test_a_cuda_rank_pins_its_gpu_and_joins_with_nccl(monkeypatch):
    """The NCCL path without GPUs: which device is pinned and which backend is asked for."""
    calls = {}
    monkeypatch.setattr(torch.cuda, "is_available", lambda: True)
    monkeypatch.setattr(torch.cuda, "device_count", lambda: 4)
    monkeypatch.setattr(torch.cuda, "set_device", lambda d: calls.setdefault("set_device", d))
    monkeypatch.setattr(dist, "is_initialized", lambda: False)
    monkeypatch.setattr(dist, "init_process_group", lambda backend, **kw: calls.setdefault("backend", backend))
    monkeypatch.setattr(dist, "get_backend", lambda: calls["backend"])
    level = LOGGER.level
    try:
        device = setup_distributed(DistContext(rank=1, local_rank=1, world_size=2), "2,3", batch_size=16)
    finally:
        LOGGER.setLevel(level)  # rank 1 quiets the logger: give the other tests theirs back
    assert device == calls["set_device"] == torch.device("cuda", 3)
    assert calls["backend"] == "nccl"


# ----------------------------------------------------------------------------- collectives (2 gloo processes)

def _free_port() -> int:
    with socket.socket() as sock:
        sock.bind(("127.0.0.1", 0))
        return sock.getsockname()[1]


def _collectives_worker(rank: int, port: int, out: str) -> None:
    os.environ.update(MASTER_ADDR="127.0.0.1", MASTER_PORT=str(port))
    dist.init_process_group("gloo", rank=rank, world_size=2)
    try:
        results = {
            "mean": all_reduce_mean(torch.tensor([float(rank), 10.0])).tolist(),
            "any": any_rank(rank == 1),
            "none": any_rank(False),
            "broadcast": broadcast_object(f"runs/train/exp{rank}"),
        }
        check_ranks_agree(torch.tensor([1.0, 2.0]), "equal weights")
        try:
            check_ranks_agree(torch.tensor([1.0, 2.0 + rank]), "task weights")
            results["disagreement"] = None
        except RuntimeError as e:
            results["disagreement"] = str(e)
        torch.save(results, f"{out}/rank{rank}.pt")
    finally:
        dist.destroy_process_group()


def test_collectives_agree_across_two_processes(tmp_path):
    mp.spawn(_collectives_worker, args=(_free_port(), str(tmp_path)), nprocs=2, join=True)
    for rank in (0, 1):
        r = torch.load(tmp_path / f"rank{rank}.pt")
        assert r["mean"] == [0.5, 10.0]
        assert r["any"] is True and r["none"] is False
        assert r["broadcast"] == "runs/train/exp0"  # rank 0's run folder everywhere
        assert r["disagreement"] == "DDP ranks disagree on task weights: rank 1 differs from rank 0 by up to 1"


# ----------------------------------------------------------------------------- torchrun vs one process

@pytest.fixture(scope="module")
def equivalence_setup(tmp_path_factory):
    if not MED.is_dir():
        pytest.skip(f"dataset not found: {MED}")
    tmp = tmp_path_factory.mktemp("ddp")
    image = sorted((MED / "train" / "images").glob("*.png"))[0]
    listing = tmp / "same_image.txt"
    listing.write_text(f"{image}\n" * 16)
    distinct = tmp / "distinct.txt"
    distinct.write_text("".join(f"{p}\n" for p in sorted((MED / "train" / "images").glob("*.png"))[:16]))
    for name, images in (("data.yaml", listing), ("distinct.yaml", distinct)):
        (tmp / name).write_text(yaml.safe_dump({"train": str(images), "val": str(images), "cls_names": ["PSAX", "PLAX", "A4C"],
                                                "names": ["AR", "MR", "PR", "TR"]}))
    hyp = yaml.safe_load((ROOT / "data" / "hyps" / "hyp.scratch-low.yaml").read_text())
    hyp.update({k: 0.0 for k in NO_AUGMENTATION})
    (tmp / "hyp.yaml").write_text(yaml.safe_dump(hyp))
    cfg = yaml.safe_load((ROOT / "models" / "yolov5n.yaml").read_text())
    cfg["view_head"] = {"dropout": 0.0}  # dropout masks are drawn per rank
    (tmp / "model.yaml").write_text(yaml.safe_dump(cfg))
    return tmp


def _train(tmp: Path, script: str, processes: int, name: str, *extra: str, data: str = "data.yaml") -> tuple[Path, str]:
    args = [script, "--data", str(tmp / data), "--cfg", str(tmp / "model.yaml"), "--hyp", str(tmp / "hyp.yaml"),
            "--img", "96", "--epochs", "2", "--batch-size", "8", "--workers", "0", "--weights", "", "--noplots",
            "--noautoanchor", "--seed", "0", "--no-channels-last", "--project", str(tmp / name), *extra]
    launcher = ["-m", "torch.distributed.run", "--standalone", "--nproc_per_node", str(processes)] if processes > 1 else []
    env = {**os.environ, "OMP_NUM_THREADS": "1"}
    proc = subprocess.run([sys.executable, *launcher, *args], cwd=ROOT, capture_output=True, text=True, env=env,
                          timeout=600)
    assert proc.returncode == 0, proc.stdout[-2000:] + proc.stderr[-4000:]
    return tmp / name / "exp", proc.stdout + proc.stderr


def _results(run: Path) -> list[dict[str, float]]:
    with open(run / "results.csv") as f:
        return [{k.strip(): float(v) for k, v in row.items()} for row in csv.DictReader(f)]


STRATEGIES = {
    "fixed": ("train.py",),
    "gradnorm": ("train_gradnorm.py",),
    "uncertainty": ("train.py", "--balancer", "uncertainty"),
    "pcgrad": ("train.py", "--balancer", "pcgrad"),
    "dual": ("train_dual.py",),
}


@pytest.mark.parametrize("strategy", list(STRATEGIES))
def test_two_processes_train_like_one_with_the_same_global_batch(equivalence_setup, strategy):
    tmp = equivalence_setup
    script, *extra = STRATEGIES[strategy]
    one, _ = _train(tmp, script, 1, f"{strategy}_1", *extra)
    two, log = _train(tmp, script, 2, f"{strategy}_2", *extra, *(("--sync-bn",) if strategy == "fixed" else ()))

    assert [p.name for p in (tmp / f"{strategy}_2").iterdir()] == ["exp"]  # only rank 0 made a run folder
    rows_1, rows_2 = _results(one), _results(two)
    assert len(rows_1) == len(rows_2) == 2
    compared = [k for k in rows_1[0] if k.startswith("train/") or k.startswith("x/w_")]
    assert "train/view_loss" in compared and "x/w_view" in compared
    for r1, r2 in zip(rows_1, rows_2):
        for key in compared:
            assert r2[key] == pytest.approx(r1[key], rel=1e-3), (strategy, int(r1["epoch"]), key)
    if strategy in ("gradnorm", "uncertainty"):  # the weights moved, and identically (every rank checks each epoch)
        assert rows_2[-1]["x/w_view"] != rows_2[0]["x/w_view"]
    history = json.loads((two / "training_history.json").read_text())
    assert history["run"]["world_size"] == 2

    # last.pt holds the EMA weights once training ends (optimizer stripped)
    state_1 = torch.load(one / "weights" / "last.pt", weights_only=True)["model"]
    state_2 = torch.load(two / "weights" / "last.pt", weights_only=True)["model"]
    assert state_1.keys() == state_2.keys()
    for key, value in state_1.items():
        if value.is_floating_point():
            # BatchNorm's running variance is Bessel-corrected over the elements it saw: n/(n-1) with n from 4
            # images on rank 0 against 8 in one process (1.4 % apart at the 3x3 P5 maps), so it gets 2 %.
            rtol = 2e-2 if key.endswith("running_var") else 1e-3
            torch.testing.assert_close(state_2[key], value, rtol=rtol, atol=1e-4, msg=lambda m: f"{key}: {m}")
    if strategy == "fixed":
        assert "--sync-bn ignored: SyncBatchNorm runs on CUDA only" in log


@pytest.mark.parametrize("strategy", ["gradnorm", "uncertainty", "pcgrad"])
def test_balancers_stay_identical_across_ranks_that_see_different_images(equivalence_setup, strategy):
    """On distinct images each rank measures its own losses and gradients; the balancer must all-reduce
    them before it learns, or the ranks' task weights (and then their models) drift apart. Every rank
    compares task weights and a parameter checksum each epoch and the run fails on a difference."""
    script, *extra = STRATEGIES[strategy]
    run, _ = _train(equivalence_setup, script, 2, f"{strategy}_distinct", *extra, data="distinct.yaml")
    rows = _results(run)
    assert len(rows) == 2 and all(r["train/view_loss"] > 0 for r in rows)
