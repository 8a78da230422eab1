"""Shared test fixtures: where the read-only datasets live, and a quiet logger."""
from __future__ import annotations

from pathlib import Path

import pytest

ROOT = Path(__file__).resolve().parents[1]
DATASETS = ROOT.parent / "shared" / "datasets"
MED = DATASETS / "Regurgitation-YOLODataset-1new"
COCO128 = DATASETS / "coco128"


@pytest.fixture(scope="session")
def med_root() -> Path:
    if not MED.is_dir():
        pytest.fail(f"the med dataset is expected at {MED} (../shared/datasets beside the repo)")
    return MED


@pytest.fixture(scope="session")
def coco128_root() -> Path:
    if not COCO128.is_dir():
        pytest.fail(f"coco128 is expected at {COCO128} (../shared/datasets beside the repo)")
    return COCO128


@pytest.fixture
def cache_in_tmp(tmp_path, monkeypatch) -> Path:
    """Keep scan caches of read-only datasets out of the repo's runs/ folder during a test."""
    from utils.data import label_scan

    folder = tmp_path / "fallback_cache"
    monkeypatch.setattr(label_scan, "CACHE_FALLBACK_DIR", folder)
    return folder


@pytest.fixture(autouse=True)
def project_logger_level():
    """Every test starts with the project logger's level as it was: torch.hub.load(..., _verbose=False) lowers
    it for the whole process, as YOLOv5's hub models do, and later tests read INFO lines with caplog."""
    from utils.logger import LOGGER

    level = LOGGER.level
    yield
    LOGGER.setLevel(level)


@pytest.fixture
def messages() -> list[str]:
    """The project logger's messages during the test, whatever its handlers and propagation (caplog may miss them)."""
    import logging

    from utils.logger import LOGGER

    records: list[str] = []
    handler = logging.Handler()
    handler.emit = lambda record: records.append(record.getMessage())
    LOGGER.addHandler(handler)
    yield records
    LOGGER.removeHandler(handler)
