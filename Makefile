# Every target creates the virtual environment first if it is missing. Versions: $(CONSTRAINTS) only.
PYTHON ?= python3
VENV   ?= .venv
BIN    := $(VENV)/bin
CONFIG ?= resnet8
CONSTRAINTS := src/edgekit/constraints.txt
DATA   ?= cifar10
RUN    ?=
FORMATS ?=
BENCH_ARGS ?=
PACK_ARGS ?=
PYTEST_ARGS ?=

# Offline stand-in for the CIFAR-10 download: used automatically when the workplace copy is beside the project.
SHARED_CIFAR := $(wildcard ../shared/datasets/cifar10-jpeg.tar.gz)
ifneq ($(SHARED_CIFAR),)
export EDGE_CIFAR10 ?= $(abspath $(SHARED_CIFAR))
endif

.PHONY: help venv demo test test-fast test-runtime test-installed train evaluate convert bench pack pi-check lock clean

help:
	@echo "make demo      set up, then train + convert + benchmark a small ResNet-8 on CIFAR-10 (5 minutes; EDGE_CPU=avx2 stands in for an AVX2-only CPU)"
	@echo "make test      set up, then run the test suite"
	@echo "make test-fast the tests that need no TensorFlow (seconds)"
	@echo "make test-runtime  the runtime's own tests in a venv with only ./runtime[litert,onnx] (as on a device)"
	@echo "make test-installed  sdists -> wheels -> a fresh venv outside the clone: train, convert, bench, select, pack there"
	@echo "make train     CONFIG=resnet8 (edge configs lists them, or a YAML file) [DATA=...]: a full training run into runs/"
	@echo "make evaluate  RUN=runs/<dir>: recompute a run's test metrics"
	@echo "make convert   [RUN=runs/<dir>] [FORMATS=a,b]: export + validate TFLite/ONNX (default: latest finished run)"
	@echo "make bench     [RUN=runs/<dir>] [BENCH_ARGS='--threads 1,2 --batch 1,8']: accuracy + latency reports of every artifact"
	@echo "make pack      [RUN=runs/<dir>] [PACK_ARGS='--target aarch64']: bundle the recommended artifact for a device"
	@echo "make pi-check  [EXPORT=dir] [PI_IMAGES=200]: run an export in an emulated Raspberry Pi OS userland (root)"
	@echo "make lock      re-pin $(CONSTRAINTS) from the current environment"

venv: $(VENV)/.installed

$(VENV)/.installed: pyproject.toml runtime/pyproject.toml $(CONSTRAINTS)
	$(PYTHON) -m venv $(VENV)
	$(BIN)/pip install --quiet --upgrade pip
	$(BIN)/pip install --quiet -c $(CONSTRAINTS) setuptools -e './runtime[litert,onnx]' -e '.[test]'
	@# onnx2tf (ONNX -> TFLite for models brought as ONNX) pins TensorFlow 2.19 and numpy 1.26 exactly, yet runs
	@# with this TensorFlow 2.21: installed without its pins
	$(BIN)/pip install --quiet --no-deps -c $(CONSTRAINTS) onnx2tf onnx-graphsurgeon sng4onnx psutil
	@# the device-side wheels of this machine (both engines: edge select may pick either), so that the tests pack and
	@# install a bundle without network
	$(BIN)/pip download --quiet --disable-pip-version-check -c $(CONSTRAINTS) --only-binary=:all: \
		--dest $(VENV)/wheelhouse numpy pillow ai-edge-litert onnxruntime
	touch $@

# Convert and bench exit 3 when an artifact is not ✅; the demo reports that and goes on to the next step.
# the demo recipe (src/edgekit/configs/demo.yaml) budgets the whole demo (train keeps time for convert and bench); `edge train` already scores
# the test set, so the demo runs no separate `edge evaluate`.
# float32 and int8 in each engine: what a newcomer compares first (edge convert runs/demo adds the other formats)
DEMO_FORMATS ?= tflite-fp32,tflite-int8,onnx-fp32,onnx-int8
demo: venv
	$(BIN)/edge train --config demo --data $(DATA) --out runs/demo
	$(BIN)/edge convert runs/demo --formats $(DEMO_FORMATS) || [ $$? -eq 3 ]
	$(BIN)/edge bench runs/demo --samples 1000 --runs 20 || [ $$? -eq 3 ]

# Two worker processes, whole files each (module fixtures are built once), handed out in the order of
# tests/conftest.py (longest first; xdist would otherwise start with the files that hold the most tests):
# much of a test's time is spent waiting on the processes it starts. TEST_WORKERS=0 runs in one process.
TEST_WORKERS ?= 2
test: venv test-runtime test-installed
	$(BIN)/python -m pytest $(if $(filter-out 0,$(TEST_WORKERS)),-n $(TEST_WORKERS) --dist loadfile --no-loadscope-reorder) $(PYTEST_ARGS)

