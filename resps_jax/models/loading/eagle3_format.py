"""EAGLE-3 heads in the official format (config.json + model.safetensors or pytorch_model.bin)."""

from __future__ import annotations

import os
import shutil
import tempfile
from pathlib import Path

import jax
import jax.numpy as jnp
import numpy as np
from flax import nnx

from resps_jax.errors import UserError
from resps_jax.models.config import LlamaConfig, read_config_json
from resps_jax.models.loading.common import _flatten, _set, is_projection
from resps_jax.models.loading.safetensors_hf import SafetensorsReader, save_hf_folder
from resps_jax.models.loading.torch_bin import TorchBinReader


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
        reader = TorchBinReader(folder / "pytorch_model.bin")
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
