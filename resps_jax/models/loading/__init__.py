"""Checkpoints in and out, one module per format; this package re-exports them all.

- `common`: built-in names (`smollm2`, `tiny`), dtypes, the cache folder, HF tensor names;
- `safetensors_hf`: HF safetensors folders (single or sharded, streamed tensor by tensor);
- `gguf_llama`: Llama GGUFs, dequantized once into an HF folder in the cache;
- `torch_bin`: pytorch_model.bin (official EAGLE-3 heads often ship only this);
- `eagle3_format`: EAGLE-3 heads in the official format, in and out;
- `front`: a model or head by name -> loaded (`load_target`, `load_head`).

Callers import from `resps_jax.models.loading` as before the split; the modules are an
internal layout.
"""

from __future__ import annotations

from resps_jax.models.loading.common import (
    DTYPES,
    EMBEDDED_DEFAULT,
    SMOLLM2_FILE,
    SMOLLM2_PACKAGE,
    TINY_MODEL,
    TRAINED_HEAD,
    cache_root,
    hf_name,
    is_projection,
    parse_dtype,
)
from resps_jax.models.loading.eagle3_format import eagle3_tensor_name, eagle3_tensors, load_eagle3, save_eagle3
from resps_jax.models.loading.front import (
    LoadedTarget,
    load_head,
    load_target,
    load_tokenizer,
    resolve_draft_folder,
    resolve_model_folder,
    trained_head_folder,
)
from resps_jax.models.loading.gguf_llama import (
    SHIPPED_GGUF_TOKENIZER,
    converted_gguf,
    f32_gguf,
    gguf_cache_folder,
    gguf_hf_name,
    gguf_llama_config,
    gguf_to_hf_folder,
    permute_rope_rows,
    save_gguf_tokenizer,
    shipped_gguf_tokenizer,
    smollm2_gguf,
    unpermute_rope_rows,
    write_f32_gguf,
)
from resps_jax.models.loading.safetensors_hf import (
    SafetensorsReader,
    abstract_llama,
    llama_tensors_hf,
    load_hf_llama,
    save_hf_folder,
)
from resps_jax.models.loading.torch_bin import TorchBinReader

__all__ = [
    "DTYPES", "EMBEDDED_DEFAULT", "SHIPPED_GGUF_TOKENIZER", "SMOLLM2_FILE", "SMOLLM2_PACKAGE", "TINY_MODEL",
    "TRAINED_HEAD", "LoadedTarget", "SafetensorsReader", "TorchBinReader", "abstract_llama", "cache_root",
    "converted_gguf", "eagle3_tensor_name", "eagle3_tensors", "f32_gguf", "gguf_cache_folder", "gguf_hf_name",
    "gguf_llama_config", "gguf_to_hf_folder", "hf_name", "is_projection", "llama_tensors_hf", "load_eagle3",
    "load_head", "load_hf_llama", "load_target", "load_tokenizer", "parse_dtype", "permute_rope_rows",
    "resolve_draft_folder", "resolve_model_folder", "save_eagle3", "save_gguf_tokenizer", "save_hf_folder",
    "shipped_gguf_tokenizer", "smollm2_gguf", "trained_head_folder", "unpermute_rope_rows", "write_f32_gguf",
]
