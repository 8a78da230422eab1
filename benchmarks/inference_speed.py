"""Inference latency of a joint model as PyTorch (fused, eager), TorchScript and ONNX Runtime, against YOLOv5.

    python benchmarks/inference_speed.py --weights runs/train/exp/weights/best.pt --rounds 3 \
        --yolov5-python /tmp/y5env/bin/python --yolov5-weights ../shared/fixtures/yolov5/yolov5n-med-e20.pt

--weights is a joint checkpoint (detection + views, e.g. yolov5n at 320); it is copied into a temporary
folder and exported there (ONNX fixed at --img and dynamic, TorchScript dynamic). Each round runs, on the
valid images of --data, as separate processes:
- batch 1: detect.py with each file (the .pt, the dynamic TorchScript, the dynamic and the fixed ONNX),
  and YOLOv5's own detect.py on its own --yolov5-weights (a detection model of the same size);
- batch 32: val.py --batch-size 32 --task speed with the .pt and the dynamic exports, and YOLOv5's val.py.
Every figure is the program's own 'Speed:' line (pre-process, inference, NMS ms per image); the table
gives medians over rounds and the ratios are taken within each round, then the median. YOLOv5 runs from
a throwaway environment outside the repository (see benchmarks/vs_yolov5.py); it is never imported here.

--sweep first times ONNX Runtime session options in this process (forward only, batch 1, the fixed
export): intra-op threads, graph optimisation level, sequential or parallel execution.
"""
from __future__ import annotations

import argparse
import itertools
import os
import shutil
import statistics
import subprocess
import sys
import tempfile
import time
from pathlib import Path

import torch
import yaml

ROOT = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(ROOT))

from benchmarks.vs_yolov5 import mirror_dataset, offline_font_dir, speed_ms  # noqa: E402
from utils.backends import OnnxRuntimeBackend, SessionSettings  # noqa: E402
from utils.boxes import non_max_suppression  # noqa: E402
from utils.data.dataset_yaml import check_dataset  # noqa: E402
from utils.data.sources import LoadImages  # noqa: E402


def run_speed(cmd: list[str], env: dict, cwd: Path) -> tuple[float, float, float]:
    """Run one program to the end and return its Speed line (pre-process, inference, NMS ms per image)."""
    proc = subprocess.run(cmd, cwd=cwd, env=env, stdout=subprocess.PIPE, stderr=subprocess.STDOUT, text=True,
                          errors="replace")
    if proc.returncode != 0:
        raise RuntimeError(f"{' '.join(cmd)} exited with {proc.returncode}:\n{proc.stdout[-3000:]}")
    return speed_ms(proc.stdout)


def export_all(weights: Path, work: Path, img: int) -> dict[str, Path]:
    """The checkpoint copied into work/{fixed,dynamic}/ and exported there."""
    files = {"pt": work / "dynamic" / "joint.pt"}
    for folder, flags, formats in (("fixed", [], ["onnx"]), ("dynamic", ["--dynamic"], ["onnx", "torchscript"])):
        (work / folder).mkdir(parents=True)
        shutil.copyfile(weights, work / folder / "joint.pt")
        subprocess.run([sys.executable, "export.py", "--weights", str(work / folder / "joint.pt"), "--imgsz", str(img),
                        "--include", *formats, *flags], cwd=ROOT, check=True, stdout=subprocess.DEVNULL)
    files.update(onnx_fixed=work / "fixed" / "joint.onnx", onnx_dynamic=work / "dynamic" / "joint.onnx",
                 torchscript=work / "dynamic" / "joint.torchscript")
    return files


def sweep(onnx_file: Path, images: Path, img: int, n: int) -> None:
    """Median forward ms (batch 1) of the fixed ONNX export for each session setting, best first."""
    frames = []
    for _, im, *_ in LoadImages(str(images), img_size=img, stride=32, auto=False):
        frames.append(torch.from_numpy(im.copy()).float()[None])
        if len(frames) == n:
            break
    rows = []
    for threads, level, parallel, spin in itertools.product((0, 1, 2), ("basic", "extended", "all"), (False, True),
                                                          (False, True)):
        backend = OnnxRuntimeBackend(onnx_file, torch.device("cpu"), SessionSettings(threads, level, parallel, spin))
        backend.warmup()
        times = []
        for x in frames:
            t = time.perf_counter()
            non_max_suppression(backend(x / 255).decoded)  # with the work around it, which spinning threads slow
            times.append((time.perf_counter() - t) * 1e3)
        rows.append((statistics.median(times), threads, level, parallel, spin))
    print(f"\nONNX Runtime session options, fixed export, batch 1, median ms per image (forward and NMS) over "
          f"{len(frames)} images:")
    for ms, threads, level, parallel, spin in sorted(rows):
        mode = "parallel  " if parallel else "sequential"
        print(f"  {ms:6.2f} ms  threads {threads}  optimisation {level:8s}  {mode}  spinning {'on' if spin else 'off'}")


