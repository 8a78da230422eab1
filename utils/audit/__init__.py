"""Dataset audit: find the labels that cap the model, before anyone blames the model.

    python -m utils.audit --data data/med.yaml                        # model-free checks, seconds
    python -m utils.audit --data data/med.yaml --write-clean          # + lists and a YAML without the suspects
    python -m utils.audit --data data/med.yaml --weights runs/train/exp/weights/best.pt
    python -m utils.audit --data data/med.yaml --folds 5 -- --cfg models/yolov5n.yaml --img 320 --epochs 10

Reads every split of a dataset YAML and writes runs/audit/exp (exp2, ... unless --exist-ok):
report.md, issues.csv (one row per suspect file and kind), contact sheets, the video-by-split view
heat map and, with --write-clean, clean/<name>_clean.yaml. Nothing is written into the dataset.

Model-free (always): exact and near duplicates (duplicates.py), their conflicting labels
(conflicts.py), patient leakage and mixed-view videos (groups_check.py), the view-label ceiling
(ceiling.py). Model-based (opt-in): cleanlab on a checkpoint's or K folds' out-of-sample
predictions (predict.py, folds.py, model_checks.py). Details: docs/audit.md.
"""
