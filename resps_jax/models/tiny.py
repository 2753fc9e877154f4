"""A seeded random tiny Llama with a byte-level tokenizer, built offline (model name `tiny`).

The complete pipeline (configs/tiny.py) and the tests run on it: weights are seeded numpy
arrays written to safetensors under HF LlamaForCausalLM names, and the tokenizer is a
byte-level BPE (one token per UTF-8 byte, no merges) plus `<|endoftext|>`. Needs neither
torch nor a network; 8 layers so the EAGLE-3 taps (2, L//2, L-3) are distinct.
"""

from __future__ import annotations

import json
from pathlib import Path

import numpy as np

EOS_TOKEN = "<|endoftext|>"
# One token per byte (ids 0..255 in GPT-2's byte -> unicode order), then EOS: 257 in all.
TINY = dict(vocab=257, hidden=64, intermediate=128, layers=8, heads=4, kv_heads=2, max_positions=256)
CHAT_TEMPLATE = (
    "{% for m in messages %}<|{{ m['role'] }}|>{{ m['content'] }}\n{% endfor %}"
    "{% if add_generation_prompt %}<|assistant|>{% endif %}"
)


def byte_tokens() -> list[str]:
    """The tiny vocabulary in id order: the 256 byte-level symbols, then EOS."""
    from transformers.convert_slow_tokenizer import bytes_to_unicode

    spelling = bytes_to_unicode()
    return [spelling[b] for b in range(256)] + [EOS_TOKEN]


def tiny_tokenizer():
    """A PreTrainedTokenizerFast over byte_tokens(): `len(text.encode())` tokens per text."""
    from tokenizers import Tokenizer, decoders, models, pre_tokenizers
    from transformers import PreTrainedTokenizerFast

    vocab = {token: i for i, token in enumerate(byte_tokens())}
    backend = Tokenizer(models.BPE(vocab=vocab, merges=[]))
    backend.pre_tokenizer = pre_tokenizers.ByteLevel(add_prefix_space=False)
    backend.decoder = decoders.ByteLevel()
    tok = PreTrainedTokenizerFast(tokenizer_object=backend, eos_token=EOS_TOKEN)
    tok.chat_template = CHAT_TEMPLATE
    assert len(tok) == TINY["vocab"]
    return tok


def tiny_llama_config(tied: bool = False) -> dict:
    """config.json of the tiny Llama (the older rope_theta form published checkpoints use)."""
    t = TINY
    return {
        "architectures": ["LlamaForCausalLM"],
        "model_type": "llama",
        "vocab_size": t["vocab"],
        "hidden_size": t["hidden"],
        "intermediate_size": t["intermediate"],
        "num_hidden_layers": t["layers"],
        "num_attention_heads": t["heads"],
        "num_key_value_heads": t["kv_heads"],
        "head_dim": t["hidden"] // t["heads"],
        "rms_norm_eps": 1e-5,
        "rope_theta": 10000.0,
        "rope_scaling": None,
        "max_position_embeddings": t["max_positions"],
        "tie_word_embeddings": tied,
        "bos_token_id": None,
        "eos_token_id": t["vocab"] - 1,
        "hidden_act": "silu",
        "torch_dtype": "float32",
    }


def tiny_llama_tensors(seed: int = 0, tied: bool = False) -> dict[str, np.ndarray]:
    """Seeded float32 weights under HF LlamaForCausalLM names and [out, in] layouts."""
    t = TINY
    rng = np.random.default_rng(seed)
    hd = t["hidden"] // t["heads"]

    def w(*shape, scale=0.1):
        return (rng.standard_normal(shape) * scale).astype(np.float32)

    h, inter = t["hidden"], t["intermediate"]
    out = {"model.embed_tokens.weight": w(t["vocab"], h, scale=0.5)}
    for i in range(t["layers"]):
        p = f"model.layers.{i}."
        out[p + "input_layernorm.weight"] = 1.0 + w(h)
        out[p + "self_attn.q_proj.weight"] = w(t["heads"] * hd, h)
        out[p + "self_attn.k_proj.weight"] = w(t["kv_heads"] * hd, h)
        out[p + "self_attn.v_proj.weight"] = w(t["kv_heads"] * hd, h)
        out[p + "self_attn.o_proj.weight"] = w(h, t["heads"] * hd)
        out[p + "post_attention_layernorm.weight"] = 1.0 + w(h)
        out[p + "mlp.gate_proj.weight"] = w(inter, h)
        out[p + "mlp.up_proj.weight"] = w(inter, h)
        out[p + "mlp.down_proj.weight"] = w(h, inter)
    out["model.norm.weight"] = 1.0 + w(h)
    if not tied:
        out["lm_head.weight"] = w(t["vocab"], h)
    return out


def write_tiny_hf_folder(
    folder: Path, seed: int = 0, drop: tuple[str, ...] = (), tokenizer: bool = True
) -> Path:
    """config.json + model.safetensors (minus the tensors named in `drop`) + tokenizer files."""
    from safetensors.numpy import save_file

    folder.mkdir(parents=True, exist_ok=True)
    (folder / "config.json").write_text(json.dumps(tiny_llama_config(), indent=2))
    tensors = tiny_llama_tensors(seed)
    for name in drop:
        del tensors[name]
    save_file(tensors, str(folder / "model.safetensors"), metadata={"format": "pt"})
    if tokenizer:
        tiny_tokenizer().save_pretrained(str(folder))
    return folder


def ensure_tiny_checkpoint(root: Path, seed: int = 0) -> Path:
    """The tiny folder for `seed` under root, written once (atomically) and reused."""
    import os
    import shutil
    import tempfile

    folder = root / f"tiny-seed{seed}"
    if (folder / "config.json").is_file():
        return folder
    root.mkdir(parents=True, exist_ok=True)
    staging = Path(tempfile.mkdtemp(prefix=folder.name + ".", dir=root))
    try:
        write_tiny_hf_folder(staging, seed=seed)
        os.replace(staging, folder)
    finally:
        if staging.exists():
            shutil.rmtree(staging, ignore_errors=True)
    return folder


def random_pair(cfg, seed: int = 0, draft_vocab: int | None = None, scale: float = 8.0):
    """A seeded random target (weights x `scale`, so its logits are far from uniform) and head."""
    import jax
    from flax import nnx

    from resps_jax.models.eagle3 import Eagle3Config, Eagle3Head
    from resps_jax.models.llama import Llama

    target = Llama(cfg, rngs=nnx.Rngs(seed))
    nnx.update(target, jax.tree.map(lambda x: x * scale, nnx.state(target, nnx.Param)))
    head = Eagle3Head(Eagle3Config.for_target(cfg, draft_vocab_size=draft_vocab), rngs=nnx.Rngs(seed + 1))
    return target, head
