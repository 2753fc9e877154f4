"""Device mesh and partition rules for the target, the draft head, their KV caches and I/O.

Megatron-style tensor parallelism over the `model` axis, replicas over the `data` axis:
attention heads (q/k/v columns, o rows) and MLP columns (gate/up columns, down rows) are
split over `model`, so each layer needs one all-reduce after o_proj and one after
down_proj; the vocabulary (embedding rows, LM-head columns) is split too. Norms, biases of
row-split projections and the draft's id map are replicated. The KV cache is split like
the heads that produce it (kv heads over `model`) and its batch rows over `data`.

A dimension is split only when its unit count divides evenly (heads count in heads, not
columns, so a shard never cuts a head); otherwise that dimension is replicated. This
keeps every config valid on every mesh (GQA with 2 KV heads on 8 devices replicates K/V
and splits Q), and `describe()` reports what ended up replicated. The draft head follows
the same rules (its midlayer's projections match the same names); its `fc` is split by
output columns like q/k/v inputs.

Shardings are applied through `jax.jit` in/out shardings: GSPMD partitions the model
from the parameter and cache layouts, and pinning the cache's output sharding to its
input sharding keeps one executable per shape across steps.
"""

from __future__ import annotations

import dataclasses
import re
from collections.abc import Callable, Sequence

import jax
import numpy as np
from jax.sharding import AbstractMesh, Mesh, NamedSharding, PartitionSpec as P

from resps_jax.errors import UserError

AXES = ("data", "model")

# (regex over the '/'-joined parameter path, logical axis per dimension). First match wins.
# Weights are stored [in, out]; logical names map to mesh axes in LOGICAL_TO_MESH.
PARAM_RULES: tuple[tuple[str, tuple[str | None, ...]], ...] = (
    (r"embed_tokens/weight$", ("vocab", None)),  # [V, E]
    (r"lm_head/weight$", (None, "vocab")),  # [E, V]
    (r"q_proj/weight$", (None, "heads")),  # [E, H*D]
    (r"(k_proj|v_proj)/weight$", (None, "kv_heads")),  # [E, KVH*D]
    (r"q_proj/bias$", ("heads",)),
    (r"(k_proj|v_proj)/bias$", ("kv_heads",)),
    (r"o_proj/weight$", ("heads", None)),  # [H*D, E]
    (r"(gate_proj|up_proj)/weight$", (None, "mlp")),  # [E, I]
    (r"down_proj/weight$", ("mlp", None)),  # [I, E]
    (r"fc/weight$", (None, "embed_out")),  # draft [3H, H]
    (r".*", ()),  # norms, o/down biases, d2t: replicated
)
LOGICAL_TO_MESH = {
    "batch": "data",
    "vocab": "model",
    "heads": "model",
    "kv_heads": "model",
    "kv_heads_dim": "model",  # the cache's KVH axis (counted in heads already)
    "mlp": "model",
    "embed_out": "model",
}


def parse_mesh(text: str | None) -> tuple[int, int]:
    """'DATAxMODEL' (e.g. '2x4') -> (2, 4); None -> (1, 1)."""
    if not text:
        return 1, 1
    match = re.fullmatch(r"\s*(\d+)\s*[xX]\s*(\d+)\s*", str(text))
    if not match or int(match[1]) < 1 or int(match[2]) < 1:
        raise UserError(f"mesh {text!r}: expected DATAxMODEL with positive integers, e.g. 2x4")
    return int(match[1]), int(match[2])


def make_mesh(shape: tuple[int, int], devices: Sequence[jax.Device] | None = None) -> Mesh:
    """A (data, model) mesh over the first data*model devices (all processes' devices)."""
    devices = list(jax.devices() if devices is None else devices)
    need = shape[0] * shape[1]
    if need > len(devices):
        raise UserError(
            f"mesh {shape[0]}x{shape[1]} needs {need} devices, but {len(devices)} are visible "
            "(on CPU, XLA_FLAGS=--xla_force_host_platform_device_count=N fakes N devices)"
        )
    if jax.process_count() > 1 and need != len(devices):
        raise UserError(
            f"mesh {shape[0]}x{shape[1]} uses {need} of {len(devices)} devices; in a multi-process "
            "run the mesh must cover every process's devices"
        )
    return Mesh(np.asarray(devices[:need]).reshape(shape), AXES)


def abstract_mesh(shape: tuple[int, int]) -> AbstractMesh:
    """A (data, model) mesh without devices: for planning memory on machines we are not on."""
    return AbstractMesh(tuple(shape), AXES)


def path_key(path: tuple) -> str:
    """'layers/0/self_attn/q_proj/weight' for a pytree path (NNX Variables add a 'value' step)."""
    parts = [str(getattr(p, "key", getattr(p, "name", getattr(p, "idx", p)))) for p in path]
    return "/".join(parts[:-1] if parts and parts[-1] == "value" else parts)


