"""Train every task-balancing strategy on the same data, seeds and budget, and write one report.

    python compare.py --data data/med.yaml --epochs 20 --seeds 0 1 2 --name med_e20 \\
        -- --cfg models/yolov5n.yaml --img 320 --hyp data/hyps/hyp.medical.yaml --batch-size 16 --workers 2

Runs land in runs/compare/NAME/<split>/<strategy>_s<seed>/, the results in runs/compare/NAME/
(comparison.csv, report.md, plots); re-running the same command resumes. `--help` lists the flags;
utils/compare/__init__.py explains the strategies, resuming and how costs are measured.
"""
from utils.compare.cli import main

if __name__ == "__main__":
    main()
