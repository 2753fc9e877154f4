"""Worker for tests/test_sharding.py: decode a tiny model on several meshes, print JSON.

Run in its own process with fake CPU devices (XLA_FLAGS=--xla_force_host_platform_device_count=8),
or as one of several `jax.distributed` processes (--distributed COORDINATOR PROCESSES ID).
The model is seeded and written as a multi-file safetensors checkpoint, then loaded
straight into each mesh's shards; outputs for every mode are printed per mesh.
"""

from __future__ import annotations

import json
from pathlib import Path

import jax
import numpy as np

MESHES = {"1x1": (1, 1), "1x8": (1, 8), "2x4": (2, 4), "8x1": (8, 1), "2x2": (2, 2), "1x4": (1, 4)}
PROMPTS = [[5, 17, 99, 3, 250, 41, 7], [9, 8, 7, 6], [200, 100, 50, 25, 12, 6, 3, 1, 0, 44], [1]]
TREE = (8, 3, 2)


def tiny_sharded_config() -> dict:
    """An HF config whose heads, KV heads, MLP and vocabulary all split over 2, 4 or 8 devices,
    except that 4 KV heads cannot split 8 ways (K/V replicated on 1x8: the mixed case)."""
    from resps_jax.models.tiny import tiny_llama_config

    cfg = tiny_llama_config()
    cfg.update(vocab_size=256, num_attention_heads=8, num_key_value_heads=4, head_dim=8, eos_token_id=255)
    return cfg


def write_checkpoint(folder: Path) -> Path:
    from resps_jax.models.config import llama_config_from_hf
    from resps_jax.models.loading import llama_tensors_hf, save_hf_folder
    from resps_jax.models.tiny import random_pair

    hf = tiny_sharded_config()
    target, head = random_pair(llama_config_from_hf(hf), seed=5, scale=6.0)
    if not (folder / "config.json").is_file():
        save_hf_folder(llama_tensors_hf(target), hf, folder, max_shard_bytes=40_000)  # ~20 files
    return folder


def run(folder: Path, meshes: list[str], prompts: list[list[int]]) -> dict:
    from flax import nnx

    from resps_jax.decoding.engine import Engine, GenerationConfig, SpeculativeEngine
    from resps_jax.models import loading
    from resps_jax.models.config import llama_config_from_hf
    from resps_jax.models.sharding import Placement, make_mesh
    from resps_jax.models.tiny import random_pair

    readers: list = []
    original_init = loading.SafetensorsReader.__init__

    def watched_init(self, *args, **kwargs):
        original_init(self, *args, **kwargs)
        readers.append(self)

    loading.SafetensorsReader.__init__ = watched_init
    _, head = random_pair(llama_config_from_hf(tiny_sharded_config()), seed=5, scale=6.0)
    greedy = GenerationConfig(max_new_tokens=20)
    sampled = GenerationConfig(max_new_tokens=20, temperature=0.9, seed=7)
    results = {}
    for name in meshes:
        placement = Placement(make_mesh(MESHES[name]))
        readers.clear()
        target = loading.load_hf_llama(folder, placement=placement)
        engine = Engine(target, placement)
        spec = SpeculativeEngine(engine, head, [TREE])
        eos = (255,)
        placed = nnx.to_pure_dict(engine.params)
        specs = {
            "q_proj": str(placed["layers"][0]["self_attn"]["q_proj"]["weight"].sharding.spec),
            "k_proj": str(placed["layers"][0]["self_attn"]["k_proj"]["weight"].sharding.spec),
            "embed": str(placed["embed_tokens"]["weight"].sharding.spec),
            "cache_batch8": str(engine.cache_shardings(8).keys[0].spec),
        }
        full = {n: int(np.prod(s)) for n, s in _stored_shapes(folder).items()}
        results[name] = {
            "ar": [engine.generate(p, greedy, eos).token_ids for p in prompts],
            "ar_batch": [r.token_ids for r in engine.generate_batch(prompts * 2, greedy, eos)],
            "ar_sampled": [engine.generate(p, sampled, eos).token_ids for p in prompts],
            "static": [spec.generate(p, greedy, eos).token_ids for p in prompts],
            "static_sampled": [spec.generate(p, sampled, eos).token_ids for p in prompts],
            "specs": specs,
            # per tensor: the largest block read, and the tensor's full size (elements)
            "reads": {
                n: [max(int(np.prod(s)) for t, s in readers[0].reads if t == n), full[n]] for n in full
            },
            "devices": len(placement.mesh.devices.flat),
            "orbax": orbax_roundtrip(folder / f"orbax-{name}", nnx.to_pure_dict(spec.params_h)),
        }
    return results


def orbax_roundtrip(folder: Path, params: dict) -> dict:
    """Save the sharded head with Orbax (every process writes its shards) and restore it into
    an abstract target carrying the shardings: values and layouts must come back unchanged."""
    import orbax.checkpoint as ocp

    from resps_jax.models.sharding import to_host

    manager = ocp.CheckpointManager(folder.resolve(), options=ocp.CheckpointManagerOptions(create=True))
    manager.save(1, args=ocp.args.StandardSave(params))
    manager.wait_until_finished()
    abstract = jax.tree.map(ocp.utils.to_shape_dtype_struct, params)
    restored = manager.restore(1, args=ocp.args.StandardRestore(abstract))
    manager.close()
    pairs = list(zip(jax.tree.leaves(params), jax.tree.leaves(restored)))
    return {
        "equal": all(np.array_equal(to_host(a), to_host(b)) for a, b in pairs),
        "same_sharding": all(a.sharding == b.sharding for a, b in pairs),
        "split_leaves": sum(not a.sharding.is_fully_replicated for a, _ in pairs),
    }


def _stored_shapes(folder: Path) -> dict[str, tuple[int, ...]]:
    from safetensors import safe_open

    shapes = {}
    for file in sorted(folder.glob("*.safetensors")):
        with safe_open(str(file), framework="numpy") as handle:
            for name in handle.keys():
                shapes[name] = tuple(handle.get_slice(name).get_shape())
    return shapes


def main() -> None:
    import argparse

    parser = argparse.ArgumentParser()
    parser.add_argument("folder", type=Path, help="where the seeded checkpoint is (or will be) written")
    parser.add_argument("meshes", help="comma-separated mesh names, e.g. 1x1,2x4")
    parser.add_argument("--prompts", type=int, default=len(PROMPTS))
    parser.add_argument("--distributed", nargs=3, metavar=("COORDINATOR", "PROCESSES", "ID"))
    args = parser.parse_args()
    if args.distributed:  # one process of a jax.distributed run
        from resps_jax.distributed import initialize

        coordinator, processes, process_id = args.distributed
        initialize(coordinator, int(processes), int(process_id))
    if jax.process_index() == 0:
        write_checkpoint(args.folder)
    if jax.process_count() > 1:
        from jax.experimental import multihost_utils

        multihost_utils.sync_global_devices("checkpoint written")
    out = run(args.folder, args.meshes.split(","), PROMPTS[: args.prompts])
    out["process"] = [jax.process_index(), jax.process_count(), jax.device_count(), jax.local_device_count()]
    print("RESULT " + json.dumps(out), flush=True)


if __name__ == "__main__":
    main()
