# Quick start: `make demo` and `make test`. Both create .venv when it is missing.
SHELL := /bin/bash
VENV ?= .venv
PY := $(VENV)/bin/python
STAMP := $(VENV)/.medmamba-installed
SUDO := $(shell [ "$$(id -u)" = 0 ] || echo sudo)
# nnU-Net trains on every core; OpenMP threads that spin while waiting starve the scans on a busy CPU.
export OMP_WAIT_POLICY ?= PASSIVE
# Text I/O in UTF-8 whatever the locale (nnU-Net and tqdm print non-ASCII characters).
export PYTHONUTF8 := 1

.PHONY: demo test test-fast lint docs install browser clean gpu-check

# pip's own output goes to a log; on a failure its last lines are shown.
$(STAMP): setup.py pyproject.toml
	@test -x $(PY) || python3 -m venv $(VENV)
	@echo "installing medmamba and its dependencies into $(VENV) (log: $(VENV)/install.log)"
	@$(PY) -m pip install --progress-bar off -e '.[test,docs]' > $(VENV)/install.log 2>&1 || \
	  { tail -n 20 $(VENV)/install.log; echo "pip install failed: see $(VENV)/install.log"; exit 1; }
	@touch $(STAMP)

install: $(STAMP)

demo: $(STAMP)
	$(VENV)/bin/medmamba demo

# The docs test drives Debian's headless Chromium.
browser:
	@command -v chromium >/dev/null && command -v chromedriver >/dev/null || \
	  { $(SUDO) apt-get update -qq && DEBIAN_FRONTEND=noninteractive $(SUDO) apt-get install -y -qq chromium chromium-driver; }

lint: $(STAMP)
	$(VENV)/bin/ruff check .

# Everything, as CI runs it: the linter first, then every test tier. `doctor --warm` compiles the numba kernels
# once into the user's cache, so that the test workers and the commands they start load them instead.
test: $(STAMP) browser lint
	$(VENV)/bin/medmamba doctor --warm > /dev/null
	$(PY) -m pytest -n 2 --durations=15 tests

# The edit-test loop: all but the slow, nnU-Net-subprocess and browser tiers (under 3 minutes on 2 cores).
test-fast: $(STAMP)
	$(VENV)/bin/medmamba doctor --warm > /dev/null
	$(PY) -m pytest -n 2 -q -m "not slow and not nnunet and not browser" tests

# On a CUDA GPU: kernels' correctness and speed, networks under AMP, trainers and models, the issue's bars
# (benchmarks/results/gpu-check-<gpu>.json and .png; about 8 minutes). Without a GPU it stops with one line.
gpu-check: $(STAMP)
	$(PY) benchmarks/gpu_check.py

docs: $(STAMP)
	DISABLE_MKDOCS_2_WARNING=true $(VENV)/bin/mkdocs build --strict -d site

clean:
	rm -rf $(VENV) site demo_output build *.egg-info
