"""Read a pickled torch file whose objects are another program's classes, without running code from it.

Why this exists: YOLOv5 saves whole nn.Module objects. A normal unpickle imports YOLOv5's classes
and lets the file call any function it names (os.system included). Here every global the pickle
names is listed first, opcode by opcode, without executing anything, and checked against a policy:

- REAL_GLOBALS (tensor and storage rebuilds, OrderedDict, set, dtypes, devices) are resolved to the
  real objects: they only rebuild tensors and plain containers;
- names of data-bearing classes (module classes, argparse namespaces, pathlib paths, numpy scalars)
  become InertRecord subclasses: the object is never built, its arguments and state are only kept;
- any other name stops the load with UnsafeWeightsError, which lists the refused names.

The loading itself is torch's own weights-only unpickler with the records registered as safe
globals, so a name the policy let through still cannot reach a real function.
"""
from __future__ import annotations

import pickletools
import zipfile
from _compat_pickle import IMPORT_MAPPING, NAME_MAPPING
from pathlib import Path
from typing import Any

import torch

_STORAGE_TYPES = ("Float", "Half", "BFloat16", "Double", "Long", "Int", "Short", "Char", "Byte", "Bool")
_DTYPES = ("float16", "bfloat16", "float32", "float64", "uint8", "int8", "int16", "int32", "int64", "bool")

# Resolved to the real objects: each only rebuilds a tensor, a storage or a plain container.
REAL_GLOBALS: frozenset[str] = frozenset(
    {f"torch.{t}Storage" for t in _STORAGE_TYPES}
    | {f"torch.{d}" for d in _DTYPES}
    | {
        "torch._utils._rebuild_tensor", "torch._utils._rebuild_tensor_v2", "torch._utils._rebuild_tensor_v3",
        "torch._utils._rebuild_parameter", "torch._utils._rebuild_parameter_with_state",
        "torch.storage.UntypedStorage", "torch.storage.TypedStorage",
        "torch.Size", "torch.device", "collections.OrderedDict", "builtins.set",
        "_codecs.encode",  # how pickle protocol 2 writes a bytes object: a string and its 'latin1' codec
    }
)

# Class names under these packages become records: YOLOv5's code (run from its repository or as the
# `yolov5` pip package) and torch.nn's layers. Only identifiers that start with a capital letter count.
RECORD_PACKAGES = ("models.", "utils.", "yolov5.", "torch.nn.modules.")
RECORD_NAMES: frozenset[str] = frozenset({
    "argparse.Namespace",
    "pathlib.Path", "pathlib.PosixPath", "pathlib.WindowsPath",
    "pathlib.PurePath", "pathlib.PurePosixPath", "pathlib.PureWindowsPath",
    # numpy scalars and arrays in training metadata (e.g. a fitness value): kept as records, never read
    "numpy.dtype", "numpy.ndarray",
    "numpy.core.multiarray.scalar", "numpy._core.multiarray.scalar",
    "numpy.core.multiarray._reconstruct", "numpy._core.multiarray._reconstruct",
})

_STRING_OPCODES = {"SHORT_BINUNICODE", "BINUNICODE", "BINUNICODE8", "UNICODE", "SHORT_BINSTRING", "BINSTRING", "STRING"}
_PUT_OPCODES = {"PUT", "BINPUT", "LONG_BINPUT"}
_GET_OPCODES = {"GET", "BINGET", "LONG_BINGET"}


class UnsafeWeightsError(ValueError):
    """The pickle names globals that a weights file never needs; nothing from the file was run."""

    def __init__(self, refused: list[str]) -> None:
        self.refused = refused
        super().__init__(", ".join(refused))


class WeightsFormatError(ValueError):
    """The file is not the kind of weights file the caller expected (its message says what is wrong)."""


class InertRecord:
    """An object the file describes but that is never built: the arguments and state it was given, kept as data.

    Subclasses are made per global name (record_class); `qualified_name` is that name.
    """

    qualified_name = "InertRecord"

    def __new__(cls, *args: Any, **kwargs: Any) -> InertRecord:
        record = object.__new__(cls)
        record.args = args
        record.state = {}
        return record

    def __init__(self, *args: Any, **kwargs: Any) -> None:
        """Called when the pickle 'calls' the class: there is nothing to run, __new__ kept the arguments."""

    def __setstate__(self, state: Any) -> None:
        if isinstance(state, tuple) and len(state) == 2 and all(s is None or isinstance(s, dict) for s in state):
            state = {**(state[0] or {}), **(state[1] or {})}  # (instance dict, slot values), as pickle writes them
        self.state = state if isinstance(state, dict) else {"_state": state}

    @property
    def class_name(self) -> str:
        return self.qualified_name.rsplit(".", 1)[-1]

    def get(self, key: str, default: Any = None) -> Any:
        return self.state.get(key, default)

    def __repr__(self) -> str:
        return f"<record of {self.qualified_name}>"


