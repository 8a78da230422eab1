"""Train every task-balancing strategy on the same data, seeds and budget, and write one report.

    python compare.py --data data/med.yaml [--data runs/splits/med_patient_s0/med.yaml] \\
        --epochs 20 --seeds 0 1 2 --name NAME [--strategies ...] [--view-weights 0.1 0.3 1 3] \\
        [--interference-every N] [--jobs N] [--dry-run | --report-only] [--checkpoint-interference CSV ...] \\
        [--checkpoint best|last] \\
        -- --cfg models/yolov5n.yaml --img 320 --hyp data/hyps/hyp.medical.yaml --batch-size 16 --workers 2

(`python -m utils.compare ...` and `python benchmarks/compare.py ...` run the same thing.)

Everything after `--` is passed to every training script unchanged (except `--gradnorm-*`
flags, which only train_gradnorm.py gets, and `--cls-*` flags, which only train_dual.py
gets). Strategies, each a child process of this project's own scripts:

    detection_only  train.py on the dataset YAML without cls_names (no view task)
    view_only       train.py, hyp det_task 0 / view_task 1 (detection metrics are meaningless)
    fixed_w<v>      train.py, hyp det_task 1 / view_task v, one per --view-weights value
                    (fixed_w1 is the plain joint baseline; joint_fixed is accepted as its alias)
    gradnorm        train_gradnorm.py
    uncertainty     train.py --balancer uncertainty
    pcgrad          train.py --balancer pcgrad
    gradnorm_frozen train.py with det_task / view_task fixed at the mean weights the gradnorm run of
                    the same split and seed used over its optimizer steps (opt-in, needs gradnorm:
                    it trains after it; does a difference come from GradNorm's schedule or its ratio?)
    dual            train_dual.py

Runs land in PROJECT/NAME/<split>/<strategy>_s<seed>/ (PROJECT defaults to runs/compare);
derived hyp and dataset YAMLs in PROJECT/NAME/derived/. A run whose folder holds
weights/last.pt and a training_history.json with the final epoch (or that exited cleanly
after an early stop under the same --epochs) is not trained again, so re-running the same
command resumes an interrupted comparison (the check does not compare other flags: use a
new NAME when the train flags change); a run interrupted after at least one epoch continues
from its weights/last.pt with the trainer's --resume, any other unfinished folder is trained
again from scratch. Each run's best.pt (last.pt when there is none) is
then evaluated in this process with the project's evaluate() on its split's val set (once:
the result is kept in the run folder as compare_eval.json until the checkpoint, the data
YAML or the evaluation settings change), and PROJECT/NAME/comparison.csv, report.md and
plots are written. last.pt is evaluated too (compare_eval_last.json): its headline figures
fill the last_ columns, and the conclusion says which of its leads hold at the final epoch,
which no val figure picked. --checkpoint last scores every run at last.pt throughout, in
PROJECT/NAME/checkpoint_last/. --jobs N trains N runs at once (children get
OMP_NUM_THREADS = CPUs // N unless it is set); their time columns then include the sharing. Several compare processes
may share one comparison (one per split, or more to use idle cores): each claims a run
before training it (PROJECT/NAME/<split>/.<run>.lock, pid and host), skips runs a live
process holds, and takes over a claim whose process is gone. Stopping compare.py (Ctrl-C, or
`kill`, SIGTERM) stops its training children too; the next run continues them from last.pt. --report-only trains
nothing and writes an interim report of the runs finished so far, listing the rest as not
run: a progress check on a long comparison.

How the costs are measured:
    train_time_s   wall time of the child process (interpreter start, data scan, training,
                   per-epoch validation, final validation and plots), from Popen to os.wait4
    train_loop_s   training_history.json's elapsed_s of the last epoch (first step to the end
                   of the last epoch, validation included, set-up and final validation excluded)
    step_ms        median over epochs of the epoch's train_s (its batches alone; histories
                   from before train_s existed: time_s, which adds validation and checkpoint
                   saving) divided by the training iterations per epoch (the total of the
                   epoch's progress bar in the child's stderr)
    peak_rss_gb    ru_maxrss from os.wait4: the largest resident set of the child or of any
                   process it waited for (dataloader workers count as their own maximum, not a sum)
    parameters, gflops   model.info(imgsz) of the evaluated checkpoint, unfused

The modules, leaves first: columns (names, labels), strategies (specs, derived files, child
commands), runs (run folders, claims, child processes), evaluation (a checkpoint's metrics,
cached), run_rows (one CSV row per run), stats (mean ± sd, delta_m, the best fixed weight),
comparison_csv, report (report.md), plots, cli (flags, planning, main).
"""
