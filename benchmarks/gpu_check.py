"""GPU acceptance check: everything a YOLOv5 user does on a GPU, in one run of under 8 minutes on one GPU.

    python benchmarks/gpu_check.py              # OUT=/some/folder python ... also writes $OUT/gpu_check.txt

Prints one line per check, PASS, FAIL or SKIP, with its figures, and a summary; exits 1 if any check
failed. With $OUT set, the same lines go to $OUT/gpu_check.txt and every command's log to
$OUT/gpu_check_logs/. The checks, in order:

  train.py, train_gradnorm.py, train_dual.py   one short epoch each on the med data (512 training images,
                                               the 183 valid ones), yolov5n at 320, batch 32, AMP as on any
                                               CUDA run (the default): finite losses, opt.yaml says amp: true,
                                               the checkpoint holds the gradient scaler's state
  val.py, val.py --half, detect.py             on CUDA with train.py's best.pt
  export                                       export.py --include onnx torchscript from that CUDA-trained
                                               checkpoint, then val.py on the .onnx (ONNX Runtime: the CUDA
                                               provider with onnxruntime-gpu, else the CPU, said in its log)
  torchrun                                     one process per GPU, NCCL, --sync-bn (with one GPU: one
                                               process, and NCCL/SyncBatchNorm are reported as not exercised)
  speed                                        images/s of yolov5s at 640, batch 32, FP32 vs AMP
                                               (benchmarks/amp_speed.py: the training step alone)

Datasets are read from ../shared/datasets (data/med.yaml); nothing is downloaded. The script's own logic
is tried without a GPU by a CPU dry run, which asks for AMP with --amp (bfloat16; the CPU default is
off), runs torchrun with two gloo processes and times the speed at a small size:

    python benchmarks/gpu_check.py --device cpu --train-images 16 --img 64 --speed-img 64 --speed-batch 4
"""
from __future__ import annotations

import argparse
import csv
import math
import os
import platform
import subprocess
import sys
import tempfile
import time
from datetime import datetime, timezone
from pathlib import Path

import torch
import yaml

ROOT = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(ROOT))

from benchmarks.amp_speed import measure  # noqa: E402
from utils.data.dataset_yaml import check_dataset  # noqa: E402

BUDGET_S = 7.5 * 60  # a check that would start after this is skipped, so the whole run stays under 8 minutes
SCRIPTS = {"train": "train.py", "gradnorm": "train_gradnorm.py", "dual": "train_dual.py"}


class Setup:
    """What the checks run on: the device flag, the image sizes and the training flags every run shares."""

    def __init__(self, opt: argparse.Namespace, work: Path) -> None:
        self.cpu = opt.device == "cpu"
        self.device, self.img, self.work = opt.device, str(opt.img), work
        self.data, self.runs = subset_yaml(work, opt.train_images), work / "runs"
        self.common = ["--cfg", "models/yolov5n.yaml", "--weights", "", "--img", self.img, "--epochs", "1",
                       "--batch-size", "32", "--workers", "8", "--hyp", "data/hyps/hyp.medical.yaml", "--exist-ok",
                       "--seed", "0", "--data", str(self.data), *(["--amp"] if self.cpu else [])]
        self.processes = 2 if self.cpu else torch.cuda.device_count()  # torchrun: one per GPU (gloo pair on a CPU)
        self.speed = (opt.speed_img, opt.speed_batch)


class Report:
    """Collects the check lines: printed at once, written to $OUT/gpu_check.txt at the end."""

    def __init__(self, out: Path | None) -> None:
        self.out, self.lines, self.counts = out, [], {"PASS": 0, "FAIL": 0, "SKIP": 0}
        self.start = time.time()

    def line(self, text: str) -> None:
        print(text, flush=True)
        self.lines.append(text)

    def check(self, status: str, name: str, detail: str) -> None:
        self.counts[status] += 1
        self.line(f"{status} {name}: {detail}")

    def elapsed(self) -> float:
        return time.time() - self.start

    def save(self) -> None:
        if self.out is not None:
            (self.out / "gpu_check.txt").write_text("\n".join(self.lines) + "\n")


