"""EAGLE-3 head: official checkpoint format in and out, shapes, and clear refusals."""

from __future__ import annotations

import dataclasses

import json

import chex
import jax
import jax.numpy as jnp
import numpy as np
import pytest
from flax import nnx
from safetensors.numpy import load_file, save_file

from resps_jax.errors import UserError
from resps_jax.models.config import LlamaConfig
from resps_jax.models.eagle3 import Eagle3Config, Eagle3Head
from resps_jax.models.llama import causal_mask
from resps_jax.models.loading import eagle3_tensors, load_eagle3, save_eagle3

TARGET = LlamaConfig(
    vocab_size=300, hidden_size=64, intermediate_size=160, num_layers=8, num_heads=4, num_kv_heads=2, head_dim=16
)
LLAMA31_8B = LlamaConfig(
    vocab_size=128256, hidden_size=4096, intermediate_size=14336, num_layers=32, num_heads=32, num_kv_heads=8, head_dim=128
)


def random_head(draft_vocab: int = 120, seed: int = 0) -> Eagle3Head:
    cfg = Eagle3Config.for_target(TARGET, draft_vocab_size=draft_vocab)
    head = Eagle3Head(cfg, rngs=nnx.Rngs(seed))
    used = np.sort(np.random.RandomState(seed).choice(TARGET.vocab_size, draft_vocab, replace=False))
    head.d2t[...] = jnp.asarray(used - np.arange(draft_vocab), jnp.int32)
    for norm in (head.norm, head.midlayer.hidden_norm, head.midlayer.input_layernorm):
        norm.weight[...] = 1.0 + 0.1 * jax.random.normal(jax.random.key(seed + 7), norm.weight.shape)
    return head


def run_head(head: Eagle3Head, seed: int = 1) -> np.ndarray:
    rng = np.random.RandomState(seed)
    embeds = jnp.asarray(rng.normal(size=(1, 10, 64)), jnp.float32)
    taps = jnp.asarray(rng.normal(size=(1, 10, 3 * 64)), jnp.float32)
    out, _ = head(embeds, taps, jnp.arange(10)[None], head.new_cache(1, 16), causal_mask(1, 10))
    return np.asarray(head.logits(out))


def test_round_trip_gives_identical_logits(tmp_path):
    head = random_head()
    save_eagle3(head, tmp_path / "draft")
    loaded = load_eagle3(tmp_path / "draft", TARGET)
    np.testing.assert_array_equal(run_head(head), run_head(loaded))
    np.testing.assert_array_equal(np.asarray(head.d2t[...]), np.asarray(loaded.d2t[...]))
    ids = jnp.arange(120)
    np.testing.assert_array_equal(np.asarray(head.to_target_ids(ids)), np.asarray(loaded.to_target_ids(ids)))
    config = json.loads((tmp_path / "draft" / "config.json").read_text())
    assert config["draft_vocab_size"] == 120 and config["vocab_size"] == 300
    # EAGLE's reference takes a present target_hidden_size to mean "own embedding" and would
    # then draft with a random one: the key is written only when the sizes differ
    assert "target_hidden_size" not in config
    assert load_eagle3(tmp_path / "draft", TARGET).cfg.target_hidden_size == TARGET.hidden_size
    wide = dataclasses.replace(head.cfg, target_hidden_size=2 * head.cfg.hidden_size).to_official()
    assert wide["target_hidden_size"] == 2 * head.cfg.hidden_size


def test_t2d_marks_exactly_the_mapped_target_ids(tmp_path):
    head = random_head()
    tensors = eagle3_tensors(head)
    mapped = np.arange(120) + tensors["d2t"]
    assert tensors["d2t"].dtype == np.int64 and tensors["t2d"].dtype == bool
    assert tensors["t2d"].sum() == 120 and tensors["t2d"][mapped].all()


def test_official_key_names_and_shapes_for_llama31_8b():
    """Facts file, section 1: the yuhuili/EAGLE3-LLaMA3.1-Instruct-8B tensors (PyTorch [out, in])."""
    cfg = Eagle3Config.for_target(LLAMA31_8B, draft_vocab_size=32000)
    abstract = nnx.eval_shape(lambda: Eagle3Head(cfg, rngs=nnx.Rngs(0)))
    shapes = jax.tree.map(lambda x: x.shape, nnx.to_pure_dict(nnx.state(abstract)))
    flat = {}

    def walk(tree, prefix=""):
        for k, v in tree.items():
            walk(v, f"{prefix}{k}.") if isinstance(v, dict) else flat.__setitem__(f"{prefix}{k}", v)

    walk(shapes)
    official = {
        "fc.weight": (4096, 12288),
        "midlayer.self_attn.q_proj.weight": (4096, 8192),
        "midlayer.self_attn.k_proj.weight": (1024, 8192),
        "midlayer.self_attn.v_proj.weight": (1024, 8192),
        "midlayer.self_attn.o_proj.weight": (4096, 4096),
        "midlayer.mlp.gate_proj.weight": (14336, 4096),
        "midlayer.mlp.up_proj.weight": (14336, 4096),
        "midlayer.mlp.down_proj.weight": (4096, 14336),
        "midlayer.hidden_norm.weight": (4096,),
        "midlayer.input_layernorm.weight": (4096,),
        "midlayer.post_attention_layernorm.weight": (4096,),
        "norm.weight": (4096,),
        "lm_head.weight": (32000, 4096),
        "d2t": (32000,),
    }
    ours = {name: (shape[::-1] if len(shape) == 2 else shape) for name, shape in flat.items()}
    assert ours == official
    assert cfg.to_official()["draft_vocab_size"] == 32000


