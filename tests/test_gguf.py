"""GGUF -> HF folder conversion on a tiny Llama GGUF written here the way llama.cpp writes one.

The GGUF carries llama.cpp's metadata keys, F32 tensors under llama.cpp names with the Q/K rows
permuted as llama.cpp's convert script does, and byte-level (`gpt2`) tokenizer metadata, so
transformers can build the tokenizer from the file. The converted folder must hold the original
HF tensors bit for bit and give transformers' logits.
"""

from __future__ import annotations

import json
from pathlib import Path

import jax.numpy as jnp
import numpy as np
import pytest

gguf = pytest.importorskip("gguf")

from resps_jax.errors import UserError  # noqa: E402
from resps_jax.models.cache import KVCache  # noqa: E402
from resps_jax.models.config import read_llama_config  # noqa: E402
from resps_jax.models.llama import causal_mask  # noqa: E402
from resps_jax.models.loading import (  # noqa: E402
    gguf_to_hf_folder,
    load_hf_llama,
    load_target,
    permute_rope_rows,
    unpermute_rope_rows,
)

GGUF_LAYER_NAMES = {
    "input_layernorm": "attn_norm",
    "self_attn.q_proj": "attn_q",
    "self_attn.k_proj": "attn_k",
    "self_attn.v_proj": "attn_v",
    "self_attn.o_proj": "attn_output",
    "post_attention_layernorm": "ffn_norm",
    "mlp.gate_proj": "ffn_gate",
    "mlp.up_proj": "ffn_up",
    "mlp.down_proj": "ffn_down",
}
GGUF_GLOBAL_NAMES = {
    "model.embed_tokens.weight": "token_embd.weight",
    "model.norm.weight": "output_norm.weight",
    "lm_head.weight": "output.weight",
}
LLAMA_CPP_KEYS = (
    "llama.block_count", "llama.embedding_length", "llama.feed_forward_length",
    "llama.attention.head_count", "llama.attention.head_count_kv", "llama.rope.freq_base",
    "llama.attention.layer_norm_rms_epsilon", "llama.context_length", "llama.vocab_size",
    "llama.rope.dimension_count",
)