# The runtime's own tests in a venv holding only ./runtime[litert,onnx] and pytest, as a device has it.
RUNTIME_VENV ?= .venv-runtime
test-runtime: $(RUNTIME_VENV)/.installed
	$(RUNTIME_VENV)/bin/python -m pytest runtime/tests -p no:cacheprovider $(PYTEST_ARGS)

$(RUNTIME_VENV)/.installed: runtime/pyproject.toml $(CONSTRAINTS) $(shell find runtime/src -name "*.py")
	$(PYTHON) -m venv $(RUNTIME_VENV)
	$(RUNTIME_VENV)/bin/pip install --quiet --upgrade pip
	$(RUNTIME_VENV)/bin/pip install --quiet -c $(CONSTRAINTS) './runtime[litert,onnx]' pytest
	touch $@

# The product as `pip install` gives it: wheels built from the sdists, installed (not editable) in a fresh venv
# outside the clone, where train → convert → bench → select → pack must each succeed (scripts/installed_flow.sh).
test-installed: venv
	scripts/installed_flow.sh

# The tier without TensorFlow (seconds); it fails if a test in it imported TensorFlow.
test-fast: venv
	$(BIN)/python -m pytest -m "not tf" $(PYTEST_ARGS)

train: venv
	$(BIN)/edge train --config $(CONFIG) --data $(DATA)

evaluate: venv
	@test -n "$(RUN)" || { echo "usage: make evaluate RUN=runs/<dir>"; exit 2; }
	$(BIN)/edge evaluate $(RUN)

# RUN defaults to the newest finished run under runs/ (edgekit/layout.py: the one place a run's file names live).
LATEST := $(BIN)/python -m edgekit.layout latest
convert: venv
	@run="$(RUN)"; [ -n "$$run" ] || run=$$($(LATEST) trained); \
	test -n "$$run" || { echo "no finished run under runs/ (train one with make demo), or pass RUN=runs/<dir>"; exit 2; }; \
	echo "$(BIN)/edge convert $$run $(if $(FORMATS),--formats $(FORMATS))"; \
	$(BIN)/edge convert "$$run" $(if $(FORMATS),--formats $(FORMATS))

# RUN as for convert; the run must have been converted (make convert) first.
bench: venv
	@run="$(RUN)"; [ -n "$$run" ] || run=$$($(LATEST) converted); \
	test -n "$$run" || { echo "no converted run under runs/ (make convert first), or pass RUN=runs/<dir>"; exit 2; }; \
	echo "$(BIN)/edge bench $$run $(BENCH_ARGS)"; \
	$(BIN)/edge bench "$$run" $(BENCH_ARGS)

# RUN defaults to the newest benchmarked run; the artifact is the one `edge select` recommends from its report.
pack: venv
	@run="$(RUN)"; [ -n "$$run" ] || run=$$($(LATEST) benchmarked); \
	test -n "$$run" || { echo "no benchmarked run under runs/ (make bench first), or pass RUN=runs/<dir>"; exit 2; }; \
	echo "$(BIN)/edge pack $$run --format best $(PACK_ARGS)"; \
	$(BIN)/edge pack "$$run" --format best $(PACK_ARGS)

# Not part of `make test`: needs root, debootstrap, qemu-user-static and binfmt_misc (README "Running on a Raspberry Pi").
# EXPORT defaults to the newest runs/*/export; the report goes to PI_OUT (default: pi-check/ beside the export).
EXPORT ?=
PI_IMAGES ?= 200
PI_OUT ?=
pi-check: venv
	@dir="$(EXPORT)"; [ -n "$$dir" ] || { run=$$($(LATEST) converted); dir=$${run:+$$run/export}; }; \
	test -n "$$dir" || { echo "no export under runs/ (make convert first), or pass EXPORT=<dir>"; exit 2; }; \
	out="$(PI_OUT)"; [ -n "$$out" ] || out="$$(dirname "$$dir")/pi-check"; \
	echo "$(BIN)/edge pi-check --export $$dir --images $(PI_IMAGES) --out $$out"; \
	$(BIN)/edge pi-check --export "$$dir" --images $(PI_IMAGES) --out "$$out"

lock: venv
	{ echo "# The one place where versions are pinned: every install (make, CI, docs) uses pip -c $(CONSTRAINTS)."; \
	  echo "# Regenerate with: make lock"; $(BIN)/pip freeze --all --exclude pip --exclude-editable; } > $(CONSTRAINTS)

clean:
	rm -rf $(VENV) $(RUNTIME_VENV) .pytest_cache