def test_draft_step_shapes():
    head = random_head()
    out, cache = head(
        jnp.zeros((2, 5, 64)), jnp.zeros((2, 5, 192)), jnp.zeros((2, 5), jnp.int32), head.new_cache(2, 8), causal_mask(2, 5)
    )
    chex.assert_shape(out, (2, 5, 64))
    chex.assert_shape(head.logits(out), (2, 5, 120))
    # fed-back states (width H) skip fc
    out2, _ = head(jnp.zeros((2, 5, 64)), out, jnp.zeros((2, 5), jnp.int32), cache, causal_mask(2, 5))
    chex.assert_shape(out2, (2, 5, 64))


# ------------------------------------------------------------------------ bad inputs


def saved(tmp_path, head=None):
    folder = tmp_path / "draft"
    save_eagle3(head or random_head(), folder)
    return folder


def edit_tensors(folder, edit) -> None:
    """Rewrite the saved head's model.safetensors through edit(dict) (in place)."""
    tensors = load_file(str(folder / "model.safetensors"))
    edit(tensors)
    save_file(tensors, str(folder / "model.safetensors"))


def test_hidden_size_mismatch_names_both_numbers(tmp_path):
    folder = saved(tmp_path)
    other = LlamaConfig(**{**TARGET.__dict__, "hidden_size": 96})
    with pytest.raises(UserError, match=r"hidden_size 64 .* 96"):
        load_eagle3(folder, other)


def test_fc_width_mismatch_names_both_numbers(tmp_path):
    folder = saved(tmp_path)
    edit_tensors(folder, lambda t: t.update({"fc.weight": t["fc.weight"][:, :128].copy()}))
    with pytest.raises(UserError, match=r"fc input width is 128.*192"):
        load_eagle3(folder, TARGET)


def test_vocab_mismatch(tmp_path):
    folder = saved(tmp_path)
    other = LlamaConfig(**{**TARGET.__dict__, "vocab_size": 512})
    with pytest.raises(UserError, match=r"vocab_size 300 .* 512"):
        load_eagle3(folder, other)


def test_missing_d2t_when_vocabularies_differ(tmp_path):
    folder = saved(tmp_path)
    edit_tensors(folder, lambda t: t.pop("d2t"))
    with pytest.raises(UserError, match="no 'd2t'"):
        load_eagle3(folder, TARGET)


def test_missing_tensor_is_named(tmp_path):
    folder = saved(tmp_path)
    edit_tensors(folder, lambda t: t.pop("midlayer.mlp.up_proj.weight"))
    with pytest.raises(UserError, match="midlayer.mlp.up_proj.weight"):
        load_eagle3(folder, TARGET)


def test_corrupt_safetensors(tmp_path):
    folder = saved(tmp_path)
    data = (folder / "model.safetensors").read_bytes()
    (folder / "model.safetensors").write_bytes(data[: len(data) // 3])
    with pytest.raises(UserError, match="cannot read"):
        load_eagle3(folder, TARGET)


def test_equal_vocabularies_need_no_d2t(tmp_path):
    head = random_head(draft_vocab=300)
    head.d2t[...] = jnp.zeros((300,), jnp.int32)
    folder = saved(tmp_path, head)
    edit_tensors(folder, lambda t: (t.pop("d2t"), t.pop("t2d")))
    loaded = load_eagle3(folder, TARGET)
    np.testing.assert_array_equal(np.asarray(loaded.to_target_ids(jnp.arange(300))), np.arange(300))


def test_cli_refuses_a_mismatched_draft_in_one_line(tmp_path):
    """generate --mode static with a head made for another target: one `error:` line, exit 2."""
    import os
    import subprocess
    import sys

    other = LlamaConfig(vocab_size=257, hidden_size=48, intermediate_size=96, num_layers=8, num_heads=4, num_kv_heads=2, head_dim=12)
    save_eagle3(Eagle3Head(Eagle3Config.for_target(other), rngs=nnx.Rngs(0)), tmp_path / "draft")
    env = dict(os.environ, RESPS_JAX_CACHE=str(tmp_path / "cache"), JAX_PLATFORMS="cpu")
    result = subprocess.run(
        [sys.executable, "-m", "resps_jax.generate", "--model", "tiny", "--mode", "static", "--draft",
         str(tmp_path / "draft"), "--prompt", "hi", "--max-new-tokens", "4"],
        capture_output=True, text=True, env=env, timeout=300,
    )
    assert result.returncode == 2
    lines = result.stderr.strip().splitlines()
    assert len(lines) == 1 and lines[0].startswith("error: ") and "hidden_size 48" in lines[0] and "64" in lines[0]
