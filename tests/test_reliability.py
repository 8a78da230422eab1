"""Reliability: fuzzed labels and images mixed into real data, non-finite losses, deterministic runs."""
from __future__ import annotations

import json
import random
import struct
import zlib
from pathlib import Path

import cv2
import numpy as np
import pytest
import yaml

import train
from utils.data.dataset import LoadImagesAndLabels

MED_NAMES = ["AR", "MR", "PR", "TR"]
VIEWS = ["PSAX", "PLAX", "A4C"]
N_LABEL_MUTANTS = 1000
N_GOOD = 8


# ----------------------------------------------------------------------------- label mutations

def _mutate_label(text: str, rng: random.Random) -> bytes:
    """One damaged (or oddly formatted but valid) variant of a real label file."""
    lines = text.split("\n")
    box = lines[0].split()
    kind = rng.randrange(24)
    if kind == 0:
        box[rng.randrange(len(box))] = rng.choice(["nan", "inf", "-inf", "NaN", "1e309"])
    elif kind == 1:
        box[rng.randrange(1, len(box))] = rng.choice(["-0.5", "1.5", "2", "-1e-3", "1.0000001"])
    elif kind == 2:
        box[rng.randrange(len(box))] = rng.choice(["abc", "0x1F", "1,5", "--1", "."])
    elif kind == 3:
        del box[rng.randrange(len(box))]
    elif kind == 4:
        box = box[: rng.choice([1, 2, 3, 4])]
    elif kind == 5:
        box[0] = rng.choice(["9", "-1", "2.5", "4", "1e3"])
    elif kind == 6:
        return text.encode() + bytes(rng.randrange(256) for _ in range(rng.randrange(1, 64)))
    elif kind == 7:
        return bytes(rng.randrange(256) for _ in range(rng.randrange(0, 512)))
    elif kind == 8:
        return (" ".join(["0.5"] * rng.choice([10001, 20000])) + "\n").encode()  # very long line
    elif kind == 9:
        return b""
    elif kind == 10:
        return b"   \n\n \t\n"
    elif kind == 11:
        lines[-1] = rng.choice(["1 1 0", "0 0 0", "0 1", "0 1 0 0", "2 0 0", "0 1 nan", "a b c"])
    elif kind == 12:
        lines.append(lines[-1])  # two view lines
    elif kind == 13:
        lines = [lines[-1], ""] + lines[:-2]  # view line first
    elif kind == 14:
        lines = [ln for ln in lines if ln.strip()]  # no blank line before the view line
    elif kind == 15:
        return "\r\n".join(lines).encode()
    elif kind == 16:
        return "\n".join(ln.replace(" ", "\t") for ln in lines).encode()
    elif kind == 17:
        lines = [lines[0]] * rng.choice([50, 500]) + lines[1:]
    elif kind == 18:
        box = box[:1] + ["0.5"] * rng.choice([3, 5, 7])  # odd coordinate counts
    elif kind == 19:
        box = box[:1] + ["0.5", "0.5", "0", "0"]  # zero-size box
    elif kind == 20:
        return text.encode("utf-16")
    elif kind == 21:
        return ("\ufeff" + text).encode()  # byte-order mark
    elif kind == 22:
        box = box[:1] + [f"{float(v):.3e}" for v in box[1:]]  # scientific notation: valid
    else:
        lines.insert(rng.randrange(len(lines)), "# a comment line")
    lines[0] = " ".join(box)
    return "\n".join(lines).encode()


# ----------------------------------------------------------------------------- image damage

def _png_chunk(kind: bytes, data: bytes) -> bytes:
    return struct.pack(">I", len(data)) + kind + data + struct.pack(">I", zlib.crc32(kind + data) & 0xFFFFFFFF)


def _huge_png(width: int, height: int) -> bytes:
    """A PNG whose header claims huge dimensions, with a tiny (invalid) image body."""
    ihdr = struct.pack(">IIBBBBB", width, height, 8, 2, 0, 0, 0)
    return b"\x89PNG\r\n\x1a\n" + _png_chunk(b"IHDR", ihdr) + _png_chunk(b"IDAT", zlib.compress(b"\0" * 16)) + \
        _png_chunk(b"IEND", b"")


