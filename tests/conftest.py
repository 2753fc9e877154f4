"""Shared test fixtures over the package's tiny random Llama (resps_jax/models/tiny.py)."""

from __future__ import annotations

import atexit
import os
import shutil
import tempfile
from pathlib import Path

import pytest

from resps_jax.models.tiny import (
    EOS_TOKEN,
    TINY,
    byte_tokens,
    tiny_llama_config,
    tiny_llama_tensors,
    tiny_tokenizer,
    write_tiny_hf_folder,
)

# One persistent XLA compilation cache for the whole run, shared by every CLI the tests spawn:
# they compile the same tiny-model executables over and over (a tiny `train` takes 65 s cold,
# 29 s warm). A fresh folder per run, so no test depends on an earlier run's cache.
_XLA_CACHE = tempfile.mkdtemp(prefix="resps-jax-test-xla-")
os.environ["RESPS_JAX_XLA_CACHE"] = _XLA_CACHE
atexit.register(shutil.rmtree, _XLA_CACHE, True)


@pytest.fixture(scope="module")
def tiny_hf_folder(tmp_path_factory) -> Path:
    """A complete, loadable tiny Llama HF folder (weights, config, tokenizer). Read-only, please."""
    return write_tiny_hf_folder(tmp_path_factory.mktemp("tiny_llama") / "model")


@pytest.fixture(scope="module")
def tiny():
    """The helpers above for test modules (importing conftest directly depends on import mode)."""
    import types

    return types.SimpleNamespace(
        sizes=dict(TINY),
        eos_token=EOS_TOKEN,
        byte_tokens=byte_tokens,
        tokenizer=tiny_tokenizer,
        config=tiny_llama_config,
        tensors=tiny_llama_tensors,
        write_folder=write_tiny_hf_folder,
    )
