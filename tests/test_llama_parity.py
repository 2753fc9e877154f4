"""Logits and tapped-state parity with transformers' LlamaForCausalLM (float32, seeded random)."""

from __future__ import annotations

import json

import chex
import jax.numpy as jnp
import numpy as np
import pytest

torch = pytest.importorskip("torch")
from transformers import LlamaConfig as HFLlamaConfig  # noqa: E402
from transformers import LlamaForCausalLM  # noqa: E402

from resps_jax.decoding.engine import Engine, GenerationConfig  # noqa: E402
from resps_jax.models.cache import KVCache  # noqa: E402
from resps_jax.models.config import read_llama_config  # noqa: E402
from resps_jax.models.llama import causal_mask  # noqa: E402
from resps_jax.models.loading import load_hf_llama  # noqa: E402

LLAMA3_SCALING = {
    "rope_type": "llama3",
    "factor": 8.0,
    "low_freq_factor": 1.0,
    "high_freq_factor": 4.0,
    "original_max_position_embeddings": 64,
}

CASES = {
    "gqa-llama3-untied-sharded": dict(heads=4, kv=2, rope=LLAMA3_SCALING, tied=False, shard="60KB"),
    "mha-default-tied": dict(heads=4, kv=4, rope=None, tied=True, shard=None),
    "gqa-linear-tied-sharded": dict(heads=8, kv=2, rope={"rope_type": "linear", "factor": 2.0}, tied=True, shard="100KB"),
    "mqa-llama3-untied": dict(heads=4, kv=1, rope=LLAMA3_SCALING, tied=False, shard=None),
}


def make_hf_model(heads: int, kv: int, rope, tied: bool, seed: int = 0, layers: int = 8):
    torch.manual_seed(seed)
    config = HFLlamaConfig(
        vocab_size=320,
        hidden_size=64,
        intermediate_size=160,
        num_hidden_layers=layers,
        num_attention_heads=heads,
        num_key_value_heads=kv,
        max_position_embeddings=512,
        rope_theta=10000.0,
        rope_scaling=dict(rope) if rope else None,  # transformers mutates the dict
        tie_word_embeddings=tied,
        rms_norm_eps=1e-5,
    )
    model = LlamaForCausalLM(config).eval()
    with torch.no_grad():  # larger-than-default weights so the layers actually mix
        for p in model.parameters():
            p.normal_(0.0, 0.1)
    return model


@pytest.fixture(scope="module", params=sorted(CASES))
def checkpoint(request, tmp_path_factory):
    case = CASES[request.param]
    hf = make_hf_model(case["heads"], case["kv"], case["rope"], case["tied"])
    folder = tmp_path_factory.mktemp(request.param)
    if case["shard"]:
        hf.save_pretrained(folder, max_shard_size=case["shard"])
    else:
        hf.save_pretrained(folder)
    return request.param, hf, folder


def test_logits_and_taps_match_transformers(checkpoint):
    name, hf, folder = checkpoint
    if CASES[name]["shard"]:
        assert (folder / "model.safetensors.index.json").is_file()
        assert len(list(folder.glob("*.safetensors"))) > 1
    ours = load_hf_llama(folder)
    ids = np.random.RandomState(1).randint(0, 320, size=(2, 48))
    with torch.no_grad():
        out = hf(torch.tensor(ids), output_hidden_states=True)
    ref_logits = out.logits.numpy()
    cfg = ours.cfg
    cache = KVCache.create(cfg.num_layers, 2, 64, cfg.num_kv_heads, cfg.head_dim, jnp.float32)
    positions = jnp.broadcast_to(jnp.arange(48), (2, 48))
    hidden, taps, _ = ours(jnp.asarray(ids), positions, cache, causal_mask(2, 48))
    logits = np.asarray(ours.logits(hidden))
    chex.assert_shape(logits, (2, 48, 320))
    chex.assert_shape(taps, (2, 48, 3 * 64))
    rel = np.abs(logits - ref_logits).max() / np.abs(ref_logits).max()
    assert rel <= 1e-4, f"{name}: max relative logits error {rel:.2e}"
    low, mid, high = cfg.tap_layers
    ref_taps = np.concatenate([out.hidden_states[i].numpy() for i in (low, mid, high)], axis=-1)
    tap_rel = np.abs(np.asarray(taps) - ref_taps).max() / np.abs(ref_taps).max()
    assert tap_rel <= 1e-4, f"{name}: tapped states differ, rel {tap_rel:.2e}"