def llama_cpp_permute(w: np.ndarray, n_head: int) -> np.ndarray:
    """llama.cpp convert_hf_to_gguf.py's `permute`, written out independently of resps_jax."""
    rows, cols = w.shape
    return w.reshape(n_head, 2, rows // n_head // 2, cols).swapaxes(1, 2).reshape(rows, cols)


def to_gguf_name(hf: str) -> str:
    if hf in GGUF_GLOBAL_NAMES:
        return GGUF_GLOBAL_NAMES[hf]
    _, _, layer, rest = hf.split(".", 3)  # model.layers.N.<module>.weight
    module, param = rest.rsplit(".", 1)
    return f"blk.{layer}.{GGUF_LAYER_NAMES[module]}.{param}"


def write_llama_gguf(path: Path, tiny, tensors: dict[str, np.ndarray]) -> None:
    """A Llama GGUF as llama.cpp's converter writes it (F32, Q/K rows permuted)."""
    s = tiny.sizes
    head_dim = s["hidden"] // s["heads"]
    writer = gguf.GGUFWriter(str(path), "llama")
    writer.add_block_count(s["layers"])
    writer.add_embedding_length(s["hidden"])
    writer.add_feed_forward_length(s["intermediate"])
    writer.add_head_count(s["heads"])
    writer.add_head_count_kv(s["kv_heads"])
    writer.add_rope_freq_base(10000.0)
    writer.add_layer_norm_rms_eps(1e-5)
    writer.add_context_length(s["max_positions"])
    writer.add_vocab_size(s["vocab"])
    writer.add_rope_dimension_count(head_dim)
    tokens = tiny.byte_tokens()
    writer.add_tokenizer_model("gpt2")
    writer.add_token_list(tokens)
    writer.add_token_types([gguf.TokenType.NORMAL] * (len(tokens) - 1) + [gguf.TokenType.CONTROL])
    writer.add_token_scores([0.0] * len(tokens))  # no merges: every token is one byte
    writer.add_eos_token_id(len(tokens) - 1)
    for name, w in tensors.items():
        if name.endswith("q_proj.weight"):
            w = permute_rope_rows(w, s["heads"])
        elif name.endswith("k_proj.weight"):
            w = permute_rope_rows(w, s["kv_heads"])
        writer.add_tensor(to_gguf_name(name), np.ascontiguousarray(w, np.float32))
    writer.write_header_to_file()
    writer.write_kv_data_to_file()
    writer.write_tensors_to_file()
    writer.close()


@pytest.fixture(scope="module")
def original(tiny):
    return tiny.tensors(seed=7)


@pytest.fixture(scope="module")
def gguf_file(tmp_path_factory, tiny, original) -> Path:
    path = tmp_path_factory.mktemp("gguf") / "tiny-llama-F32.gguf"
    write_llama_gguf(path, tiny, original)
    return path


@pytest.fixture(scope="module")
def converted(tmp_path_factory, gguf_file) -> Path:
    folder = tmp_path_factory.mktemp("converted") / "tiny-llama"
    gguf_to_hf_folder(gguf_file, folder)
    return folder


def test_permutation_is_llama_cpps(original, tiny):
    s = tiny.sizes
    head_dim = s["hidden"] // s["heads"]
    for name, heads in (("model.layers.0.self_attn.q_proj.weight", s["heads"]),
                        ("model.layers.5.self_attn.k_proj.weight", s["kv_heads"])):
        w = original[name]
        permuted = permute_rope_rows(w, heads)
        np.testing.assert_array_equal(permuted, llama_cpp_permute(w, heads))
        assert not np.array_equal(permuted, w)
        # llama.cpp's interleaved order: GGUF row 2i of a head is HF row i, row 2i+1 is HF row i + d/2
        per_head, gguf_rows = w.reshape(heads, head_dim, -1), permuted.reshape(heads, head_dim, -1)
        half = head_dim // 2
        np.testing.assert_array_equal(gguf_rows[:, 0::2], per_head[:, :half])
        np.testing.assert_array_equal(gguf_rows[:, 1::2], per_head[:, half:])
        np.testing.assert_array_equal(unpermute_rope_rows(permuted, heads), w)


def test_gguf_has_llama_cpp_layout(gguf_file, tiny):
    reader = gguf.GGUFReader(str(gguf_file))
    assert reader.fields["general.architecture"].contents() == "llama"
    assert all(key in reader.fields for key in LLAMA_CPP_KEYS)
    names = {t.name for t in reader.tensors}
    assert {"token_embd.weight", "output_norm.weight", "output.weight", "blk.0.attn_q.weight",
            "blk.7.ffn_down.weight"} <= names
    assert len(names) == 3 + 9 * tiny.sizes["layers"]
    assert {t.tensor_type for t in reader.tensors} == {gguf.GGMLQuantizationType.F32}


def test_converted_weights_equal_originals(converted, original):
    from safetensors.numpy import load_file

    files = sorted(converted.glob("*.safetensors"))
    assert files
    got = {}
    for file in files:
        got.update(load_file(str(file)))
    assert set(got) == set(original)
    for name, want in original.items():
        assert got[name].dtype == np.float32, name
        np.testing.assert_array_equal(got[name], want, err_msg=name)


def test_converted_config_and_tokenizer(converted, tiny):
    s = tiny.sizes
    cfg = read_llama_config(converted)
    assert (cfg.vocab_size, cfg.hidden_size, cfg.intermediate_size) == (s["vocab"], s["hidden"], s["intermediate"])
    assert (cfg.num_layers, cfg.num_heads, cfg.num_kv_heads, cfg.head_dim) == (s["layers"], s["heads"], s["kv_heads"], 16)
    assert cfg.rope.theta == 10000.0 and cfg.rope.rope_type == "default"
    assert cfg.rms_norm_eps == pytest.approx(1e-5, rel=1e-6)
    assert cfg.max_position_embeddings == s["max_positions"]
    assert not cfg.tie_word_embeddings
    assert cfg.eos_token_ids == (s["vocab"] - 1,)
    assert json.loads((converted / "config.json").read_text())["model_type"] == "llama"

    from transformers import AutoTokenizer

    tok = AutoTokenizer.from_pretrained(str(converted), local_files_only=True)
    ref = tiny.tokenizer()
    text = "Hello wörld, the GGUF tokenizer!"
    assert tok(text)["input_ids"] == ref(text)["input_ids"] == list(text.encode())
    assert tok.eos_token_id == s["vocab"] - 1


def test_converted_logits_match_transformers(converted, original, tiny):
    torch = pytest.importorskip("torch")
    from transformers import LlamaConfig as HFLlamaConfig
    from transformers import LlamaForCausalLM

    s = tiny.sizes
    hf = LlamaForCausalLM(
        HFLlamaConfig(
            vocab_size=s["vocab"], hidden_size=s["hidden"], intermediate_size=s["intermediate"],
            num_hidden_layers=s["layers"], num_attention_heads=s["heads"], num_key_value_heads=s["kv_heads"],
            max_position_embeddings=s["max_positions"], rope_theta=10000.0, rms_norm_eps=1e-5,
            tie_word_embeddings=False,
        )
    ).eval()
    hf.load_state_dict({k: torch.from_numpy(v.copy()) for k, v in original.items()}, strict=True)

    ours = load_hf_llama(converted)
    ids = np.random.RandomState(0).randint(0, s["vocab"], size=(2, 40))
    with torch.no_grad():
        ref = hf(torch.tensor(ids)).logits.numpy()
    cfg = ours.cfg
    cache = KVCache.create(cfg.num_layers, 2, 48, cfg.num_kv_heads, cfg.head_dim, jnp.float32)
    positions = jnp.broadcast_to(jnp.arange(40), (2, 40))
    hidden, _, _ = ours(jnp.asarray(ids), positions, cache, causal_mask(2, 40))
    logits = np.asarray(ours.logits(hidden))
    assert logits.shape == ref.shape == (2, 40, s["vocab"])
    rel = np.abs(logits - ref).max() / np.abs(ref).max()
    assert rel <= 1e-4, f"max relative logits error {rel:.2e}"


def test_load_target_converts_gguf_once(gguf_file, monkeypatch, tmp_path, tiny):
    monkeypatch.setenv("RESPS_JAX_CACHE", str(tmp_path / "cache"))
    first = load_target(str(gguf_file))
    assert first.folder.is_relative_to(tmp_path / "cache")
    assert first.cfg.num_layers == tiny.sizes["layers"]
    assert first.tokenizer("hi")["input_ids"] == [104, 105]
    stamp = (first.folder / "model.safetensors").stat().st_mtime_ns
    second = load_target(str(gguf_file), with_tokenizer=False)
    assert second.folder == first.folder
    assert (second.folder / "model.safetensors").stat().st_mtime_ns == stamp  # reused, not rewritten
    assert [p.name for p in (tmp_path / "cache" / "gguf").iterdir()] == [first.folder.name]  # no staging left


def write_other_arch_gguf(path: Path, arch: str) -> None:
    writer = gguf.GGUFWriter(str(path), arch)
    writer.add_block_count(1)
    writer.add_tensor("token_embd.weight", np.ones((8, 4), np.float32))
    writer.write_header_to_file()
    writer.write_kv_data_to_file()
    writer.write_tensors_to_file()
    writer.close()


@pytest.mark.parametrize("arch", ["gpt2", "qwen2"])
def test_wrong_architecture_raises_user_error(tmp_path, arch):
    path = tmp_path / f"tiny-{arch}.gguf"
    write_other_arch_gguf(path, arch)
    folder = tmp_path / "out" / "converted"
    with pytest.raises(UserError, match=repr(arch)):
        gguf_to_hf_folder(path, folder)
    assert not folder.exists()
    assert not (tmp_path / "out").exists() or not any((tmp_path / "out").iterdir())


def test_not_a_gguf_raises_user_error(tmp_path):
    path = tmp_path / "broken.gguf"
    path.write_bytes(b"definitely not GGUF" * 10)
    with pytest.raises(UserError, match="not a readable GGUF"):
        gguf_to_hf_folder(path, tmp_path / "out")


def test_missing_required_metadata_raises_user_error(tmp_path):
    path = tmp_path / "no-head-count.gguf"
    writer = gguf.GGUFWriter(str(path), "llama")
    writer.add_block_count(1)
    writer.add_embedding_length(8)
    writer.add_feed_forward_length(16)  # llama.attention.head_count left out
    writer.add_tensor("token_embd.weight", np.ones((4, 8), np.float32))
    writer.write_header_to_file()
    writer.write_kv_data_to_file()
    writer.write_tensors_to_file()
    writer.close()
    with pytest.raises(UserError, match="llama.attention.head_count"):
        gguf_to_hf_folder(path, tmp_path / "out")