class Runner:
    """Runs a command from the repository root with a timeout; keeps its log in the logs folder."""

    def __init__(self, logs: Path) -> None:
        self.logs = logs
        logs.mkdir(parents=True, exist_ok=True)

    def __call__(self, name: str, args: list[str], timeout: float) -> tuple[int, str, float]:
        start = time.time()
        try:
            done = subprocess.run([sys.executable, *args], cwd=ROOT, capture_output=True, text=True, timeout=timeout)
            code, log = done.returncode, done.stdout + done.stderr
        except subprocess.TimeoutExpired as e:
            code, log = 124, f"{e.stdout or ''}{e.stderr or ''}\nTIMEOUT after {timeout:.0f} s"
            log = log if isinstance(log, str) else str(log)
        (self.logs / f"{name}.log").write_text(log)
        return code, log, time.time() - start


def failure(code: int, log: str, logs: Path, name: str) -> str:
    last = [ln for ln in log.replace("\r", "\n").splitlines() if ln.strip()][-1:] or ["(no output)"]
    return f"exit {code}; {last[0][-160:]} (log: {logs / (name + '.log')})"


def subset_yaml(folder: Path, n_train: int) -> Path:
    """The med data with n_train training images (every other one) and the whole valid split."""
    data = check_dataset(str(ROOT / "data" / "med.yaml"))
    images = sorted(p for p in Path(data["train"]).rglob("*") if p.suffix.lower() in (".png", ".jpg", ".jpeg"))
    listing = folder / "train.txt"
    listing.write_text("".join(f"{p}\n" for p in images[::2][:n_train]))
    path = folder / "med_subset.yaml"
    path.write_text(yaml.safe_dump({"train": str(listing), "val": str(data["val"]), "names": data["names"],
                                    "cls_names": data["cls_names"]}))
    return path


def training_figures(run: Path) -> str:
    """What a finished one-epoch run recorded, checked: finite losses, AMP on in opt.yaml and the checkpoint."""
    with open(run / "results.csv") as f:
        row = {k.strip(): float(v) for k, v in next(csv.DictReader(f)).items()}
    losses = {k: v for k, v in row.items() if k.startswith("train/")}
    if not all(math.isfinite(v) for v in losses.values()):
        raise AssertionError(f"non-finite training loss: {losses}")
    opt = yaml.safe_load((run / "opt.yaml").read_text())
    if opt.get("amp") is not True:
        raise AssertionError(f"opt.yaml says amp: {opt.get('amp')} (AMP check failed or off)")
    ckpt = torch.load(run / "weights" / "last.pt", weights_only=True)
    scale = (ckpt.get("amp_scaler") or {}).get("scale")
    if not scale:
        raise AssertionError("last.pt holds no gradient-scaler state")
    loss_text = " ".join(f"{k[6:]}={v:.4f}" for k, v in losses.items())
    return (f"{opt['amp_dtype']} AMP, {loss_text}, mAP50={row['metrics/mAP_0.5']:.3f}, "
            f"view_acc={row.get('metrics/view_accuracy', float('nan')):.3f}, scale={scale:g}, "
            f"amp_skipped_steps={ckpt.get('amp_skipped_steps')}")


def train_checks(report: Report, run_cmd: Runner, setup: Setup) -> Path | None:
    """The three training scripts; returns train.py's best.pt (None if that run failed)."""
    best, runs = None, setup.runs
    for name, script in SCRIPTS.items():
        code, log, seconds = run_cmd(name, [script, *setup.common, "--device", setup.device,
                                            "--project", str(runs), "--name", name,
                                            *(["--noplots"] if name != "train" else [])], timeout=150)
        if code:
            report.check("FAIL", script, failure(code, log, run_cmd.logs, name))
            continue
        try:
            report.check("PASS", script, f"{seconds:.0f} s, {training_figures(runs / name)}")
            best = runs / name / "weights" / "best.pt" if name == "train" else best
        except (AssertionError, OSError, KeyError, StopIteration) as e:
            report.check("FAIL", script, str(e))
    return best


