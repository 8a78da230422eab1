# `make run`: set up .venv (first time only) and train a small detector on a synthetic
# dataset the code writes itself (no download), then run detection with it.
# `make test`: set up .venv (first time only) and run the test suite.
PYTHON ?= python3
VENV := .venv
PY := $(VENV)/bin/python
STAMP := $(VENV)/.requirements-installed

$(STAMP): requirements.txt
	test -x $(PY) || $(PYTHON) -m venv $(VENV)
	$(PY) -m pip install -q -r requirements.txt
	touch $(STAMP)

.PHONY: run test
run: $(STAMP)
	rm -rf runs/train/first-run runs/detect/first-run
	$(PY) train.py --cfg models/yolov5n.yaml --weights '' --img 192 --epochs 30 --batch-size 16 --name first-run --exist-ok
	$(PY) detect.py --weights runs/train/first-run/weights/best.pt --source datasets/synthetic/images/val --img 192 --name first-run --exist-ok

test: $(STAMP)
	$(PY) -m pytest -q tests
