"""Where decoded images are kept between epochs: --cache ram, disk, off, or auto (the default).

auto caches in RAM when the resized images fit comfortably in the memory that is free: decoding a PNG
costs more than the rest of a sample's loading, and the cached pixels are exactly the ones a fresh
decode gives (same resize), so training learns the same thing, faster. One log line says what was decided.
"""
from __future__ import annotations

import hashlib
import os
from pathlib import Path

import numpy as np

from utils.logger import LOGGER

CACHE_CHOICES = ("auto", "ram", "disk", "off")
OFF_WORDS = ("", "off", "none", "no", "false", "0")
AUTO_RAM_FRACTION = 0.25  # auto uses at most this share of the available memory (all processes of a torchrun)


def cache_choice(value: str | bool | None) -> str:
    """--cache's value as one of CACHE_CHOICES (None and 'off'-like words are off; True or bare --cache is ram)."""
    if value is None or value is False:
        return "off"
    if value is True:
        return "ram"
    text = str(value).strip().lower()
    if text in OFF_WORDS:
        return "off"
    if text not in CACHE_CHOICES:
        raise ValueError(f"--cache {value}: expected one of {', '.join(CACHE_CHOICES)}")
    return text


def available_memory() -> int | None:
    """Bytes of memory available to new allocations (Linux MemAvailable), or None where unknown."""
    try:
        with open("/proc/meminfo") as f:
            for line in f:
                if line.startswith("MemAvailable:"):
                    return int(line.split()[1]) * 1024
    except (OSError, ValueError, IndexError):
        pass
    try:
        return os.sysconf("SC_AVPHYS_PAGES") * os.sysconf("SC_PAGE_SIZE")
    except (ValueError, OSError, AttributeError):
        return None


def ram_needed(shapes_wh: np.ndarray, img_size: int) -> int:
    """Bytes of the images resized so their long side is img_size (3 uint8 channels), as the RAM cache keeps them."""
    shapes = np.asarray(shapes_wh, dtype=np.float64).reshape(-1, 2)
    if not len(shapes):
        return 0
    resized = np.maximum(np.ceil(shapes * img_size / shapes.max(1, keepdims=True)), 1)  # rounded up, as loaded
    return int(resized.prod(1).sum() * 3)


def resolve_cache(value: str | bool | None, shapes_wh: np.ndarray, img_size: int, prefix: str = "",
                  memory: int | None = None, processes: int | None = None) -> str:
    """'ram', 'disk' or 'off' for this dataset; auto decides (and logs why) from the memory the images need."""
    choice = cache_choice(value)
    if choice != "auto":
        return choice
    processes = processes or max(int(os.environ.get("LOCAL_WORLD_SIZE", 1)), 1)  # each torchrun rank caches
    need = ram_needed(shapes_wh, img_size) * processes
    memory = available_memory() if memory is None else memory
    if memory is not None and need <= AUTO_RAM_FRACTION * memory:
        LOGGER.info(f"{prefix}caching images in RAM: {need / 1e9:.2f} GB of {memory / 1e9:.1f} GB available "
                    f"(--cache off to turn it off)")
        return "ram"
    known = f"{memory / 1e9:.1f} GB available" if memory is not None else "available memory unknown"
    LOGGER.info(f"{prefix}not caching images: {need / 1e9:.2f} GB needed, {known} (--cache ram to force it)")
    return "off"


def disk_cache_path(file: str, folder: Path) -> Path:
    """The .npy a decoded image is kept in, keyed by path, size and mtime (a changed file gets a new one)."""
    stat = os.stat(file)
    key = hashlib.sha1(f"{file}|{stat.st_size}|{stat.st_mtime_ns}".encode()).hexdigest()[:20]
    return folder / f"{Path(file).stem}-{key}.npy"


def save_npy_atomic(array: np.ndarray, path: Path) -> None:
    """np.save through a temporary file and a rename, so an interrupted cache never leaves a truncated .npy."""
    temporary = path.with_name(f"{path.name}.{os.getpid()}.tmp")
    with open(temporary, "wb") as f:
        np.save(f, array)
    os.replace(temporary, path)
