"""The strategy comparison at its old path, kept because the committed results and docs name it.

The code is the utils.compare package; `python compare.py ...` at the repository root is the same command.
"""
import sys
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parents[1]))

from utils.compare.cli import main  # noqa: E402

if __name__ == "__main__":
    main()