def inference_checks(report: Report, run_cmd: Runner, best: Path, setup: Setup) -> None:
    """val.py (FP32 and --half) and detect.py on CUDA with a CUDA-trained checkpoint."""
    work = setup.work
    for name, extra in (("val", []), ("val_half", ["--half"])):
        code, log, seconds = run_cmd(name, ["val.py", "--weights", str(best), "--data", "data/med.yaml", "--img",
                                            setup.img, "--device", setup.device, "--project", str(work / "val"),
                                            "--name", name, "--exist-ok", *extra], timeout=90)
        rows = [ln.split() for ln in log.splitlines() if ln.split()[:1] == ["all"]]
        if code or not rows or rows[0][1:3] != ["183", "183"]:
            report.check("FAIL", f"val.py {' '.join(extra)}".strip(), failure(code, log, run_cmd.logs, name)
                         if code else f"expected 183 images and instances, got {rows[:1]}")
        else:
            report.check("PASS", f"val.py {' '.join(extra)}".strip(),
                         f"{seconds:.0f} s, P={rows[0][3]} R={rows[0][4]} mAP50={rows[0][5]} mAP50-95={rows[0][6]}")
    images = sorted(Path(check_dataset(str(ROOT / "data" / "med.yaml"))["val"]).glob("*.png"))[:8]
    source = work / "detect_source.txt"
    source.write_text("".join(f"{p}\n" for p in images))
    code, log, seconds = run_cmd("detect", ["detect.py", "--weights", str(best), "--source", str(source), "--img",
                                            setup.img, "--device", setup.device, "--project", str(work / "detect"),
                                            "--exist-ok", "--save-txt"], timeout=90)
    written = list((work / "detect" / "exp").glob("*.png"))
    if code or len(written) != len(images):
        report.check("FAIL", "detect.py", failure(code, log, run_cmd.logs, "detect") if code
                     else f"{len(written)} of {len(images)} annotated images written")
    else:
        report.check("PASS", "detect.py", f"{seconds:.0f} s, {len(written)} images annotated")


def export_check(report: Report, run_cmd: Runner, best: Path, setup: Setup) -> None:
    """--- export: enabled as soon as export.py exists (YOLOv5's flags) ------------------------------------"""
    if not (ROOT / "export.py").exists():
        report.line("SKIP export (export.py not present)")
        report.counts["SKIP"] += 1
        return
    code, log, seconds = run_cmd("export", ["export.py", "--weights", str(best), "--include", "onnx", "torchscript",
                                            "--imgsz", setup.img, "--device", setup.device], timeout=120)
    made = [p.name for p in best.parent.iterdir() if p.suffix in (".onnx", ".torchscript")]
    if code or len(made) < 2:
        report.check("FAIL", "export", failure(code, log, run_cmd.logs, "export") if code else f"wrote {made}")
        return
    report.check("PASS", "export", f"{seconds:.0f} s, {', '.join(sorted(made))}")
    onnx_file = best.with_suffix(".onnx")
    code, log, seconds = run_cmd("val_onnx", ["val.py", "--weights", str(onnx_file), "--data", "data/med.yaml",
                                              "--img", setup.img, "--device", setup.device, "--project",
                                              str(setup.work / "val"), "--name", "val_onnx", "--exist-ok"], timeout=180)
    if code:
        report.check("FAIL", "val.py on the ONNX export", failure(code, log, run_cmd.logs, "val_onnx"))
    else:
        report.check("PASS", "val.py on the ONNX export", f"{seconds:.0f} s")


def torchrun_check(report: Report, run_cmd: Runner, setup: Setup) -> None:
    """One process per GPU with NCCL and --sync-bn (what `torchrun --nproc_per_node N train.py` does)."""
    gpus, runs = setup.processes, setup.runs
    devices = "cpu" if setup.cpu else ",".join(str(i) for i in range(gpus))
    args = ["-m", "torch.distributed.run", "--standalone", "--nproc_per_node", str(gpus), "train.py", *setup.common,
            "--device", devices, "--sync-bn", "--noplots", "--project", str(runs), "--name", "ddp"]
    code, log, seconds = run_cmd("torchrun", args, timeout=180)
    if code:
        report.check("FAIL", f"torchrun {gpus} process(es)", failure(code, log, run_cmd.logs, "torchrun"))
        return
    if gpus == 1:
        report.check("PASS", "torchrun 1 process", f"{seconds:.0f} s (one GPU: NCCL and SyncBatchNorm need 2+ "
                                                      f"processes and were not exercised)")
        return
    expected = (("gloo", "backend gloo"),) if setup.cpu else (("NCCL", "backend nccl"),
                                                                ("SyncBatchNorm", "Using SyncBatchNorm()"))
    problems = [what for what, text in expected if text not in log]
    try:
        figures = training_figures(runs / "ddp")
    except (AssertionError, OSError, KeyError, StopIteration) as e:
        problems.append(str(e))
        figures = ""
    status = "FAIL" if problems else "PASS"
    report.check(status, f"torchrun {gpus} processes ({'gloo' if setup.cpu else 'NCCL, --sync-bn'})",
                 f"missing: {problems}" if problems else f"{seconds:.0f} s, {figures}")


