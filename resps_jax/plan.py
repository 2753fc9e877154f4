"""python -m resps_jax.plan --config configs/X.py [--config.mesh.shape=1x8 --config.device_memory_gib=80]

Per-device memory of a run before any weights load: target weights, KV cache at the
configured length, draft head and its cache, and activations of the largest verify
bucket. Weights and caches are sized by the same partition rules that place them
(models/sharding.py) on a device-less mesh, so the plan sees exactly what the engine
would put where, replicated tensors included. A config that does not fit in
`memory_fraction` of each device is refused with one error line, exit 2.
The hand calculation these numbers were checked against is in docs/plan.md.
"""

from __future__ import annotations

import dataclasses
import math
import os
import sys
from pathlib import Path

import jax
import numpy as np

from resps_jax.errors import UserError, run_cli

GIB = 1 << 30


@dataclasses.dataclass(frozen=True)
class TreeLimits:
    tt_max: int  # verified rows: the head's TT plus any n-gram chain
    d_max: int
    k_max: int
    chain_max: int = 0

    @property
    def margin(self) -> int:
        """What a SpeculativeEngine with these limits reserves past the committed text."""
        from resps_jax.decoding.tree import TreeShape
        from resps_jax.models.cache import cache_margin

        widest = TreeShape(self.k_max, self.d_max, self.tt_max - self.chain_max, self.chain_max)
        return cache_margin(widest.verify_rows, widest.path_width)


@dataclasses.dataclass
class MemoryPlan:
    rows: list[tuple[str, float, str]]  # (what, bytes per device, detail)
    mesh: tuple[int, int]
    capacity: int

    @property
    def per_device(self) -> float:
        return sum(b for _, b, _ in self.rows)


def _sharded_bytes(abstract, shardings) -> tuple[float, int, int]:
    """(bytes on one device, tensors split, tensors replicated) for an abstract pytree."""
    total, split, replicated = 0.0, 0, 0
    for leaf, sharding in zip(jax.tree.leaves(abstract), jax.tree.leaves(shardings)):
        shard = sharding.shard_shape(tuple(leaf.shape))
        total += math.prod(shard) * np.dtype(leaf.dtype).itemsize
        if tuple(shard) == tuple(leaf.shape):
            replicated += 1
        else:
            split += 1
    return total, split, replicated


def plan_memory(target_cfg, head_cfg, dtype, mesh_shape: tuple[int, int], max_length: int, batch: int,
                tree: TreeLimits) -> MemoryPlan:
    """Bytes per device of every resident piece of a speculative decoding run."""
    from flax import nnx

    from resps_jax.decoding.spec import draft_cache_length
    from resps_jax.models.cache import CACHE_ROUND, KVCache
    from resps_jax.models.eagle3 import Eagle3Head
    from resps_jax.models.loading import abstract_llama
    from resps_jax.models.sharding import Placement, abstract_mesh

    placement = Placement(abstract_mesh(mesh_shape))
    itemsize = np.dtype(dtype).itemsize
    rows: list[tuple[str, float, str]] = []

    _, target = abstract_llama(target_cfg, dtype)
    params = sum(math.prod(x.shape) for x in jax.tree.leaves(target))
    weights, split, repl = _sharded_bytes(target, placement.param_shardings(target, target_cfg.head_dim))
    rows.append(("target weights", weights, f"{params / 1e9:.2f} B params; {split} tensors split, {repl} replicated"))

    capacity = int(math.ceil((max_length + tree.margin) / CACHE_ROUND) * CACHE_ROUND)
    c = target_cfg
    cache = jax.eval_shape(lambda: KVCache.create(c.num_layers, batch, capacity, c.num_kv_heads, c.head_dim, dtype))
    cache_bytes, _, _ = _sharded_bytes(cache, placement.cache_shardings(cache))
    rows.append(("target KV cache", cache_bytes, f"{capacity} positions x {c.num_layers} layers x batch {batch}"))

    if head_cfg is not None:
        _, head = nnx.split(nnx.eval_shape(lambda: Eagle3Head(head_cfg, dtype=dtype, rngs=nnx.Rngs(0))))
        head_params = sum(math.prod(x.shape) for x in jax.tree.leaves(head))
        head_bytes, _, _ = _sharded_bytes(head, placement.param_shardings(head, head_cfg.head_dim))
        rows.append(("draft head", head_bytes, f"{head_params / 1e9:.2f} B params (embeddings shared)"))
        draft_capacity = draft_cache_length(capacity, tree.d_max, tree.k_max)
        dcache = jax.eval_shape(
            lambda: KVCache.create(1, batch, draft_capacity, head_cfg.num_kv_heads, head_cfg.head_dim, dtype)
        )
        dcache_bytes, _, _ = _sharded_bytes(dcache, placement.cache_shardings(dcache))
        rows.append(("draft KV cache", dcache_bytes, f"{draft_capacity} positions"))

    rows.append(("activations", verify_activation_bytes(c, head_cfg, itemsize, placement, capacity, batch, tree),
                 f"verify of {tree.tt_max} tree tokens (largest bucket)"))
    return MemoryPlan(rows=rows, mesh=mesh_shape, capacity=capacity)