def record_class(qualified_name: str) -> type[InertRecord]:
    """A fresh InertRecord subclass standing in for the class the pickle names."""
    short = qualified_name.rsplit(".", 1)[-1]
    return type(short, (InertRecord,), {"qualified_name": qualified_name, "__module__": __name__})


def is_record_name(name: str) -> bool:
    """Whether a global may be stood in for by an InertRecord."""
    if name in RECORD_NAMES:
        return True
    module, _, short = name.rpartition(".")
    if module == "numpy.dtypes" and short.endswith("DType"):
        return True
    return name.startswith(RECORD_PACKAGES) and short.isidentifier() and short[:1].isupper()


def _normalised(module: str, name: str) -> str:
    """Python 2 names (as pickle protocol 2 writes them, e.g. __builtin__.set) mapped as torch maps them."""
    if (module, name) in NAME_MAPPING:
        module, name = NAME_MAPPING[(module, name)]
    elif module in IMPORT_MAPPING:
        module = IMPORT_MAPPING[module]
    return f"{module}.{name}"


def pickle_globals(data: bytes) -> list[str]:
    """Every global a pickle names, in order of first use; read opcode by opcode, nothing is executed.

    GLOBAL and INST carry the name; STACK_GLOBAL (protocol 4) takes the two strings pushed before it,
    which may come from the memo. An extension-registry code (EXT1/2/4) is reported as such.
    """
    found: list[str] = []
    pushed: list[Any] = []  # what each opcode pushed, as far as strings are concerned (None otherwise)
    memo: dict[int, Any] = {}
    try:
        for opcode, arg, _ in pickletools.genops(data):
            op = opcode.name
            if op in ("GLOBAL", "INST"):
                module, _, name = str(arg).partition(" ")
                found.append(_normalised(module, name))
                pushed.append(None)
            elif op == "STACK_GLOBAL":
                module, name = (pushed[-2:] if len(pushed) >= 2 else [None, None])
                ok = isinstance(module, str) and isinstance(name, str)
                found.append(_normalised(module, name) if ok else "<a STACK_GLOBAL the reader cannot resolve>")
                pushed.append(None)
            elif op in ("EXT1", "EXT2", "EXT4"):
                found.append(f"<extension registry code {arg}>")
            elif op in _STRING_OPCODES:
                pushed.append(arg.decode("latin1") if isinstance(arg, bytes) else arg)
            elif op in _PUT_OPCODES:
                memo[int(arg)] = pushed[-1] if pushed else None
            elif op == "MEMOIZE":
                memo[len(memo)] = pushed[-1] if pushed else None
            elif op in _GET_OPCODES:
                pushed.append(memo.get(int(arg)))
            elif op not in ("PROTO", "FRAME", "STOP"):
                pushed.append(None)
    except (ValueError, EOFError) as error:
        raise WeightsFormatError(f"the pickle inside is malformed ({error})") from error
    return list(dict.fromkeys(found))


def read_pickle_bytes(path: Path) -> bytes:
    """The pickle (data.pkl) of a torch zip-format file."""
    try:
        with zipfile.ZipFile(path) as archive:
            members = [n for n in archive.namelist() if n == "data.pkl" or n.endswith("/data.pkl")]
            if len(members) != 1:
                raise WeightsFormatError(f"expected one data.pkl in the archive, found {len(members)}")
            return archive.read(members[0])
    except zipfile.BadZipFile as error:
        raise WeightsFormatError("not a torch zip-format file (torch.save has written zip files since torch 1.6)") \
            from error


def globals_in_file(path: Path) -> list[str]:
    """Every global the file's pickle names (see pickle_globals)."""
    return pickle_globals(read_pickle_bytes(path))


def load_restricted(path: Path, names: list[str] | None = None) -> Any:
    """Unpickle `path` under the policy above; module objects come back as InertRecord trees.

    Raises UnsafeWeightsError (listing every refused global) before anything is loaded.
    """
    names = globals_in_file(path) if names is None else names
    refused = [n for n in names if n not in REAL_GLOBALS and not is_record_name(n)]
    if refused:
        raise UnsafeWeightsError(refused)
    records = [(record_class(n), n) for n in names if n not in REAL_GLOBALS]
    with torch.serialization.safe_globals(records):
        return torch.load(path, map_location="cpu", weights_only=True)