def main() -> None:
    p = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    p.add_argument("--weights", required=True, help="a joint checkpoint (.pt) of this project")
    p.add_argument("--data", default="data/med.yaml")
    p.add_argument("--img", type=int, default=320)
    p.add_argument("--rounds", type=int, default=3)
    p.add_argument("--yolov5-python", default="", help="python of a throwaway environment with the yolov5 package")
    p.add_argument("--yolov5-weights", default="", help="YOLOv5's own .pt for its detect.py / val.py")
    p.add_argument("--sweep", action="store_true", help="time ONNX Runtime session options first")
    p.add_argument("--sweep-images", type=int, default=60)
    opt = p.parse_args()

    data = check_dataset(str(ROOT / opt.data))
    images = Path(data["val"])
    img = str(opt.img)
    with tempfile.TemporaryDirectory(prefix="inference_speed_") as tmp:
        work = Path(tmp)
        files = export_all(Path(opt.weights).resolve(), work, opt.img)
        if opt.sweep:
            sweep(files["onnx_fixed"], images, opt.img, opt.sweep_images)
        env = {**os.environ, "PYTHONUNBUFFERED": "1", "TORCH_FORCE_NO_WEIGHTS_ONLY_LOAD": "1",
               "YOLOV5_CONFIG_DIR": str(offline_font_dir(work / "yolov5_config"))}
        ours = [sys.executable]
        detect = {f"ours {name}": ours + ["detect.py", "--weights", str(files[key])]
                  for name, key in (("PyTorch (fused)", "pt"), ("TorchScript", "torchscript"),
                                    ("ONNX Runtime", "onnx_dynamic"), ("ONNX Runtime fixed", "onnx_fixed"))}
        val = {f"ours {name}": ours + ["val.py", "--weights", str(files[key]), "--data", str(ROOT / opt.data)]
               for name, key in (("PyTorch (fused)", "pt"), ("TorchScript", "torchscript"),
                                 ("ONNX Runtime", "onnx_dynamic"))}
        if opt.yolov5_python and opt.yolov5_weights:
            splits = mirror_dataset(data, work / "data")
            y5_yaml = work / "y5data.yaml"
            y5_yaml.write_text(yaml.safe_dump({"path": str(work / "data"), "train": str(splits["train"]),
                                               "val": str(splits["val"]), "names": data["names"]}))
            y5 = [opt.yolov5_python, "-m"]
            weights = str(Path(opt.yolov5_weights).resolve())
            detect["YOLOv5 detect.py (PyTorch)"] = y5 + ["yolov5.detect", "--weights", weights]
            val["YOLOv5 val.py (PyTorch)"] = y5 + ["yolov5.val", "--weights", weights, "--data", str(y5_yaml)]
        common_detect = ["--source", str(images), "--img", img, "--device", "cpu", "--nosave",
                         "--project", str(work / "runs"), "--exist-ok"]
        common_val = ["--img", img, "--batch-size", "32", "--task", "speed", "--device", "cpu", "--workers", "2",
                      "--project", str(work / "runs"), "--exist-ok"]
        results: dict[str, list[tuple[float, float, float]]] = {}
        for r in range(opt.rounds):
            for table, runs, common in (("batch 1", detect, common_detect), ("batch 32", val, common_val)):
                for name, cmd in runs.items():
                    # YOLOv5 runs outside the repository: its checkpoints import `models.yolo`, which here is ours
                    ms = run_speed(cmd + common, env, work if "YOLOv5" in name else ROOT)
                    results.setdefault(f"{table} | {name}", []).append(ms)
                    print(f"round {r} {table:8s} {name:28s} {ms[0]:5.1f} + {ms[1]:6.1f} + {ms[2]:5.1f} ms", flush=True)
    report(results, opt)


def report(results: dict[str, list[tuple[float, float, float]]], opt: argparse.Namespace) -> None:
    """Median table and, per batch size, each of ours against YOLOv5's inference and total ms (per-round ratios)."""
    print(f"\n{Path(opt.weights).name}, img {opt.img}, {opt.rounds} rounds; ms per image, medians "
          f"(pre-process + inference + NMS = total)")
    for key, rows in results.items():
        med = [statistics.median(r[i] for r in rows) for i in range(3)]
        total = statistics.median(sum(r) for r in rows)
        print(f"  {key:44s} {med[0]:5.1f} + {med[1]:6.1f} + {med[2]:5.1f} = {total:6.1f}")
    for table in ("batch 1", "batch 32"):
        anchor = next((k for k in results if k.startswith(table) and "YOLOv5" in k), None)
        if anchor is None:
            continue
        print(f"\n{table}: ours / YOLOv5 (median of per-round ratios; inference, total)")
        for key, rows in results.items():
            if key.startswith(table) and key != anchor:
                inference = [o[1] / y[1] for o, y in zip(rows, results[anchor])]
                total = [sum(o) / sum(y) for o, y in zip(rows, results[anchor])]
                print(f"  {key.split(' | ')[1]:28s} inference {statistics.median(inference):5.2f} "
                      f"{[round(x, 2) for x in inference]}  total {statistics.median(total):5.2f}")


if __name__ == "__main__":
    main()
