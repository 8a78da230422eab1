"""Crafted files that look like YOLOv5 checkpoints: every refused global is named, nothing is run.

Each payload would create a marker file if executed; the tests check the error names the global,
and that the marker does not exist, with and without --trust-weights.
"""
from __future__ import annotations

import pickle
from pathlib import Path

import pytest
import torch

from tests.yolov5_files import (MED_E20, call, fixture, read_pickle, text, tuple_of, with_extra_entry,
                                write_with_pickle, yolov5_like)
from utils.checkpoints import CheckpointError, load_checkpoint
from utils.weights.restricted import REAL_GLOBALS, UnsafeWeightsError, is_record_name, pickle_globals


def payloads(marker: Path) -> dict[str, bytes]:
    """Global named in the error -> pickle bytes that would create `marker` if run."""
    m = str(marker)
    return {
        "os.system": call("os", "system", text(f"touch {m}")),
        "posix.system": call("posix", "system", text(f"touch {m}")),  # what pickling os.system writes on Linux
        "builtins.eval": call("builtins", "eval", text(f"open({m!r}, 'w').close()")),
        "builtins.exec": call("__builtin__", "exec", text(f"open({m!r}, 'w').close()")),  # Python 2 spelling
        "subprocess.check_call": call("subprocess", "check_call", tuple_of(text("touch"), text(m))),
        "subprocess.Popen": call("subprocess", "Popen", tuple_of(text("touch"), text(m))),
        "torch.save": call("torch", "save", text("x"), text(m)),  # a torch function that is not a rebuild
        "torch.serialization.load": call("torch.serialization", "load", text(m)),
    }


@pytest.mark.parametrize("refused", list(payloads(Path("m"))))
def test_real_checkpoint_with_a_payload_is_refused_naming_the_global(tmp_path: Path, refused: str):
    marker = tmp_path / "marker"
    data = with_extra_entry(read_pickle(fixture(MED_E20)), "payload", payloads(marker)[refused])
    crafted = write_with_pickle(MED_E20, tmp_path / "yolov5n-crafted.pt", data)
    for trust in (False, True):  # --trust-weights does not change the path a YOLOv5 file takes
        with pytest.raises(CheckpointError) as error:
            load_checkpoint(crafted, trust=trust)
        message = str(error.value)
        assert "yolov5n-crafted.pt" in message and refused in message and "refused" in message
        assert "\n" not in message  # one sentence
    assert not marker.exists()


def test_every_refused_global_of_one_file_is_listed(tmp_path: Path):
    marker = tmp_path / "marker"
    both = call("builtins", "eval", text("1")) + call("os", "system", text(f"touch {marker}"))
    data = with_extra_entry(read_pickle(fixture(MED_E20)), "a", tuple_of(both))
    crafted = write_with_pickle(MED_E20, tmp_path / "two.pt", data)
    with pytest.raises(CheckpointError, match=r"builtins\.eval, os\.system"):
        load_checkpoint(crafted)
    assert not marker.exists()


def test_the_payload_is_live_under_a_plain_unpickle(tmp_path: Path):
    """The control: the same bytes do run code when unpickled without restriction, so the tests above can fail."""
    marker = tmp_path / "marker"
    data = yolov5_like(payloads(marker)["builtins.exec"])
    template = tmp_path / "template.pt"
    torch.save({}, template)
    crafted = write_with_pickle(template, tmp_path / "minimal.pt", data)
    with pytest.raises(CheckpointError, match=r"builtins\.exec"):
        load_checkpoint(crafted, trust=True)
    assert not marker.exists()
    pickle.loads(data)  # imports this project's models.yolo and runs the payload
    assert marker.exists()


def test_protocol_4_stack_global_is_named_too():
    """STACK_GLOBAL takes its module and name from strings pushed before it (here through the memo)."""
    data = pickle.dumps(print, protocol=4)
    assert pickle_globals(data) == ["builtins.print"]
    assert not is_record_name("builtins.print") and "builtins.print" not in REAL_GLOBALS


def test_policy_of_names():
    for name in ("models.yolo.DetectionModel", "models.common.C3", "yolov5.models.yolo.Detect",
                 "torch.nn.modules.conv.Conv2d", "argparse.Namespace", "pathlib.PosixPath", "numpy.dtype"):
        assert is_record_name(name), name
    for name in ("os.system", "posix.system", "builtins.eval", "subprocess.Popen", "torch.load", "torch.save",
                 "torch.nn.modules.module.Module.__setattr__", "models.yolo.attempt_load", "numpy.load",
                 "torch._tensor._rebuild_from_type_v2", "functools.partial", "importlib.import_module"):
        assert not is_record_name(name) and name not in REAL_GLOBALS, name
    assert "torch._utils._rebuild_tensor_v2" in REAL_GLOBALS and "collections.OrderedDict" in REAL_GLOBALS


def test_unsafe_error_lists_names():
    assert UnsafeWeightsError(["a.b", "c.d"]).refused == ["a.b", "c.d"]


def test_a_non_yolov5_crafted_file_keeps_the_old_refusal(tmp_path: Path):
    marker = tmp_path / "marker"
    crafted = tmp_path / "other.pt"
    template = tmp_path / "template.pt"
    torch.save({}, template)
    write_with_pickle(template, crafted, b"\x80\x02}(" + text("x") + payloads(marker)["os.system"] + b"u.")
    for trust in (False, True):
        with pytest.raises(CheckpointError, match="no weights file runs code here"):
            load_checkpoint(crafted, trust=trust)
    assert not marker.exists()