def verify_activation_bytes(c, head_cfg, itemsize: int, placement, capacity: int, batch: int,
                            tree: TreeLimits) -> float:
    """Peak live activations of one verify forward over T = TT_max tokens, per device.

    One layer's working set (layers run one after another) plus the logits:
    - logits [T, V] float32, gathered for the acceptance walk, and their softmax: 2 x 4 B;
    - attention scores and probabilities [B, H/m, T, S] float32: 2 x 4 B (H/m when heads split);
    - MLP gate, up and their product [B, T, I/m]: 3 x dtype;
    - residual stream, normed input, attention output, taps [B, T, 6E]: float32;
    - draft logits over the frontier [k_max, Vd] float32 x 2 while the tree grows.
    """
    t = tree.tt_max
    m = placement.model
    heads = c.num_heads // m if c.num_heads % m == 0 else c.num_heads
    inter = c.intermediate_size // m if c.intermediate_size % m == 0 else c.intermediate_size
    logits = 2 * t * c.vocab_size * 4
    scores = 2 * batch * heads * t * capacity * 4
    mlp = 3 * batch * t * inter * itemsize
    stream = batch * t * 6 * c.hidden_size * 4
    draft = 2 * tree.k_max * (head_cfg.draft_vocab_size if head_cfg else 0) * 4
    return float(logits + scores + mlp + stream + draft)


# ------------------------------------------------------------------------------ CLI


def _target_cfg(config):
    from resps_jax.models.config import llama_config_from_hf, read_llama_config
    from resps_jax.models.loading import resolve_model_folder

    if config.get("model"):
        path = Path(str(config.model)).expanduser()
        if str(config.model) in ("smollm2", "tiny") or path.exists():
            return read_llama_config(resolve_model_folder(str(config.model))), str(config.model)
        raise UserError(f"config.model: {path} does not exist (set it with --config.model=PATH, or --config.model= "
                        "to plan from config.arch)")
    if "arch" not in config:
        raise UserError("the config names no model and no architecture: pass --config.model=PATH (an HF Llama folder)")
    return llama_config_from_hf(config.arch.to_dict(), "config.arch"), "config.arch"