def _damaged_images(good: np.ndarray, rng: random.Random) -> list[tuple[str, bytes]]:
    """(suffix, bytes) for >= 100 damaged or unusual images derived from one real image."""
    png = cv2.imencode(".png", good)[1].tobytes()
    jpg = cv2.imencode(".jpg", good)[1].tobytes()
    out: list[tuple[str, bytes]] = []
    out += [(".png", png[: rng.randrange(8, len(png) - 1)]) for _ in range(30)]  # truncated PNG
    out += [(".jpg", jpg[: rng.randrange(2, len(jpg) - 2)]) for _ in range(20)]  # truncated JPEG
    out += [(".png", b"")] * 3 + [(".jpg", b"")] * 2  # zero bytes
    out += [(".jpg", png)] * 3 + [(".png", jpg)] * 2  # wrong extension
    out += [(".png", cv2.imencode(".png", good[:1, :1])[1].tobytes())] * 5  # 1x1
    out += [(".png", cv2.imencode(".png", good.astype(np.uint16) * 257)[1].tobytes())] * 5  # 16-bit
    out += [(".png", cv2.imencode(".png", cv2.cvtColor(good, cv2.COLOR_BGR2GRAY))[1].tobytes())] * 5  # greyscale
    out += [(".png", _huge_png(100_000, 100_000)), (".png", _huge_png(60_000, 1)), (".png", _huge_png(2**31 - 1, 8))]
    out += [(".png", bytes(rng.randrange(256) for _ in range(rng.randrange(1, 4096)))) for _ in range(10)]  # noise
    out += [(".png", b"this is not an image\n" * 20)] * 2
    for _ in range(10):  # flipped bytes inside the compressed data
        data = bytearray(rng.choice([png, jpg]))
        for _ in range(rng.randrange(1, 20)):
            data[rng.randrange(100, len(data) - 10)] ^= 0xFF
        out.append((".png" if data[:4] == b"\x89PNG" else ".jpg", bytes(data)))
    return out


def _fuzz_dataset(root: Path, med_root: Path, seed: int = 0) -> tuple[Path, list[str], int, int]:
    """A dataset of N_GOOD real pairs, N_LABEL_MUTANTS damaged labels and >= 100 damaged images."""
    rng = random.Random(seed)
    images, labels = root / "images", root / "labels"
    images.mkdir(parents=True)
    labels.mkdir(parents=True)
    sources = sorted((med_root / "train" / "images").glob("*.png"))[:N_GOOD]
    texts = [(med_root / "train" / "labels" / f"{p.stem}.txt").read_text() for p in sources]
    good_names = []
    for k, (src, text) in enumerate(zip(sources, texts)):
        (images / f"good{k}.png").symlink_to(src)
        (labels / f"good{k}.txt").write_text(text)
        good_names.append(f"good{k}.png")
    for k in range(N_LABEL_MUTANTS):
        j = k % N_GOOD
        (images / f"lab{k:04d}.png").symlink_to(sources[j])
        (labels / f"lab{k:04d}.txt").write_bytes(_mutate_label(texts[j], rng))
    damaged = _damaged_images(cv2.imread(str(sources[0])), rng)
    for k, (suffix, data) in enumerate(damaged):
        (images / f"img{k:03d}{suffix}").write_bytes(data)
        (labels / f"img{k:03d}.txt").write_text(texts[0])
    data_yaml = root / "fuzz.yaml"
    data_yaml.write_text(yaml.safe_dump({"path": str(root), "train": "images", "val": "images",
                                         "names": MED_NAMES, "cls_names": VIEWS}))
    return data_yaml, good_names, N_LABEL_MUTANTS, len(damaged)


