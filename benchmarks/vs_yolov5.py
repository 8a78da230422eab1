"""Training throughput and inference latency against YOLOv5, on this machine, in one session.

YOLOv5 is never a dependency of this project: install it in a throwaway environment outside
the repository and pass that environment's python, e.g.

    python3.11 -m venv /tmp/y5env && /tmp/y5env/bin/pip install yolov5   # or a clone's requirements
    python benchmarks/vs_yolov5.py --yolov5-python /tmp/y5env/bin/python --rounds 3

YOLOv5 7.0 (the last release, pip package 7.0.14) needs numpy<2 and Pillow<10 in that
environment; it must also find its fonts offline, which this script arranges.

With --yolov5-dir (a clone of the repository) its train.py / detect.py / val.py are run as
scripts; otherwise the pip package's modules (`python -m yolov5.train`, ...).

Each round trains one epoch of yolov5n at the same image size, batch and workers with our
train.py (hyp.medical, the joint model on the med data) and with YOLOv5's train.py (each
hyp in --yolov5-hyps), then times detect.py (batch 1) and val.py (batch 32) on the valid
images with the weights each run just wrote. Training throughput is the number of training
images over the elapsed time of the epoch's progress bar (the same tqdm figure in both
programs: data loading, forward, backward and optimizer, not start-up or validation); peak
RSS is the training process's own. Ratios are taken within each round, then the median.

Both programs read the same files through a folder of symlinks in a temporary directory, so
YOLOv5's label cache is written there and never beside the shared dataset. YOLOv5 does not
know the view line of the med labels and reads it as a zero-size box (see the dataset
README); that changes no image count and no measurable amount of work.
"""
from __future__ import annotations

import argparse
import os
import re
import statistics
import subprocess
import sys
import tempfile
import time
from pathlib import Path

import yaml

ROOT = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(ROOT))

from utils.data.dataset_yaml import check_dataset  # noqa: E402

BAR = re.compile(r"(\d+)/(\d+) \[(?:(\d+):)?(\d+):(\d+)<")
SPEED = re.compile(r"Speed: ([\d.]+)ms pre-process, ([\d.]+)ms inference, ([\d.]+)ms NMS per image")
IMAGE_SUFFIXES = {".png", ".jpg", ".jpeg", ".bmp", ".tif", ".tiff", ".webp"}


def epoch_seconds(log: str) -> float:
    """Elapsed seconds of the finished progress bar of the (single) training epoch, by tqdm's own clock.

    Both programs start each training-bar line with "epoch/last_epoch", i.e. "0/0" for a one-epoch
    run; the caching and validation bars do not.
    """
    finished = []
    for line in log.replace("\r", "\n").splitlines():
        if re.match(r"\s*0/0\s", line):
            finished += [m for m in BAR.finditer(line) if m.group(1) == m.group(2)]
    if not finished:
        raise RuntimeError(f"no finished training progress bar in the log:\n{log[-3000:]}")
    h, m, s = finished[-1].group(3, 4, 5)
    return int(h or 0) * 3600 + int(m) * 60 + int(s)


def speed_ms(log: str) -> tuple[float, float, float]:
    """(pre-process, inference, NMS) ms per image from the last YOLOv5-style 'Speed:' line."""
    found = SPEED.findall(log)
    if not found:
        raise RuntimeError(f"no 'Speed:' line in the log:\n{log[-3000:]}")
    return tuple(float(x) for x in found[-1])


def mirror_dataset(data: dict, dst: Path) -> dict[str, Path]:
    """Symlink every image and label file of the train and val splits under dst/<split>/{images,labels}."""
    splits = {}
    for split in ("train", "val"):
        images_dir = Path(data[split])
        labels_dir = images_dir.parent / "labels"
        out = dst / split
        (out / "images").mkdir(parents=True)
        (out / "labels").mkdir(parents=True)
        for image in sorted(images_dir.iterdir()):
            if image.suffix.lower() in IMAGE_SUFFIXES:
                (out / "images" / image.name).symlink_to(image)
                label = labels_dir / f"{image.stem}.txt"
                if label.exists():
                    (out / "labels" / label.name).symlink_to(label)
        splits[split] = out / "images"
    return splits


