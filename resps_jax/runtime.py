"""Process-wide JAX settings every CLI applies before its first compile."""

from __future__ import annotations

import os

import jax

from resps_jax.models.loading import cache_root


def setup_runtime(compilation_cache: bool = True) -> None:
    """Offline Hugging Face libraries and JAX's persistent compilation cache.

    The cache lives under ~/.cache/resps_jax/xla (RESPS_JAX_CACHE moves it, RESPS_JAX_XLA_CACHE
    names the folder itself: the test suite shares one among its subprocesses, which halves a
    tiny training run); set RESPS_JAX_NO_XLA_CACHE=1 to turn it off. Only trusted users may
    write there: a cached executable is code that runs.
    """
    os.environ.setdefault("HF_HUB_OFFLINE", "1")
    os.environ.setdefault("TRANSFORMERS_OFFLINE", "1")
    os.environ.setdefault("TOKENIZERS_PARALLELISM", "false")
    if compilation_cache and not os.environ.get("RESPS_JAX_NO_XLA_CACHE"):
        jax.config.update("jax_compilation_cache_dir", os.environ.get("RESPS_JAX_XLA_CACHE") or str(cache_root() / "xla"))
        jax.config.update("jax_persistent_cache_min_compile_time_secs", 0.5)
        jax.config.update("jax_persistent_cache_min_entry_size_bytes", -1)
