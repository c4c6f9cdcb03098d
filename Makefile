# Two entry points: `make demo` and `make test`. Both create/update .venv first.
PYTHON ?= python3
VENV := .venv
PY := $(VENV)/bin/python
STAMP := $(VENV)/.installed

.PHONY: demo test test-fast test-all install clean

$(STAMP): pyproject.toml constraints.txt
	$(PYTHON) -m venv $(VENV)
	$(PY) -m pip install -q --upgrade pip
	$(PY) -m pip install -q -c constraints.txt torch==2.13.0
	$(PY) -m pip install -q -c constraints.txt -e ".[test,zoo,torchvision]"
	touch $(STAMP)

install: $(STAMP)

demo: $(STAMP)
	$(VENV)/bin/zsq-onnx convert digits-cnn -o build/digits_cnn_w8a8.onnx --report build/digits_cnn_report.json

test: $(STAMP)
	$(VENV)/bin/ruff check zsq_onnx tests bench
	$(PY) -m pytest -q -m "not extended"

test-fast: $(STAMP)
	$(VENV)/bin/ruff check zsq_onnx tests bench
	$(PY) -m pytest -q -m "not slow and not extended"

test-all: $(STAMP)
	$(VENV)/bin/ruff check zsq_onnx tests bench
	$(PY) -m pytest -q

clean:
	rm -rf build $(VENV)
