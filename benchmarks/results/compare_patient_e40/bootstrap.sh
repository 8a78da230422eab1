#!/bin/bash
# Patient bootstrap of the 40-epoch comparison's test figures (benchmarks/patient_bootstrap.py), per split, at best.pt
# and at last.pt: would each strategy's lead survive other patients? Each finished run is evaluated once more on the
# test set, image by image (cached in its folder), then the test patients are resampled 1000 times, the same draws for
# every run. About 15 ms per run and resample beside two trainings (5 min for 20 runs). Run from the repository root.
PY=${PYTHON:-.venv/bin/python}
HERE=benchmarks/results/compare_patient_e40
for split in med_patient_s0 med_patient_s0_clean; do
  data=runs/splits/med_patient_s0/med_patient_s0.yaml out=$HERE/bootstrap
  [ $split = med_patient_s0_clean ] && data=runs/audit/med_patient_s0/clean/med_patient_s0_clean.yaml \
    out=$HERE/bootstrap_clean
  ls runs/compare/patient_e40/$split/*/weights/last.pt > /dev/null 2>&1 || continue  # no run of this split yet
  for checkpoint in best last; do
    OMP_NUM_THREADS=1 $PY benchmarks/patient_bootstrap.py runs/compare/patient_e40/$split --data $data --img 320 \
      --epochs 40 --checkpoint $checkpoint --resamples 1000 --workers 1 --out $out || exit 1
  done
done