def test_incremental_decoding_matches_full_forward(checkpoint):
    """Prefill 20 tokens, then feed 12 one at a time through the cache: same logits."""
    _, hf, folder = checkpoint
    ours = load_hf_llama(folder)
    cfg = ours.cfg
    ids = np.random.RandomState(2).randint(0, 320, size=(1, 32))
    with torch.no_grad():
        ref = hf(torch.tensor(ids)).logits.numpy()[0]
    cache = KVCache.create(cfg.num_layers, 1, 40, cfg.num_kv_heads, cfg.head_dim, jnp.float32)
    hidden, _, cache = ours(jnp.asarray(ids[:, :20]), jnp.arange(20)[None], cache, causal_mask(1, 20))
    cache = cache.with_lengths(cache.lengths + 20)
    got = [np.asarray(ours.logits(hidden))[0]]
    for t in range(20, 32):
        hidden, _, cache = ours(jnp.asarray(ids[:, t : t + 1]), jnp.array([[t]]), cache, causal_mask(1, 1))
        cache = cache.with_lengths(cache.lengths + 1)
        got.append(np.asarray(ours.logits(hidden))[0])
    got = np.concatenate(got, axis=0)
    assert np.abs(got - ref).max() / np.abs(ref).max() <= 1e-4


def test_greedy_generation_matches_transformers(checkpoint):
    _, hf, folder = checkpoint
    engine = Engine(load_hf_llama(folder))
    prompt = np.random.RandomState(3).randint(0, 320, size=17).tolist()
    result = engine.generate(prompt, GenerationConfig(max_new_tokens=24), eos_ids=())
    with torch.no_grad():
        ref = hf.generate(
            torch.tensor([prompt]), max_new_tokens=24, do_sample=False, eos_token_id=None, pad_token_id=0
        )[0, 17:].tolist()
    assert result.token_ids == ref
    assert result.steps == 23 and result.mean_accepted == 1.0


def test_old_and_new_rope_config_forms_agree(tmp_path):
    """config.json with rope_theta + rope_scaling (published checkpoints) == rope_parameters (transformers 5)."""
    base = {
        "model_type": "llama", "vocab_size": 10, "hidden_size": 8, "intermediate_size": 16,
        "num_hidden_layers": 8, "num_attention_heads": 2, "num_key_value_heads": 1,
    }
    old = dict(base, rope_theta=500000.0, rope_scaling=dict(LLAMA3_SCALING))
    new = dict(base, rope_parameters=dict(LLAMA3_SCALING, rope_theta=500000.0))
    parsed = []
    for name, raw in (("old", old), ("new", new)):
        folder = tmp_path / name
        folder.mkdir()
        (folder / "config.json").write_text(json.dumps(raw))
        parsed.append(read_llama_config(folder))
    assert parsed[0] == parsed[1]
    assert parsed[0].rope.rope_type == "llama3" and parsed[0].rope.theta == 500000.0
    assert parsed[0].tap_layers == (2, 4, 5)


def test_decode_loop_compiles_once_per_cache_length(checkpoint):
    """Different prompt lengths in one bucket and different budgets reuse the executables."""
    _, _, folder = checkpoint
    engine = Engine(load_hf_llama(folder))
    engine.generate(list(range(1, 12)), GenerationConfig(max_new_tokens=8), eos_ids=())
    first = engine.executables()
    assert first == 2  # one prefill, one decode loop
    engine.generate(list(range(3, 16)), GenerationConfig(max_new_tokens=5, temperature=0.7, seed=3), eos_ids=(7,))
    engine.generate(list(range(5, 9)), GenerationConfig(max_new_tokens=30), eos_ids=())
    assert engine.executables() == first


def test_batched_generation_equals_one_by_one(checkpoint):
    """Rows of different lengths decode together exactly as they do alone (greedy and sampled)."""
    _, _, folder = checkpoint
    engine = Engine(load_hf_llama(folder))
    rng = np.random.RandomState(4)
    prompts = [rng.randint(0, 320, size=n).tolist() for n in (5, 17, 11)]
    for gen in (GenerationConfig(max_new_tokens=12), GenerationConfig(max_new_tokens=12, temperature=0.8, seed=5)):
        together = engine.generate_batch(prompts, gen, eos_ids=(3,))
        alone = [engine.generate(p, gen, eos_ids=(3,)) for p in prompts]
        assert [r.token_ids for r in together] == [r.token_ids for r in alone]