def offline_font_dir(path: Path) -> Path:
    """A YOLOv5 config dir holding the fonts it would otherwise download at start-up (no internet here).

    matplotlib's DejaVu Sans stands in for Arial; YOLOv5 only draws labels with it.
    """
    import matplotlib

    font = Path(matplotlib.get_data_path()) / "fonts" / "ttf" / "DejaVuSans.ttf"
    path.mkdir(parents=True, exist_ok=True)
    for name in ("Arial.ttf", "Arial.Unicode.ttf"):
        if not (path / name).exists():
            (path / name).symlink_to(font)
    return path


def run(cmd: list[str], cwd: Path, env: dict) -> tuple[str, float, float]:
    """Run cmd; return (stdout+stderr, wall seconds, peak RSS GB of the process itself)."""
    t0 = time.perf_counter()
    proc = subprocess.Popen(cmd, cwd=cwd, env=env, stdout=subprocess.PIPE, stderr=subprocess.STDOUT, text=True,
                            errors="replace")
    log = proc.stdout.read()
    _, status, usage = os.wait4(proc.pid, 0)
    proc.returncode = os.waitstatus_to_exitcode(status)
    if proc.returncode != 0:
        raise RuntimeError(f"{' '.join(cmd)} exited with {proc.returncode}:\n{log[-4000:]}")
    return log, time.perf_counter() - t0, usage.ru_maxrss / 1e6


class Program:
    """How to call train/detect/val of one implementation."""

    def __init__(self, name: str, python: str, scripts_dir: Path | None, module_prefix: str | None) -> None:
        self.name, self.python, self.scripts_dir, self.module_prefix = name, python, scripts_dir, module_prefix

    def cmd(self, script: str, *args: str) -> list[str]:
        if self.module_prefix:
            return [self.python, "-m", f"{self.module_prefix}.{script}", *args]
        return [self.python, str(self.scripts_dir / f"{script}.py"), *args]


def measure(program: Program, hyp: Path, data_yaml: Path, work: Path, tag: str, opt, env: dict,
            extra: list[str]) -> dict:
    """Train one epoch, then time detect.py and val.py with the weights it wrote."""
    project = work / "runs" / program.name
    train_log, wall, rss = run(program.cmd(
        "train", "--weights", "", "--cfg", opt.cfg, "--data", str(data_yaml), "--hyp", str(hyp), "--img", str(opt.img),
        "--batch-size", str(opt.batch_size), "--epochs", "1", "--workers", str(opt.workers), "--device", "cpu",
        "--project", str(project), "--name", tag, "--exist-ok", "--noplots", *extra), work, env)
    log_dir = ROOT / "runs" / "vs_yolov5_logs"
    log_dir.mkdir(parents=True, exist_ok=True)
    (log_dir / f"{program.name}_{tag}_train.log").write_text(train_log)
    seconds = epoch_seconds(train_log)
    weights = project / tag / "weights" / "last.pt"
    detect_log, *_ = run(program.cmd(
        "detect", "--weights", str(weights), "--source", str(work / "data" / "val" / "images"), "--img", str(opt.img),
        "--device", "cpu", "--nosave", "--project", str(project), "--name", f"{tag}_detect", "--exist-ok"), work, env)
    val_log, *_ = run(program.cmd(
        "val", "--weights", str(weights), "--data", str(data_yaml), "--img", str(opt.img), "--batch-size", "32",
        "--device", "cpu", "--project", str(project), "--name", f"{tag}_val", "--exist-ok"), work, env)
    return {"epoch_s": seconds, "train_wall_s": wall, "rss_gb": rss,
            "detect_ms": speed_ms(detect_log), "val_ms": speed_ms(val_log)}


