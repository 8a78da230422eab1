"""`python -m utils.compare ...`: the strategy comparison, the same as `python compare.py ...`."""
from utils.compare.cli import main

if __name__ == "__main__":
    main(entry=["-m", "utils.compare"])
