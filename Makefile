# `make demo` and `make test` set themselves up on a fresh machine (Python 3.11: bpy 5.0.1 needs it).
PYTHON ?= python3.11
VENV := .venv
PY := $(VENV)/bin/python
WHEELHOUSE := build/wheelhouse
# The other Blender versions the Blender-side tests run on (the full suite runs once, on .venv's bpy 5.0.1).
# (a pyenv shim answers only when 3.13 is selected, hence the PYENV_VERSION try)
PYTHON313 ?= $(shell python3.13 -c 'import sys; print(sys.executable)' 2>/dev/null || \
	PYENV_VERSION=3.13.0 python3.13 -c 'import sys; print(sys.executable)' 2>/dev/null || echo python3.13)
BPY42 := 4.2.23
BPY53 := 5.3.0

.PHONY: setup test test-bpy-versions test-gpu demo bench fuzz extension clean

setup: $(VENV)/.installed

$(VENV)/.installed: requirements-dev.txt requirements.txt
	@command -v $(PYTHON) >/dev/null || { echo "need $(PYTHON) (bpy 5.0.1 is built for Python 3.11); set PYTHON=..."; exit 1; }
	$(PYTHON) -m venv $(VENV)
	$(PY) -m pip install --quiet --upgrade pip
	$(PY) -m pip install --quiet -r requirements-dev.txt
	$(PY) build_addon.py --download-wheels $(WHEELHOUSE) > /dev/null   # what the extension zip bundles (offline builds)
	touch $@

test: setup test-bpy-versions
	$(PY) -m pytest -q

# Each venv holds bpy, numpy and what requirements-blender.txt lists; the engine runs from .venv (torch).
.venv-bpy42/.installed: requirements-blender.txt
	@command -v $(PYTHON) >/dev/null || { echo "need $(PYTHON) for bpy $(BPY42)"; exit 1; }
	$(PYTHON) -m venv .venv-bpy42
	.venv-bpy42/bin/python -m pip install --quiet --upgrade pip
	.venv-bpy42/bin/python -m pip install --quiet bpy==$(BPY42) "numpy>=1.24,<2" -r requirements-blender.txt
	touch $@

.venv-bpy53/.installed: requirements-blender.txt
	@command -v $(PYTHON313) >/dev/null || { echo "need $(PYTHON313) (bpy $(BPY53) is built for Python 3.13); set PYTHON313=..."; exit 1; }
	$(PYTHON313) -m venv .venv-bpy53
	.venv-bpy53/bin/python -m pip install --quiet --upgrade pip
	.venv-bpy53/bin/python -m pip install --quiet bpy==$(BPY53) -r requirements-blender.txt
	touch $@

# The Blender-side tests (marker `blender`) on Blender 4.2 LTS and 5.3; the engine they start is .venv's.
test-bpy-versions: setup .venv-bpy42/.installed .venv-bpy53/.installed
	ANIMATE_GAUSSIANS_PYTHON=$(abspath $(PY)) .venv-bpy42/bin/python -m pytest -q -m blender -p no:cacheprovider
	ANIMATE_GAUSSIANS_PYTHON=$(abspath $(PY)) .venv-bpy53/bin/python -m pytest -q -m blender -p no:cacheprovider

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
	rm -rf $(VENV) .venv-bpy42 .venv-bpy53 build dist demo_out .pytest_cache