def _head_cfg(config, target_cfg):
    from resps_jax.models.config import read_config_json
    from resps_jax.models.eagle3 import Eagle3Config

    folder = str(config.get("draft_model") or "")
    if folder:
        path = Path(folder).expanduser()
        if not path.is_dir():
            raise UserError(f"config.draft_model: {path} does not exist (set it with --config.draft_model=PATH, or "
                            "--config.draft_model= to plan from config.draft_arch)")
        raw, source = read_config_json(path, "an EAGLE-3 draft folder")
        return Eagle3Config.from_official(raw, str(source), target_hidden_size=target_cfg.hidden_size)
    if "draft_arch" in config:
        return Eagle3Config.from_official(config.draft_arch.to_dict(), "config.draft_arch", target_cfg.hidden_size)
    vocab = config.draft.vocab_size if "draft" in config and "vocab_size" in config.draft else None
    return Eagle3Config.for_target(target_cfg, draft_vocab_size=vocab)


def _tree_limits(config) -> TreeLimits:
    if "actions" in config:
        from resps_jax.rl.actions import config_actions

        actions = config_actions(config.actions)
    else:
        from resps_jax.decoding.tree import DEFAULT_TREE

        actions = [DEFAULT_TREE]
    return TreeLimits(max(a.verify_rows for a in actions), max(a.depth for a in actions),
                      max(a.topk for a in actions), max(a.ngram for a in actions))


def host_memory_gib() -> float:
    return os.sysconf("SC_PAGE_SIZE") * os.sysconf("SC_PHYS_PAGES") / GIB


def format_plan(name: str, plan: MemoryPlan, dtype_name: str, device_gib: float, fraction: float) -> str:
    data, model = plan.mesh
    devices = data * model
    lines = [
        f"plan: {name}, mesh {data}x{model} (data {data}, model {model}), {dtype_name}, "
        f"{device_gib:g} GiB per device, {fraction * device_gib:.1f} GiB usable ({fraction:.0%})",
        f"{'':<18}{'per device':>12}{'all devices':>14}  detail",
    ]
    for what, size, detail in plan.rows:
        lines.append(f"{what:<18}{size / GIB:>9.2f} GiB{size * devices / GIB:>10.2f} GiB  {detail}")
    lines.append(f"{'total':<18}{plan.per_device / GIB:>9.2f} GiB{plan.per_device * devices / GIB:>10.2f} GiB")
    return "\n".join(lines)


def main(argv: list[str] | None = None) -> int:
    from resps_jax.config_cli import parse_config_args
    from resps_jax.models.loading import parse_dtype
    from resps_jax.models.sharding import parse_mesh

    argv = sys.argv[1:] if argv is None else argv
    config, _ = parse_config_args(argv)
    dtype = parse_dtype(str(config.get("dtype", "float32")))
    mesh = parse_mesh(config.mesh.shape if "mesh" in config else "1x1")
    device_gib = float(config.get("device_memory_gib") or host_memory_gib())
    fraction = float(config.get("memory_fraction", 0.9))
    if device_gib <= 0 or not 0 < fraction <= 1:
        raise UserError(f"device_memory_gib ({device_gib}) must be > 0 and memory_fraction ({fraction}) in (0, 1]")
    decode = config.get("decode")
    max_length = int(decode.max_length) if decode else 2048
    batch = int(decode.batch) if decode else 1
    target_cfg, source = _target_cfg(config)
    head_cfg = _head_cfg(config, target_cfg)
    plan = plan_memory(target_cfg, head_cfg, dtype, mesh, max_length, batch, _tree_limits(config))
    name = Path(str(argv[argv.index("--config") + 1] if "--config" in argv else source)).stem
    print(format_plan(name, plan, str(config.get("dtype", "float32")), device_gib, fraction))
    usable = device_gib * fraction * GIB
    if plan.per_device > usable:
        raise UserError(
            f"{name} on {mesh[0]}x{mesh[1]} devices of {device_gib:g} GiB does not fit: "
            f"{plan.per_device / GIB:.1f} GiB per device > {usable / GIB:.1f} GiB usable; "
            "use more model-parallel devices (--config.mesh.shape=1xN) or a shorter decode.max_length"
        )
    print(f"fits: {plan.per_device / GIB:.1f} of {usable / GIB:.1f} GiB usable per device")
    return 0


if __name__ == "__main__":
    run_cli(main)