@dataclasses.dataclass(frozen=True)
class Placement:
    """A mesh plus the rules that place parameters, caches and small I/O on it.

    Methods that place attention weights take `head_dim`, which turns head-sized column
    blocks into head counts for the divisibility test.
    """

    mesh: Mesh | AbstractMesh

    @property
    def model(self) -> int:
        return self.mesh.shape["model"]

    @property
    def replicated(self) -> NamedSharding:
        return NamedSharding(self.mesh, P())

    def spec_for(self, shape: tuple[int, ...], logical: tuple[str | None, ...], head_dim: int = 1) -> P:
        """PartitionSpec for a global shape: each logical axis is split iff its units divide."""
        axes = []
        for size, name in zip(shape, logical):
            mesh_axis = LOGICAL_TO_MESH.get(name) if name else None
            if mesh_axis is None:
                axes.append(None)
                continue
            unit = head_dim if name in ("heads", "kv_heads") else 1
            parts = self.mesh.shape[mesh_axis]
            units = size // unit if size % unit == 0 else 0
            axes.append(mesh_axis if parts > 1 and units and units % parts == 0 else None)
        while axes and axes[-1] is None:
            axes.pop()
        return P(*axes)

    def param_spec(self, key: str, shape: tuple[int, ...], head_dim: int) -> P:
        for pattern, logical in PARAM_RULES:
            if re.search(pattern, key):
                return self.spec_for(shape, logical[: len(shape)], head_dim)
        return P()

    def param_shardings(self, state, head_dim: int):
        """NamedSharding per leaf of an (abstract or concrete) parameter pytree."""

        def one(path, leaf):
            return NamedSharding(self.mesh, self.param_spec(path_key(path), tuple(leaf.shape), head_dim))

        return jax.tree_util.tree_map_with_path(one, state)

    def cache_shardings(self, cache):
        """KVCache leaves: [B, KVH, S, D] split (data, model) where they divide; lengths [B] by data."""

        def one(leaf):
            if leaf.ndim == 4:
                return NamedSharding(self.mesh, self.spec_for(leaf.shape, ("batch", "kv_heads_dim", None, None)))
            return NamedSharding(self.mesh, self.spec_for(leaf.shape, ("batch",)))

        return jax.tree_util.tree_map(one, cache)

    def put(self, tree, shardings):
        """Place host or device arrays onto their shardings, shard by shard."""
        return jax.tree_util.tree_map(place_array, tree, shardings)

    def describe(self, state, head_dim: int) -> list[str]:
        """Human-readable 'path: shape -> spec' lines (for plan and logs)."""
        lines = []
        for path, leaf in jax.tree_util.tree_flatten_with_path(state)[0]:
            key = path_key(path)
            lines.append(f"{key}: {tuple(leaf.shape)} -> {self.param_spec(key, tuple(leaf.shape), head_dim)}")
        return lines


def place_array(value, sharding: NamedSharding) -> jax.Array:
    """One global array from a host (numpy) or local value, each device given only its shard.

    Works across processes: every process passes the same value (or a reader that can
    produce any slice of it) and contributes the shards of its own devices.
    """
    if isinstance(value, jax.Array):
        if value.sharding == sharding:
            return value
        if not value.is_fully_addressable or jax.process_count() == 1:  # global already, or one process
            return jax.device_put(value, sharding)
    host = np.asarray(value)
    return jax.make_array_from_callback(host.shape, sharding, lambda index: host[index])


def place_from_reader(
    shape: tuple[int, ...], sharding: NamedSharding, read: Callable[[tuple[slice, ...]], np.ndarray]
) -> jax.Array:
    """A global array whose shards come from read(index): the full tensor is never assembled.

    Replicas of the same shard (several devices holding one index) are read once.
    """
    memo: dict[tuple, np.ndarray] = {}

    def shard(index: tuple[slice, ...]) -> np.ndarray:
        key = tuple((s.start, s.stop, s.step) for s in index)
        if key not in memo:
            memo[key] = read(index)
        return memo[key]

    return jax.make_array_from_callback(shape, sharding, shard)


def to_host(x: jax.Array) -> np.ndarray:
    """A replicated (or local) array's value on this host, in single- and multi-process runs."""
    return np.asarray(to_host_tree(x))


def to_host_tree(tree):
    """Every array of a small pytree on this host in one transfer (replicated arrays read from
    their local copy): the engine's per-interval status is then one device-to-host copy."""
    def local(x):
        if x.is_fully_addressable:
            return x
        if x.is_fully_replicated:
            return x.addressable_data(0)
        from jax.experimental import multihost_utils

        return multihost_utils.process_allgather(x, tiled=True)

    return jax.device_get(jax.tree.map(local, tree))
