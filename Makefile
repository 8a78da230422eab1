# `make run`: set up .venv (first time only), then the product's main job on a synthetic dataset
# the code writes itself (no download): train detection + view classification with GradNorm
# (train_gradnorm.py), validate best.pt (val.py: detection and view tables), draw boxes and the
# view on the val images (detect.py), and print where everything is.
# `make test`: set up .venv (first time only) and run the test suite.
PYTHON ?= python3
VENV := .venv
PY := $(VENV)/bin/python
STAMP := $(VENV)/.requirements-installed
# One thread: on 2 cores shared with other work, two threads ran a training step slower
# than one (about 5-15x, contention). On a machine of your own, try `make run THREADS=4`.
THREADS ?= 1
RUN := first-run
DATA := data/synthetic.yaml
IMG := 128
TRAIN_FLAGS := --cfg models/yolov5n.yaml --weights '' --img $(IMG) --epochs 12 --batch-size 16 \
	--hyp data/hyps/hyp.first-run.yaml --optimizer Adam --cos-lr --cache ram --workers 1 --val-period 2 \
	--fitness joint --gradnorm-min-weight 0.3 --seed 0

$(STAMP): requirements.txt
	test -x $(PY) || $(PYTHON) -m venv $(VENV)
	$(PY) -m pip install -q -r requirements.txt
	touch $(STAMP)

.PHONY: run test
run: export OMP_NUM_THREADS = $(THREADS)
run: $(STAMP)
	rm -rf runs/train/$(RUN) runs/val/$(RUN) runs/detect/$(RUN)
	$(PY) train_gradnorm.py --data $(DATA) $(TRAIN_FLAGS) --name $(RUN) --exist-ok
	$(PY) val.py --data $(DATA) --weights runs/train/$(RUN)/weights/best.pt --img $(IMG) --workers 1 --name $(RUN) --exist-ok
	$(PY) detect.py --weights runs/train/$(RUN)/weights/best.pt --source datasets/synthetic/images/val --img $(IMG) \
		--line-thickness 1 --name $(RUN) --exist-ok
	$(PY) -m utils.first_run runs/train/$(RUN) runs/val/$(RUN) runs/detect/$(RUN)

# Tests run in TEST_WORKERS processes (pytest-xdist), whole files per process (module fixtures are built
# once), one thread each: the suite is mostly small models and child processes, which two cores run
# side by side better than one process on two threads. TEST_WORKERS=0 runs them in this process.
TEST_WORKERS ?= 2
test: export OMP_NUM_THREADS = 1
test: $(STAMP)
	$(PY) -m pytest -q -n $(TEST_WORKERS) --dist loadfile tests
