#!/bin/bash
# Test curves of the single-task references and GradNorm (patient split, seeds 0-2): every saved checkpoint
# (epoch 0, 5, ..., 35 and last.pt) on the 17 test patients, then the strategies side by side. Descriptive: it
# explains the epoch choice of the report (best.pt against last.pt) and chooses nothing. About 3.5 min per run
# beside two trainings. Run from the repository root.
PY=${PYTHON:-.venv/bin/python}
OUT=benchmarks/results/compare_patient_e40/test_curves
mkdir -p $OUT
for run in view_only_s0 view_only_s1 view_only_s2 gradnorm_s0 gradnorm_s1 gradnorm_s2 detection_only_s0 \
           detection_only_s1 detection_only_s2; do
  data=runs/splits/med_patient_s0/med_patient_s0.yaml
  case $run in detection_only_*) data=runs/compare/patient_e40/derived/data_med_patient_s0_detection_only.yaml;; esac
  [ -f $OUT/${run}_test.csv ] && continue  # done before
  OMP_NUM_THREADS=1 $PY benchmarks/time_to_accuracy.py runs/compare/patient_e40/med_patient_s0/$run \
    --test-data $data --img 320 --view-ceiling 0.682 --out $OUT/$run || exit 1
done
$PY benchmarks/epoch_curves.py $OUT --view-ceiling 0.682 | tee $OUT/epoch_curves.md
