"""The F32 GGUF writer (for llama.cpp in benchmarks/ar_decode.py) on a tiny quantized GGUF.

llama.cpp must see exactly the float32 weights our loader dequantizes, so the copy must read
back every tensor as F32, equal to `gguf.quants.dequantize` of the source, under the same
names, shapes and order, with every metadata field kept (tokenizer included) and the file type
saying ALL_F32. No llama-cpp-python needed.
"""

from __future__ import annotations

from pathlib import Path

import numpy as np
import pytest

gguf = pytest.importorskip("gguf")

from resps_jax.models.loading import write_f32_gguf  # noqa: E402

QTYPES = {
    "token_embd.weight": gguf.GGMLQuantizationType.Q8_0,
    "blk.0.attn_norm.weight": gguf.GGMLQuantizationType.F32,
    "blk.0.attn_q.weight": gguf.GGMLQuantizationType.Q4_1,
    "blk.0.ffn_down.weight": gguf.GGMLQuantizationType.Q4_1,
}
SHAPES = {  # numpy order (slowest dim first); the fastest dim is a multiple of the 32-wide blocks
    "token_embd.weight": (48, 64),
    "blk.0.attn_norm.weight": (64,),
    "blk.0.attn_q.weight": (64, 64),
    "blk.0.ffn_down.weight": (64, 96),
}
TOKENS = [f"<t{i}>" for i in range(48)]


@pytest.fixture(scope="module")
def quantized(tmp_path_factory) -> Path:
    path = tmp_path_factory.mktemp("gguf") / "tiny-Q4_1.gguf"
    rng = np.random.default_rng(3)
    writer = gguf.GGUFWriter(str(path), "llama")
    writer.add_block_count(1)
    writer.add_embedding_length(64)
    writer.add_rope_freq_base(100000.0)
    writer.add_file_type(gguf.LlamaFileType.MOSTLY_Q4_1)
    writer.add_tokenizer_model("gpt2")
    writer.add_token_list(TOKENS)
    writer.add_token_types([gguf.TokenType.NORMAL] * len(TOKENS))
    writer.add_token_merges(["<t1> <t2>"])
    writer.add_eos_token_id(2)
    writer.add_add_bos_token(False)
    writer.add_chat_template("{{ messages }}")
    for name, qtype in QTYPES.items():
        w = rng.standard_normal(SHAPES[name]).astype(np.float32)
        if qtype == gguf.GGMLQuantizationType.F32:
            writer.add_tensor(name, w)
        else:
            writer.add_tensor(name, gguf.quants.quantize(w, qtype), raw_dtype=qtype)
    writer.write_header_to_file()
    writer.write_kv_data_to_file()
    writer.write_tensors_to_file()
    writer.close()
    return path


def test_f32_copy_has_dequantized_tensors_and_all_metadata(quantized, tmp_path):
    dest = tmp_path / "tiny-f32.gguf"
    write_f32_gguf(quantized, dest)
    src, out = gguf.GGUFReader(str(quantized)), gguf.GGUFReader(str(dest))

    assert [t.name for t in out.tensors] == list(QTYPES)
    assert [t.tensor_type for t in src.tensors] == list(QTYPES.values())  # the source really is quantized
    for s, o in zip(src.tensors, out.tensors, strict=True):
        assert o.tensor_type == gguf.GGMLQuantizationType.F32
        assert list(o.shape) == list(s.shape)
        assert o.data.dtype == np.float32 and o.data.shape == SHAPES[o.name]
        expected = gguf.quants.dequantize(s.data, s.tensor_type).reshape(SHAPES[o.name])
        np.testing.assert_array_equal(o.data, expected)

    assert set(out.fields) == set(src.fields)
    for key, field in src.fields.items():
        if key == "general.file_type":
            assert out.fields[key].contents() == gguf.LlamaFileType.ALL_F32
        else:
            assert out.fields[key].contents() == field.contents(), key
            assert out.fields[key].types == field.types, key
    assert out.fields["tokenizer.ggml.tokens"].contents() == TOKENS


def test_f32_copy_replaces_dest_atomically(quantized, tmp_path):
    dest = tmp_path / "sub" / "tiny-f32.gguf"
    write_f32_gguf(quantized, dest)
    write_f32_gguf(quantized, dest)  # overwriting is fine; no staging files are left behind
    assert [p.name for p in dest.parent.iterdir()] == [dest.name]
