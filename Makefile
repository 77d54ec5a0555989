# tiltflow: two commands for a fresh machine
#   make demo   set up, simulate the demo session, run the whole pipeline on it
#   make demo-ctf  the same at 6-8 um defocus: what CTF correction gains beyond the first zero
#   make test   set up and run the test suite (what CI runs)

PYTHON ?= python3
VENV   ?= .venv
PY     := $(VENV)/bin/python
PIP    := $(PY) -m pip
TORCH  := torch==2.13.0
DEMO   ?= demo
DEMO_CTF ?= demo-ctf
TOOLS  ?= .tools

.PHONY: setup test demo demo-ctf lint typecheck bench chromium relion nflint nextflow nftest clean image imagetest podman

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

# A pinned Nextflow runtime from Maven Central (tools/nextflow/pom.xml; every jar's sha256 in jars.sha256),
# launched by tools/nextflow/nextflow. Needs Java >= 17 and Maven.
NXF_LIB := $(abspath $(TOOLS))/nextflow/lib
nextflow: $(NXF_LIB)/.verified

$(NXF_LIB)/.verified: tools/nextflow/pom.xml tools/nextflow/jars.sha256
	rm -rf $(NXF_LIB) $(NXF_LIB).part
	mvn -q -B --strict-checksums -f tools/nextflow/pom.xml \
	    org.apache.maven.plugins:maven-dependency-plugin:3.6.1:copy-dependencies -DoutputDirectory=$(NXF_LIB).part
	cd $(NXF_LIB).part && sha256sum --quiet --strict -c $(CURDIR)/tools/nextflow/jars.sha256 \
	    && test "$$(ls *.jar | wc -l)" -eq "$$(wc -l < $(CURDIR)/tools/nextflow/jars.sha256)"
	mv $(NXF_LIB).part $(NXF_LIB)
	touch $@

# The pipeline run for real by Nextflow on tiny simulated sessions (tests/test_nextflow_run.py).
nftest: setup nextflow
	PATH=$(CURDIR)/tools/nextflow:$$PATH TILTFLOW_NFTEST=required $(PY) -m pytest -q tests/test_nextflow_run.py

test: setup chromium relion nflint nftest
	$(VENV)/bin/ruff check python tests bench
	$(MAKE) typecheck
	$(PY) -m pytest -q --ignore=tests/test_nextflow_run.py
	$(MAKE) imagetest

lint: setup
	$(VENV)/bin/ruff check python tests bench

# mypy, non-strict, configured in pyproject.toml ([tool.mypy]: the package that ships py.typed)
typecheck: setup
	$(VENV)/bin/mypy

# The simulated camera stores its gain rotated and flipped, as real K3/Falcon references often are:
# the run must apply MotionCor's -RotGain 1 -FlipGain 2 to match the movies.
DEMO_GAIN_ORIENTATION := --gain-rotate 1 --gain-flip 2

demo: setup
	$(VENV)/bin/tiltflow simulate $(DEMO)/session --preset demo $(DEMO_GAIN_ORIENTATION) --overwrite
	$(VENV)/bin/tiltflow run $(DEMO)/session --gain $(DEMO)/session/gain.mrc $(DEMO_GAIN_ORIENTATION) \
	    --outdir $(DEMO)/results
	$(PY) -m tiltflow.testing.demo_summary $(DEMO)/session $(DEMO)/results

# The demo at 6-8 um underfocus (preset demo-ctf): the first CTF zero of the highest-defocus tilt (39 A) lies
# inside the tomogram's 24 A Nyquist, so demo_summary's correction table shows what each --ctf-correction gains.
demo-ctf: setup
	$(VENV)/bin/tiltflow simulate $(DEMO_CTF)/session --preset demo-ctf $(DEMO_GAIN_ORIENTATION) --overwrite
	$(VENV)/bin/tiltflow run $(DEMO_CTF)/session --gain $(DEMO_CTF)/session/gain.mrc $(DEMO_GAIN_ORIENTATION) \
	    --outdir $(DEMO_CTF)/results
	$(PY) -m tiltflow.testing.demo_summary $(DEMO_CTF)/session $(DEMO_CTF)/results

# The tiltflow image, built with podman on a local debootstrap base (no image registry is reachable from CI;
# a user builds the same Dockerfile from debian:bookworm). CONTAINERS_CONF: runc, cgroupfs, no ulimits.
VERSION    := $(shell sed -n 's/^version = "\(.*\)"/\1/p' pyproject.toml)
IMAGE      ?= ghcr.io/tiltflow/tiltflow:$(VERSION)
BASE_IMAGE ?= localhost/debian-bookworm:min
export CONTAINERS_CONF ?= $(abspath $(TOOLS))/containers.conf

$(TOOLS)/containers.conf: containers/podman-ci.conf
	mkdir -p $(TOOLS) && cp $< $@

# Debian's podman (with runc) and debootstrap for the local base image, as chromium above.
podman:
	@command -v podman >/dev/null 2>&1 && command -v debootstrap >/dev/null 2>&1 || { \
	  (apt-get update -qq && DEBIAN_FRONTEND=noninteractive apt-get install -y -qq podman runc debootstrap >/dev/null) \
	  || echo "warning: could not install podman; the container test will be skipped (or fail under CI)"; }

image: setup $(TOOLS)/containers.conf
	TOOLS=$(TOOLS) PYTHON=$(PY) containers/build-image.sh $(IMAGE) $(BASE_IMAGE)

# The image runs simulate + run on the tiny preset and must give the host's results (tests/test_container.py;
# without podman it is skipped, or fails under CI).
imagetest: setup podman nextflow $(TOOLS)/containers.conf
	if command -v podman >/dev/null 2>&1; then $(MAKE) image; fi
	TILTFLOW_TEST_IMAGE=$(IMAGE) $(PY) -m pytest -q tests/test_container.py

bench: setup
	$(PY) bench/run_all.py

clean:
	rm -rf $(VENV) $(DEMO) $(DEMO_CTF) $(TOOLS) .pytest_cache .ruff_cache .mypy_cache containers/tiltflow/wheels/*.whl