def main() -> None:
    p = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    p.add_argument("--yolov5-python", required=True, help="python of the throwaway environment that has YOLOv5")
    p.add_argument("--yolov5-dir", default="", help="a YOLOv5 clone (run its scripts); default: the pip package")
    p.add_argument("--yolov5-hyps", nargs="+", default=["data/hyps/hyp.medical.yaml", "data/hyps/hyp.scratch-low.yaml"],
                   help="hyp files YOLOv5 trains with (ours always uses hyp.medical)")
    p.add_argument("--ours-variants", nargs="*", default=["--cache off --no-channels-last", "--rect-shuffle"],
                   help="extra flag sets our train.py is also measured with, beside its plain run (YOLOv5's flags "
                        "only: the automatic RAM cache and memory format); the defaults: the levers turned off, "
                        "and the opt-in rectangular batches")
    p.add_argument("--data", default="data/med.yaml")
    p.add_argument("--cfg", default="yolov5n.yaml")
    p.add_argument("--img", type=int, default=320)
    p.add_argument("--batch-size", type=int, default=16)
    p.add_argument("--workers", type=int, default=2)
    p.add_argument("--rounds", type=int, default=3)
    opt = p.parse_args()

    data = check_dataset(str(ROOT / opt.data))
    ours = Program("ours", sys.executable, ROOT, None)
    yolov5 = Program("yolov5", opt.yolov5_python, Path(opt.yolov5_dir) if opt.yolov5_dir else None,
                     None if opt.yolov5_dir else "yolov5")
    with tempfile.TemporaryDirectory(prefix="vs_yolov5_") as tmp:
        work = Path(tmp)
        # YOLOv5 7.0 pickles whole models and predates torch 2.6's weights_only default: let its own
        # torch.load calls unpickle the checkpoints it just wrote (this environment variable changes
        # nothing in our programs, which write and read plain-data checkpoints).
        env = {**os.environ, "PYTHONUNBUFFERED": "1", "TORCH_FORCE_NO_WEIGHTS_ONLY_LOAD": "1",
               "YOLOV5_CONFIG_DIR": str(offline_font_dir(work / "yolov5_config"))}
        splits = mirror_dataset(data, work / "data")
        n_train = len(list(splits["train"].iterdir()))
        data_yaml = work / "data.yaml"
        fields = {"path": str(work / "data"), "train": "train/images", "val": "val/images", "names": data["names"]}
        if data.get("cls_names"):
            fields["cls_names"] = list(data["cls_names"])
        data_yaml.write_text(yaml.safe_dump(fields, sort_keys=False))
        medical = ROOT / "data/hyps/hyp.medical.yaml"
        configs = [("ours", ours, medical, [])]
        configs += [(f"ours {v}", ours, medical, v.split()) for v in opt.ours_variants if v.strip()]
        configs += [(f"yolov5 {Path(h).stem}", yolov5, ROOT / h, []) for h in opt.yolov5_hyps]
        rows: dict[str, list[dict]] = {name: [] for name, *_ in configs}
        for r in range(opt.rounds):
            for k, (name, program, hyp, extra) in enumerate(configs):
                tag = f"r{r}_c{k}"
                res = measure(program, hyp, data_yaml, work, tag, opt, env, extra)
                res["img_s"] = n_train / res["epoch_s"]
                rows[name].append(res)
                print(f"round {r} {name:28s} {res['img_s']:6.2f} img/s  epoch {res['epoch_s']:.0f} s  "
                      f"RSS {res['rss_gb']:.2f} GB  detect {sum(res['detect_ms']):.1f} ms  val {sum(res['val_ms']):.1f} ms",
                      flush=True)

    print(f"\n{opt.cfg}, img {opt.img}, batch {opt.batch_size}, workers {opt.workers}, {n_train} training images, "
          f"{opt.rounds} rounds, 1 epoch each; medians (per-round ratios ours / YOLOv5)")
    print(f"{'run':34s} {'img/s':>7s} {'train wall s':>12s} {'peak RSS':>9s} {'detect ms/img':>26s} "
          f"{'val ms/img':>26s}")
    for name, *_ in configs:
        res = rows[name]
        det = [statistics.median(x["detect_ms"][i] for x in res) for i in range(3)]
        val = [statistics.median(x["val_ms"][i] for x in res) for i in range(3)]
        print(f"{name:34s} {statistics.median(x['img_s'] for x in res):7.2f} "
              f"{statistics.median(x['train_wall_s'] for x in res):12.1f} "
              f"{statistics.median(x['rss_gb'] for x in res):7.2f}GB "
              f"{sum(det):6.1f} ({det[0]:.1f}+{det[1]:.1f}+{det[2]:.1f}) {sum(val):8.1f} ({val[0]:.1f}+{val[1]:.1f}+{val[2]:.1f})")
    print("\ntraining images/s, ours / YOLOv5 (median of per-round ratios, per round in brackets):")
    for ours_name in [n for n, program, *_ in configs if program is ours]:
        for y_name in [n for n, program, *_ in configs if program is yolov5]:
            ratios = [o["img_s"] / y["img_s"] for o, y in zip(rows[ours_name], rows[y_name])]
            print(f"  {ours_name:30s} / {y_name:26s} {statistics.median(ratios):5.2f} {[round(x, 2) for x in ratios]}")
    print("detect/val: total (pre-process + inference + NMS) per image, each program's own 'Speed:' line")


if __name__ == "__main__":
    main()
