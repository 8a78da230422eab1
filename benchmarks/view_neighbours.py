"""Folded into the dataset audit (docs/audit.md): `python -m utils.audit --data data/med.yaml` reports this
probe's nearest-train-frame ceiling, agreement table, byte-identical pairs and video figures, and more."""
import sys
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parents[1]))
from utils.audit.cli import main  # noqa: E402

if __name__ == "__main__":
    main(sys.argv[1:] or ["--data", "data/med.yaml", "--name", "view_neighbours"])
