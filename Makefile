# `make demo` and `make test` set themselves up on a fresh machine (Python 3.11: bpy 5.0.1 needs it).
PYTHON ?= python3.11
VENV := .venv
PY := $(VENV)/bin/python
WHEELHOUSE := build/wheelhouse

.PHONY: setup test test-gpu demo bench fuzz extension clean

setup: $(VENV)/.installed

$(VENV)/.installed: requirements-dev.txt requirements.txt
	@command -v $(PYTHON) >/dev/null || { echo "need $(PYTHON) (bpy 5.0.1 is built for Python 3.11); set PYTHON=..."; exit 1; }
	$(PYTHON) -m venv $(VENV)
	$(PY) -m pip install --quiet --upgrade pip
	$(PY) -m pip install --quiet -r requirements-dev.txt
	$(PY) -m pip download --quiet --no-deps --only-binary=:all: --dest $(WHEELHOUSE) plyfile==1.0.3
	touch $@

test: setup
	$(PY) -m pytest -q

test-gpu: setup
	$(PY) -m pytest -q -m gpu

demo: setup
	$(PY) tools/demo.py

bench: setup
	$(PY) benchmarks/import_speed.py

# >= 10,000 malformed inputs per reader/decoder (tools/fuzz_targets.py); prints the counts, fails on a crash or hang
fuzz: setup
	$(PY) tools/fuzz.py -n $(or $(FUZZ_N),10000)

extension: setup
	$(PY) build_addon.py --wheel-dir $(WHEELHOUSE)

clean:
	rm -rf $(VENV) build dist demo_out .pytest_cache
