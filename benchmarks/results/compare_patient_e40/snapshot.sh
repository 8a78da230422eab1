#!/bin/bash
# Interim or final report of the 40-epoch comparison, copied here from runs/compare/patient_e40 (trains nothing;
# evaluates finished runs not yet evaluated, and records them in records/). First the checkpoint interference of every
# finished joint run whose folder is here (a checkpoint already measured is kept, so are the rows of runs whose folders
# are gone), then the report, whose conclusion reads those tables; a run whose folder is gone is read from records/.
# Run from the repository root.
PY=${PYTHON:-.venv/bin/python}
HERE=benchmarks/results/compare_patient_e40
PATIENT=runs/splits/med_patient_s0/med_patient_s0.yaml
CLEAN=runs/audit/med_patient_s0/clean/med_patient_s0_clean.yaml
# Each split's runs are measured on their own training images (the clean split's are a subset of the patient split's),
# so each split has its own table.
tables=()  # the --checkpoint-interference flag and its files, once a table exists
for split in med_patient_s0 med_patient_s0_clean; do
  data=$PATIENT out=$HERE/interference
  [ $split = med_patient_s0_clean ] && data=$CLEAN out=$HERE/interference_clean
  finished=()
  for run in runs/compare/patient_e40/$split/*_s[0-9]*; do
    case $(basename $run) in detection_only_*|view_only_*|dual_*) continue;; esac
    [ -f $run/compare_cost.json ] && grep -q '"rc": 0' $run/compare_cost.json && finished+=($run)
  done
  if [ ${#finished[@]} -gt 0 ]; then
    OMP_NUM_THREADS=1 $PY benchmarks/checkpoint_interference.py --data $data --runs "${finished[@]}" --batches 8 \
      --out $out || exit 1
    [ ${#tables[@]} -eq 0 ] && tables=(--checkpoint-interference)
    tables+=($out/checkpoint_interference.csv)
  fi
done
# The report twice: each run scored at best.pt (picked on val, YOLOv5's rule; the main report), then at last.pt (the
# final epoch, which no val figure chose), so that a conclusion resting on the epoch choice shows.
# The conclusion also quotes the patient bootstrap of that checkpoint where bootstrap.sh has written one (it is slower,
# so it is run on its own; its tables say how many seeds each strategy had then).
for checkpoint in best last; do
  boot=()
  for table in $HERE/bootstrap/patient_bootstrap_$checkpoint.csv $HERE/bootstrap_clean/patient_bootstrap_$checkpoint.csv
  do
    [ -f $table ] && boot+=($table)
  done
  [ ${#boot[@]} -gt 0 ] && boot=(--patient-bootstrap "${boot[@]}")
  OMP_NUM_THREADS=1 $PY compare.py --name patient_e40 --data $PATIENT --data $CLEAN --epochs 40 --seeds 0 1 2 \
    --view-weights 0.001 0.003 0.01 0.03 0.1 0.3 1 --strategies gradnorm gradnorm_frozen detection_only view_only \
    dual fixed_w0.03 fixed_w0.1 fixed_w0.01 fixed_w0.3 fixed_w0.003 fixed_w1 fixed_w0.001 --report-only \
    --checkpoint $checkpoint --records $HERE/records \
    "${tables[@]}" "${boot[@]}" -- --cfg models/yolov5n.yaml --img 320 --batch-size 16 \
    --workers 1 --val-period 4 --save-period 5 --hyp data/hyps/hyp.patient.yaml || exit 1
done
# The patient split's validation curves stay as drawn from its first 30 runs: their histories were lost with their
# folders (records made from comparison.csv hold rows only), so a new drawing would show only the later runs.
copy_report() {  # copy_report FROM TO
  mkdir -p $2
  cp $1/{report.md,comparison.csv} $2/
  for png in $1/*.png; do
    [ $(basename $png) = curves_med_patient_s0.png ] || cp $png $2/
  done
}
copy_report runs/compare/patient_e40 $HERE
copy_report runs/compare/patient_e40/checkpoint_last $HERE/checkpoint_last
