#!/bin/bash
# One worker of the 40-epoch comparison (runs/compare/patient_e40). Start two, one thread each, from the repository
# root; each resumes or skips what is finished or held by the other:
#   benchmarks/results/compare_patient_e40/run.sh "0 1 2" > workerA.log 2>&1 &
#   benchmarks/results/compare_patient_e40/run.sh "2 1 0" > workerB.log 2>&1 &
# First the frozen-weights ablation (it needs the gradnorm run of its seed), seed order as given so that two workers
# start on different seeds; then the single-task runs of every seed (delta_m of every strategy rests on them, and
# detection_only seed 0 beat gradnorm on test); then every strategy, seed-major, the patient split before its
# --write-clean version: dual, then the sweep from GradNorm's operating point (a view/detection gradient-norm ratio
# that a fixed weight of about 0.05 gives) outward.
# Inputs, made once:
#   python -m utils.split --data data/med.yaml --by patient --val 0.15 --test 0.15 --seed 0
#   python -m utils.audit --data runs/splits/med_patient_s0/med_patient_s0.yaml --name med_patient_s0 --write-clean
export OMP_NUM_THREADS=1
PY=${PYTHON:-.venv/bin/python}
PATIENT=runs/splits/med_patient_s0/med_patient_s0.yaml
CLEAN=runs/audit/med_patient_s0/clean/med_patient_s0_clean.yaml
TRAIN=(-- --cfg models/yolov5n.yaml --img 320 --batch-size 16 --workers 1 --val-period 4 --save-period 5
       --hyp data/hyps/hyp.patient.yaml)
SWEEP=(--view-weights 0.003 0.01 0.03 0.1 0.3 1)
$PY compare.py --name patient_e40 --data $PATIENT --epochs 40 --seeds ${1:-0 1 2} "${SWEEP[@]}" \
  --strategies gradnorm gradnorm_frozen "${TRAIN[@]}"
$PY compare.py --name patient_e40 --data $PATIENT --epochs 40 --seeds ${1:-0 1 2} "${SWEEP[@]}" \
  --strategies detection_only view_only "${TRAIN[@]}"
$PY compare.py --name patient_e40 --data $PATIENT --data $CLEAN --epochs 40 --seeds 0 1 2 "${SWEEP[@]}" \
  --strategies gradnorm gradnorm_frozen detection_only view_only dual fixed_w0.03 fixed_w0.1 fixed_w0.01 fixed_w0.3 \
  fixed_w0.003 fixed_w1 "${TRAIN[@]}"