def speed_check(report: Report, setup: Setup) -> None:
    imgsz, batch = setup.speed
    device = torch.device("cpu") if setup.cpu else torch.device("cuda", 0)
    results = measure("models/yolov5s.yaml", imgsz, batch, device, iters=3 if setup.cpu else 30)
    figures = ", ".join(f"{name} {ips:.1f} images/s ({gib:.1f} GiB)" for name, (ips, gib) in results.items())
    speedup = results["amp"][0] / results["fp32"][0]
    report.check("PASS", f"speed yolov5s {imgsz} batch {batch} (training step)", f"{figures}; AMP {speedup:.2f}x FP32")


def main() -> int:
    p = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    p.add_argument("--out", type=Path, default=Path(os.environ["OUT"]) if os.environ.get("OUT") else None,
                   help="folder for gpu_check.txt and the logs (default: $OUT, else only printed)")
    p.add_argument("--device", default="0", help="the GPU to use; 'cpu' for a dry run of the script's logic")
    p.add_argument("--train-images", type=int, default=512, help="training images of the one-epoch runs")
    p.add_argument("--img", type=int, default=320, help="image size of the training, val, detect and export checks")
    p.add_argument("--speed-img", type=int, default=640, help="image size of the speed check")
    p.add_argument("--speed-batch", type=int, default=32, help="batch size of the speed check")
    opt = p.parse_args()
    if opt.out is not None:
        opt.out.mkdir(parents=True, exist_ok=True)
    report = Report(opt.out)
    work = Path(tempfile.mkdtemp(prefix="gpu_check_"))
    run_cmd = Runner((opt.out or work) / "gpu_check_logs")
    report.line(f"gpu_check {datetime.now(timezone.utc):%Y-%m-%d %H:%M} UTC, torch {torch.__version__}, "
                f"CUDA {torch.version.cuda}, python {platform.python_version()}")
    if opt.device == "cpu":
        report.line(f"CPU dry run ({os.cpu_count()} cores): the script's logic, not a GPU acceptance")
    elif not torch.cuda.is_available():
        report.check("FAIL", "cuda", "no CUDA device visible to torch")
        report.save()
        return 1
    else:
        names = [torch.cuda.get_device_name(i) for i in range(torch.cuda.device_count())]
        report.line(f"GPUs: {torch.cuda.device_count()} x {', '.join(sorted(set(names)))}")
    setup = Setup(opt, work)
    best = train_checks(report, run_cmd, setup)
    later = [("val.py, detect.py", lambda: inference_checks(report, run_cmd, best, setup), True),
             ("export", lambda: export_check(report, run_cmd, best, setup), True),
             ("torchrun", lambda: torchrun_check(report, run_cmd, setup), False),
             ("speed", lambda: speed_check(report, setup), False)]
    for name, run_check, needs_best in later:
        if needs_best and best is None:
            report.check("SKIP", name, "train.py did not finish, no CUDA-trained checkpoint")
        elif report.elapsed() > BUDGET_S:
            report.check("SKIP", name, f"time budget of {BUDGET_S:.0f} s spent")
        else:
            try:
                run_check()
            except Exception as e:  # a crash in one check is that check's FAIL, the others still run
                report.check("FAIL", name, f"{type(e).__name__}: {e}")
    c = report.counts
    report.line(f"gpu_check: {c['PASS']} passed, {c['FAIL']} failed, {c['SKIP']} skipped in {report.elapsed():.0f} s")
    report.save()
    return 1 if c["FAIL"] else 0


if __name__ == "__main__":
    sys.exit(main())
