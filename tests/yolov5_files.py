"""Test files derived from the real YOLOv5 checkpoints: renamed module paths and crafted payloads.

The pickle inside a torch zip file is edited opcode by opcode (pickletools), and the zip is
rewritten with every other member copied unchanged, so the tensors stay the fixture's own.
"""
from __future__ import annotations

import pickletools
import struct
import zipfile
from pathlib import Path

import pytest

FIXTURES = Path(__file__).resolve().parents[2] / "shared" / "fixtures" / "yolov5"
MED_E20 = FIXTURES / "yolov5n-med-e20.pt"
COCO_N = FIXTURES / "yolov5n-coco128-e1.pt"
COCO_S = FIXTURES / "yolov5s-coco128-e1.pt"
MIDTRAINING = FIXTURES / "yolov5n-coco128-midtraining-last.pt"


def fixture(path: Path) -> Path:
    if not path.is_file():
        pytest.fail(f"the YOLOv5 fixture {path.name} is expected in {FIXTURES}")
    return path


def read_pickle(path: Path) -> bytes:
    with zipfile.ZipFile(path) as archive:
        name = next(n for n in archive.namelist() if n.endswith("/data.pkl"))
        return archive.read(name)


def write_with_pickle(template: Path, dst: Path, data_pkl: bytes) -> Path:
    """A copy of the torch zip file `template` whose data.pkl is `data_pkl`."""
    with zipfile.ZipFile(template) as src, zipfile.ZipFile(dst, "w", zipfile.ZIP_STORED) as out:
        for info in src.infolist():
            out.writestr(info.filename, data_pkl if info.filename.endswith("/data.pkl") else src.read(info.filename))
    return dst


def rename_modules(data: bytes, old_prefix: str, new_prefix: str) -> bytes:
    """The pickle with every GLOBAL whose module starts with old_prefix moved under new_prefix."""
    out, last = bytearray(), 0
    for opcode, arg, pos in pickletools.genops(data):
        if opcode.name == "GLOBAL" and str(arg).startswith(old_prefix):
            module, name = str(arg).split(" ", 1)
            end = data.index(b"\n", data.index(b"\n", pos + 1) + 1) + 1  # 'c' module '\n' name '\n'
            out += data[last:pos] + b"c" + (new_prefix + module[len(old_prefix):]).encode() + b"\n"
            out += name.encode() + b"\n"
            last = end
    return bytes(out + data[last:])


# ------------------------------------------------------------------ pickle opcodes (protocol 2) for payloads

def text(value: str) -> bytes:
    """BINUNICODE: a str."""
    raw = value.encode()
    return b"X" + struct.pack("<I", len(raw)) + raw


def call(module: str, name: str, *args: bytes) -> bytes:
    """GLOBAL module.name, then REDUCE with a tuple of the given (already encoded) arguments."""
    return b"c" + f"{module}\n{name}\n".encode() + b"(" + b"".join(args) + b"tR"


def tuple_of(*items: bytes) -> bytes:
    return b"(" + b"".join(items) + b"t"


def with_extra_entry(data: bytes, key: str, value: bytes) -> bytes:
    """A real checkpoint's pickle with one more top-level entry: the dict is on the stack just before STOP."""
    if not data.endswith(b"."):
        raise ValueError("expected a pickle ending with STOP")
    return data[:-1] + text(key) + value + b"s."


def yolov5_like(payload: bytes) -> bytes:
    """A minimal pickle shaped like YOLOv5's: {'model': models.yolo.DetectionModel(...), 'payload': <payload>}."""
    model = b"cmodels.yolo\nDetectionModel\n)\x81}b"  # class, empty args, NEWOBJ, empty state, BUILD
    return b"\x80\x02}(" + text("model") + model + text("payload") + payload + b"u."
