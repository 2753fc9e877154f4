"""The front door: a model or head by name (`smollm2`, `tiny`, a .gguf file, a folder) -> loaded."""

from __future__ import annotations

import dataclasses
from pathlib import Path

import jax.numpy as jnp

from resps_jax.errors import UserError
from resps_jax.models.config import LlamaConfig, read_llama_config
from resps_jax.models.llama import Llama
from resps_jax.models.loading.common import EMBEDDED_DEFAULT, TINY_MODEL, TRAINED_HEAD, cache_root
from resps_jax.models.loading.eagle3_format import load_eagle3
from resps_jax.models.loading.gguf_llama import converted_gguf, smollm2_gguf
from resps_jax.models.loading.safetensors_hf import load_hf_llama
from resps_jax.models.sharding import Placement


@dataclasses.dataclass
class LoadedTarget:
    model: Llama
    cfg: LlamaConfig
    tokenizer: object
    folder: Path  # the HF folder the weights came from (converted, for GGUF)
    source: str  # what the user asked for


def resolve_model_folder(spec: str) -> Path:
    """`smollm2`, `tiny`, a .gguf file or an HF folder -> an HF folder to load from."""
    if spec == EMBEDDED_DEFAULT:
        return converted_gguf(smollm2_gguf())
    if spec == TINY_MODEL:
        from resps_jax.models.tiny import ensure_tiny_checkpoint

        return ensure_tiny_checkpoint(cache_root() / "tiny")
    path = Path(spec).expanduser()
    if not path.exists():
        raise UserError(f"model path does not exist: {path}")
    if path.is_file():
        if path.suffix != ".gguf":
            raise UserError(f"{path}: expected an HF checkpoint folder or a .gguf file")
        return converted_gguf(path)
    if not (path / "config.json").is_file():
        raise UserError(f"{path}: no config.json (not an HF checkpoint folder)")
    return path


def resolve_draft_folder(spec: str) -> Path:
    """`smollm2` (the head shipped in the package), an exact shipped version (`smollm2-v3`),
    `smollm2-trained` (the one train_draft made in the cache) or an EAGLE-3 folder.

    The shipped name never silently switches to a locally trained head: a result that says
    `--draft smollm2` means the versioned head in resps_jax/heads/. A version that no longer
    ships is one error saying which commit keeps it.
    """
    # the model name always means the shipped head; an exact version (smollm2-v3) unless a local
    # folder of that name exists
    if spec == EMBEDDED_DEFAULT or not Path(spec).expanduser().exists():
        from resps_jax.heads import refuse_removed_head, shipped_head_folder

        if (folder := shipped_head_folder(spec)) is not None:
            return folder
        refuse_removed_head(spec)
        if spec == EMBEDDED_DEFAULT:
            raise UserError(
                "no SmolLM2 head ships in this install (resps_jax/heads/); train one with `make head` "
                f"and pass --draft {TRAINED_HEAD}"
            )
    if spec == TRAINED_HEAD:
        folder = trained_head_folder()
        if not (folder / "config.json").is_file():
            raise UserError(
                f"no trained SmolLM2 head at {folder}; make one with `make head` or "
                "`python -m resps_jax.train_draft --config configs/smollm2.py`"
            )
        return folder
    return Path(spec).expanduser()


def trained_head_folder() -> Path:
    """Where train_draft's default SmolLM2 run exports its head."""
    return cache_root() / "drafts" / EMBEDDED_DEFAULT / "draft"


def load_head(spec: str, target_cfg: LlamaConfig, dtype=jnp.float32, seed: int = 1):
    """A draft head by name: an EAGLE-3 folder, 'smollm2' (shipped), 'smollm2-trained', or 'random' (a seeded random head
    for pipeline tests: it drafts, but rarely well)."""
    if spec == "random":
        from flax import nnx

        from resps_jax.models.eagle3 import Eagle3Config, Eagle3Head

        return Eagle3Head(Eagle3Config.for_target(target_cfg), rngs=nnx.Rngs(seed))
    return load_eagle3(resolve_draft_folder(spec), target_cfg, dtype)


def load_tokenizer(folder: Path):
    from transformers import AutoTokenizer

    try:
        return AutoTokenizer.from_pretrained(str(folder), local_files_only=True)
    except Exception as err:
        raise UserError(f"{folder}: cannot load the tokenizer ({type(err).__name__}: {err})") from None


def load_target(
    spec: str, dtype=jnp.float32, with_tokenizer: bool = True, placement: Placement | None = None
) -> LoadedTarget:
    folder = resolve_model_folder(spec)
    cfg = read_llama_config(folder)  # fail on a non-Llama config before touching weights
    model = load_hf_llama(folder, dtype, placement)
    tokenizer = load_tokenizer(folder) if with_tokenizer else None
    return LoadedTarget(model=model, cfg=cfg, tokenizer=tokenizer, folder=folder, source=spec)
