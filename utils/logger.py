"""One project logger, so every module prints the same way and tests can silence it."""
from __future__ import annotations

import logging
import sys

LOGGER_NAME = "yolomed"


def _build_logger() -> logging.Logger:
    logger = logging.getLogger(LOGGER_NAME)
    if not logger.handlers:
        handler = logging.StreamHandler(sys.stdout)
        handler.setFormatter(logging.Formatter("%(message)s"))
        logger.addHandler(handler)
        logger.setLevel(logging.INFO)
        logger.propagate = False
    return logger


LOGGER = _build_logger()
