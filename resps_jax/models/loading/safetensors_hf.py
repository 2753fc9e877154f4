"""HF safetensors folders (single or sharded) in and out, for the Llama target.

Folders are read tensor by tensor (one tensor on the host at a time, and on a mesh only the
block each device asks for), so a sharded 70B checkpoint never needs twice its size in host
memory.
"""

from __future__ import annotations

import contextlib
import json
from collections.abc import Callable, Iterator
from pathlib import Path

import jax
import jax.numpy as jnp
import numpy as np
from flax import nnx

from resps_jax.errors import UserError
from resps_jax.models.config import LlamaConfig, read_llama_config
from resps_jax.models.llama import Llama
from resps_jax.models.loading.common import _flatten, _set, hf_name, is_projection
from resps_jax.models.sharding import Placement, make_mesh, place_from_reader


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
