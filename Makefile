# Every target creates the virtual environment first if it is missing. Versions: constraints.txt only.
PYTHON ?= python3
VENV   ?= .venv
BIN    := $(VENV)/bin
CONFIG ?= configs/resnet8.yaml
DATA   ?= cifar10
RUN    ?=
FORMATS ?=
PYTEST_ARGS ?=

# Offline stand-in for the CIFAR-10 download: used automatically when the workplace copy is beside the project.
SHARED_CIFAR := $(wildcard ../shared/datasets/cifar10-jpeg.tar.gz)
ifneq ($(SHARED_CIFAR),)
export EDGE_CIFAR10 ?= $(abspath $(SHARED_CIFAR))
endif

.PHONY: help venv demo test train evaluate convert lock clean

help:
	@echo "make demo      set up, then train + evaluate a small ResNet-8 on CIFAR-10 (minutes)"
	@echo "make test      set up, then run the test suite"
	@echo "make train     CONFIG=configs/resnet8.yaml [DATA=...]: a full training run into runs/"
	@echo "make evaluate  RUN=runs/<dir>: recompute a run's test metrics"
	@echo "make convert   [RUN=runs/<dir>] [FORMATS=a,b]: export + validate TFLite/ONNX (default: latest finished run)"
	@echo "make lock      re-pin constraints.txt from the current environment"

venv: $(VENV)/.installed

$(VENV)/.installed: pyproject.toml runtime/pyproject.toml constraints.txt
	$(PYTHON) -m venv $(VENV)
	$(BIN)/pip install --quiet --upgrade pip
	$(BIN)/pip install --quiet -c constraints.txt -e './runtime[litert,onnx]' -e '.[test]'
	touch $@

demo: venv
	$(BIN)/edge train --config configs/demo.yaml --data $(DATA) --out runs/demo
	$(BIN)/edge evaluate runs/demo

test: venv
	$(BIN)/python -m pytest $(PYTEST_ARGS)

train: venv
	$(BIN)/edge train --config $(CONFIG) --data $(DATA)

evaluate: venv
	@test -n "$(RUN)" || { echo "usage: make evaluate RUN=runs/<dir>"; exit 2; }
	$(BIN)/edge evaluate $(RUN)

# RUN defaults to the newest finished run (the newest runs/*/model.keras).
convert: venv
	@run="$(RUN)"; [ -n "$$run" ] || run=$$(ls -t runs/*/model.keras 2>/dev/null | head -n 1 | xargs -r dirname); \
	test -n "$$run" || { echo "no finished run under runs/ (train one with make demo), or pass RUN=runs/<dir>"; exit 2; }; \
	echo "$(BIN)/edge convert $$run $(if $(FORMATS),--formats $(FORMATS))"; \
	$(BIN)/edge convert "$$run" $(if $(FORMATS),--formats $(FORMATS))

lock: venv
	{ echo "# The one place where versions are pinned: every install (make, CI, docs) uses pip -c constraints.txt."; \
	  echo "# Regenerate with: make lock"; $(BIN)/pip freeze --exclude-editable; } > constraints.txt

clean:
	rm -rf $(VENV) .pytest_cache
