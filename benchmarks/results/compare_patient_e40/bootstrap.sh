#!/bin/bash
# Patient bootstrap of the 40-epoch comparison's test figures (benchmarks/patient_bootstrap.py), clean split, at
# best.pt and at last.pt: would each strategy's lead survive other patients? Each finished run is evaluated once more
# on the test set, image by image (cached in its folder), then the test patients are resampled 1000 times, the same
# draws for every run. About 15 ms per run and resample beside two trainings (5 min for 20 runs). Run from the
# repository root. It needs every finished run's folder (weights): a recorded run whose folder is gone stops it
# (--records), so a committed table is never rewritten with fewer runs.
# Only the clean split: the patient split's table (bootstrap/) was made on 2026-12-01 from 28 runs whose folders, and
# with them their per-image matches, were lost; any new table there would leave those runs out, so it is kept as made.
# bootstrap_clean/ was made on 2026-12-07 from 36 runs: 3 seeds of every strategy.
PY=${PYTHON:-.venv/bin/python}
HERE=benchmarks/results/compare_patient_e40
split=med_patient_s0_clean
for checkpoint in best last; do
  OMP_NUM_THREADS=1 $PY benchmarks/patient_bootstrap.py runs/compare/patient_e40/$split \
    --data runs/audit/med_patient_s0/clean/med_patient_s0_clean.yaml --records $HERE/records/$split --img 320 \
    --epochs 40 --checkpoint $checkpoint --resamples 1000 --workers 1 --out $HERE/bootstrap_clean || exit 1
done
