# tiltflow: two commands for a fresh machine
#   make demo   set up, simulate the demo session, run the whole pipeline on it
#   make test   set up and run the test suite (what CI runs)

PYTHON ?= python3
VENV   ?= .venv
PY     := $(VENV)/bin/python
PIP    := $(PY) -m pip
TORCH  := torch==2.13.0
DEMO   ?= demo
TOOLS  ?= .tools

.PHONY: setup test demo lint bench chromium relion nflint clean

$(VENV)/.installed: pyproject.toml constraints.txt
	$(PYTHON) -m venv $(VENV)
	$(PIP) install -q --upgrade pip
	# torch first, from the pinned CPU wheel; the constraints file keeps it there.
	$(PIP) install -q $(TORCH)
	$(PIP) install -q -c constraints.txt -e ".[test]"
	touch $@

setup: $(VENV)/.installed

# Headless Chromium for the report test, and Nextflow's own parser for the .nf lint.
chromium:
	@command -v chromium >/dev/null 2>&1 || { \
	  (apt-get update -qq && DEBIAN_FRONTEND=noninteractive apt-get install -y -qq chromium >/dev/null) \
	  || echo "warning: could not install chromium; the browser test will be skipped"; }

# Debian's RELION (relion_run_motioncorr): the motion-correction peer tests run the real program (CI=true
# makes them fail rather than skip without it).
relion:
	@command -v relion_run_motioncorr >/dev/null 2>&1 || { \
	  (apt-get update -qq && DEBIAN_FRONTEND=noninteractive apt-get install -y -qq relion >/dev/null) \
	  || echo "warning: could not install relion; the RELION peer tests will be skipped (they fail with CI=true)"; }

nflint: setup
	$(PY) tools/nflint/nflint.py --install $(TOOLS) --install-only

test: setup chromium relion nflint
	$(VENV)/bin/ruff check python tests bench
	$(PY) -m pytest -q

lint: setup
	$(VENV)/bin/ruff check python tests bench

# The simulated camera stores its gain rotated and flipped, as real K3/Falcon references often are:
# the run must apply MotionCor's -RotGain 1 -FlipGain 2 to match the movies.
DEMO_GAIN_ORIENTATION := --gain-rotate 1 --gain-flip 2

demo: setup
	$(VENV)/bin/tiltflow simulate $(DEMO)/session --preset demo $(DEMO_GAIN_ORIENTATION) --overwrite
	$(VENV)/bin/tiltflow run $(DEMO)/session --gain $(DEMO)/session/gain.mrc $(DEMO_GAIN_ORIENTATION) \
	    --outdir $(DEMO)/results
	$(PY) -m tiltflow.demo_summary $(DEMO)/session $(DEMO)/results

bench: setup
	$(PY) bench/run_all.py

clean:
	rm -rf $(VENV) $(DEMO) $(TOOLS) .pytest_cache .ruff_cache
