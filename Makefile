# Quick start: `make demo` and `make test`. Each target sets up what it needs.
PYTHON ?= python3
VENV := .venv
PY := $(VENV)/bin/python
STAMP := $(VENV)/.installed
DEMO_IN := demo_in
DEMO_OUT := demo_out

.PHONY: venv demo test test-fast test-container image image-report image-check bench bench-quick lint clean

venv: $(STAMP)

# torch goes in first, alone: its pin then holds while the rest resolves, so no other
# package can swap the build that lies on this machine's disk for a multi-GB CUDA one.
$(STAMP): requirements.txt requirements-dev.txt
	$(PYTHON) -m venv $(VENV)
	$(PY) -m pip install --quiet --upgrade pip
	$(PY) -m pip install --quiet torch==2.13.0
	$(PY) -m pip install --quiet -r requirements.txt -r requirements-dev.txt
	touch $(STAMP)

demo: $(STAMP)
	rm -rf $(DEMO_IN) $(DEMO_OUT) && mkdir -p $(DEMO_IN) $(DEMO_OUT)
	cp tests/data/example_ct.nii.gz $(DEMO_IN)/example_0000.nii.gz
	PATH="$(CURDIR)/$(VENV)/bin:$$PATH" INPUT_DIR=$(DEMO_IN) OUTPUT_DIR=$(DEMO_OUT) sh predict.sh --preview $(DEMO_OUT)/preview
	@echo "Demo mask: $(DEMO_OUT)/example.nii.gz (preview PNG in $(DEMO_OUT)/preview/)"
	@echo "NOTE: the bundled weights are DEMO weights trained on synthetic phantoms, not on FLARE21."

# Test tools from Debian's packages (dciodvfy); where they cannot be installed, the tests that
# need them skip and say why.
test: $(STAMP)
	bash tests/install_tools.sh || echo "warning: test tools missing; the DICOM-SEG validator test will skip"
	$(PY) -m pytest -q tests

test-container:
	bash tests/container/run.sh

# The release image (CUDA torch from the package index): docker build where Docker answers, else
# podman. CUDA=12 builds the CUDA 12 line; IMAGE names it (default team:latest). See docs/container.md.
CUDA ?= 13
IMAGE ?= team:latest
image:
	CUDA=$(CUDA) IMAGE=$(IMAGE) bash tests/container/image.sh

# The same, plus the size as `save | gzip` and the largest packages in the venv.
image-report:
	CUDA=$(CUDA) IMAGE=$(IMAGE) bash tests/container/image.sh --report

# The organisers' command on the bundled CT with the release image and with the test image (both
# on the CPU here): the same mask voxel for voxel, and the wall time and start-up of each run.
image-check:
	IMAGE=$(IMAGE) bash tests/container/release_check.sh

bench: $(STAMP)
	$(PY) -m bench.run --full

bench-quick: $(STAMP)
	$(PY) -m bench.run --quick

lint: $(STAMP)
	$(VENV)/bin/hadolint Dockerfile

clean:
	rm -rf $(DEMO_IN) $(DEMO_OUT) .pytest_cache