def test_fuzzed_inputs_are_reported_or_used_and_training_completes(tmp_path: Path, med_root: Path):
    data_yaml, good_names, n_labels, n_images = _fuzz_dataset(tmp_path / "fuzz", med_root)
    assert n_labels >= 1000 and n_images >= 100
    dataset = LoadImagesAndLabels(str(tmp_path / "fuzz" / "images"), 64, 32, nc=4, n_views=3)
    scan = dataset.scan
    total = N_GOOD + n_labels + n_images
    used = {Path(f).name for f in dataset.img_files}
    assert set(good_names) <= used, "every good file is used"
    reported = {Path(m.split(": ignoring corrupt")[0]).name for m in scan.messages if "ignoring corrupt" in m}
    assert len(used) + len(reported) == total, "every file is either used or reported as corrupt"
    assert not used & reported
    assert scan.n_corrupt == len(reported)
    # the reasons name the file and say what is wrong
    assert all(len(m.split(": ignoring corrupt image/label: ")[1]) > 5 for m in scan.messages if "ignoring corrupt" in m)
    damaged_used = {n for n in used if n.startswith("img")}
    assert 0 < len(damaged_used) < n_images  # e.g. greyscale, 16-bit and wrong-extension images are usable

    result = train.main(train.parse_opt([
        "--data", str(data_yaml), "--cfg", "models/yolov5n.yaml", "--img", "64", "--epochs", "1",
        "--batch-size", "64", "--workers", "0", "--project", str(tmp_path / "runs"), "--noplots", "--noautoanchor"]))
    history = json.loads((Path(result["save_dir"]) / "training_history.json").read_text())
    assert len(history["epochs"]) == 1 and result["skipped_steps"] == 0


def test_non_finite_loss_skips_the_step_and_is_counted(tmp_path: Path, med_root: Path, monkeypatch):
    import torch

    import utils.training.step as step_module
    from tests.test_joint_pipeline import _joint_yaml

    real = step_module.task_losses
    calls = {"n": 0}

    def poisoned(*args, **kwargs):
        losses, items = real(*args, **kwargs)
        calls["n"] += 1
        if calls["n"] in (2, 3):  # the second and third batches: NaN, then inf
            bad = float("nan") if calls["n"] == 2 else float("inf")
            losses = {k: v * torch.tensor(bad) if k == "det" else v for k, v in losses.items()}
        return losses, items

    monkeypatch.setattr(step_module, "task_losses", poisoned)
    data = _joint_yaml(tmp_path, med_root, n=8)
    result = train.main(train.parse_opt([
        "--data", str(data), "--cfg", "models/yolov5n.yaml", "--img", "64", "--epochs", "2", "--batch-size", "2",
        "--workers", "0", "--project", str(tmp_path / "runs"), "--noplots"]))
    history = json.loads((Path(result["save_dir"]) / "training_history.json").read_text())
    assert result["skipped_steps"] == 2
    assert [e["skipped_steps"] for e in history["epochs"]] == [2, 2]
    assert all(np.isfinite(list(e["train_loss"].values())).all() for e in history["epochs"])


def _run_losses(tmp_path: Path, data: Path, name: str) -> list[list[float]]:
    result = train.main(train.parse_opt([
        "--data", str(data), "--cfg", "models/yolov5n.yaml", "--img", "64", "--epochs", "2", "--batch-size", "2",
        "--workers", "0", "--project", str(tmp_path / "runs"), "--name", name, "--noplots", "--seed", "3",
        "--deterministic", "--hyp", "data/hyps/hyp.medical-fast.yaml"]))
    history = json.loads((Path(result["save_dir"]) / "training_history.json").read_text())
    return [list(e["train_loss"].values()) + [e["val"]["mAP_0.5"]] for e in history["epochs"]]


def test_deterministic_runs_give_identical_losses(tmp_path: Path, med_root: Path):
    from tests.test_joint_pipeline import _joint_yaml

    data = _joint_yaml(tmp_path, med_root, n=6)
    first, second = _run_losses(tmp_path, data, "a"), _run_losses(tmp_path, data, "b")
    assert first == second  # bit-identical, augmentation (scale, translate, brightness) included
    assert len(first) == 2


@pytest.mark.parametrize("bad", ["nan", "inf"])
def test_gradnorm_weights_ignore_a_non_finite_step(bad: str):
    import torch

    from utils.training.gradnorm import GradNorm

    w = torch.nn.Parameter(torch.ones(3))
    balancer = GradNorm(("det", "view"), w)
    for value in (1.0, 2.0):
        losses = {"det": (w * value).sum(), "view": (w * 2 * value).sum()}
        balancer.combine(losses)
        balancer.step()
    before = balancer.weights.clone()
    losses = {"det": (w * float(bad)).sum(), "view": (w * 3).sum()}
    balancer.combine(losses)
    balancer.step()
    assert torch.equal(balancer.weights, before)
