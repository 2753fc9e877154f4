"""Target forward cost vs. number of new tokens T, against the HBM roofline.

Measures the project's own `Llama` forward (resps_jax/models/llama.py) with random bf16
weights of Llama-3.1-8B shape, called the way the engine calls it: `nnx.split` once, then a
`jax.jit(partial(fn, graphdef), donate_argnames=("cache",))` that merges inside. Each call
is one verification-style forward: T new tokens at positions lengths..lengths+T-1 with a
[T, T] mask (causal, which is the ancestor mask of a chain-shaped tree; the cost of the
forward does not depend on which ancestor mask is given), reading a KV cache of capacity
2048 holding ~1000 committed tokens, then the LM head over all T hidden states and a greedy
argmax per token (what tree verification needs).

Printed per T: ms per forward (pipelined mean, best of several repeats), ms with a host
sync after every call, ratio to T=1, and for every row the roofline fraction
weight_bytes / copy_bandwidth / ms. The copy bandwidth is measured in the same process
with a jitted elementwise copy of a 4 GB array (bytes read + written), and a jitted
reduction (bytes read) is reported beside it.

    PYTHONPATH=. python benchmarks/gpu_step.py            # 8B shapes (GPU)
    PYTHONPATH=. python benchmarks/gpu_step.py --tiny     # CPU smoke test
"""

from __future__ import annotations

import argparse
import json
import math
import os
import re
import statistics
import sys
import time
from functools import partial

import jax
import jax.numpy as jnp
from flax import nnx

from resps_jax.models.cache import KVCache
from resps_jax.models.config import LlamaConfig, RopeConfig
from resps_jax.models.llama import Llama, causal_mask

LLAMA31_8B = LlamaConfig(
    vocab_size=128256,
    hidden_size=4096,
    intermediate_size=14336,
    num_layers=32,
    num_heads=32,
    num_kv_heads=8,
    head_dim=128,
    rms_norm_eps=1e-5,
    rope=RopeConfig(
        theta=500000.0,
        rope_type="llama3",
        factor=8.0,
        low_freq_factor=1.0,
        high_freq_factor=4.0,
        original_max_position_embeddings=8192,
    ),
    tie_word_embeddings=False,
    max_position_embeddings=131072,
)

TINY = LlamaConfig(
    vocab_size=512,
    hidden_size=64,
    intermediate_size=128,
    num_layers=4,
    num_heads=4,
    num_kv_heads=2,
    head_dim=16,
    rope=LLAMA31_8B.rope,
    tie_word_embeddings=False,
)


def random_params(cfg: LlamaConfig, dtype, seed: int = 0):
    """(graphdef, params) with random weights, built leaf by leaf without a host copy.

    The model is traced abstractly (nnx.eval_shape), then every >=2-D leaf is filled on
    the device by a small jitted normal(0, 0.02) and every 1-D leaf (norm weights) with
    ones, so the peak is the weights themselves plus one leaf.
    """
    abstract = nnx.eval_shape(lambda: Llama(cfg, dtype=dtype, rngs=nnx.Rngs(0)))
    graphdef, state = nnx.split(abstract)
    leaves, treedef = jax.tree.flatten(state)

    @partial(jax.jit, static_argnums=(1, 2))
    def normal(key, shape, dt):
        return (0.02 * jax.random.normal(key, shape, jnp.float32)).astype(dt)

    @partial(jax.jit, static_argnums=(0, 1))
    def ones(shape, dt):
        return jnp.ones(shape, dt)

    root = jax.random.key(seed)
    filled = []
    for i, leaf in enumerate(leaves):
        if len(leaf.shape) >= 2:
            filled.append(normal(jax.random.fold_in(root, i), tuple(leaf.shape), leaf.dtype))
        else:
            filled.append(ones(tuple(leaf.shape), leaf.dtype))
        jax.block_until_ready(filled[-1])
    return graphdef, jax.tree.unflatten(treedef, filled)


def _step(graphdef, params, cache: KVCache, tokens, positions, local_mask):
    """One target forward over T new tokens: greedy token per position, taps, cache."""
    model: Llama = nnx.merge(graphdef, params)
    hidden, taps, cache = model(tokens, positions, cache, local_mask)
    greedy = jnp.argmax(model.logits(hidden), axis=-1).astype(jnp.int32)  # [B, T]
    return cache, greedy, taps


def measure_bandwidth(nbytes: int, iters: int, repeats: int) -> dict:
    n = nbytes // 2
    x = jnp.ones((n,), jnp.bfloat16)
    copy = jax.jit(lambda a: a * jnp.bfloat16(1.5))
    reduce = jax.jit(lambda a: jnp.sum(a, dtype=jnp.float32))
    out = {}
    for name, fn, moved in (("copy", copy, 2 * n * 2), ("reduce", reduce, n * 2)):
        jax.block_until_ready(fn(x))
        best = math.inf
        for _ in range(repeats):
            t0 = time.perf_counter()
            for _ in range(iters):
                y = fn(x)
            jax.block_until_ready(y)
            best = min(best, (time.perf_counter() - t0) / iters)
            del y
        out[name] = moved / best / 1e9  # GB/s
    del x
    return out


def time_step(compiled, params, cache, args, warmup: int, iters: int, repeats: int, sync_iters: int):
    """(best pipelined mean s, median synced s, cache): the donated cache is threaded through."""
    for _ in range(warmup):
        cache, greedy, taps = compiled(params, cache, *args)
    jax.block_until_ready((cache, greedy, taps))
    means = []
    for _ in range(repeats):
        t0 = time.perf_counter()
        for _ in range(iters):
            cache, greedy, taps = compiled(params, cache, *args)
        jax.block_until_ready((cache, greedy, taps))
        means.append((time.perf_counter() - t0) / iters)
    synced = []
    for _ in range(sync_iters):
        t0 = time.perf_counter()
        cache, greedy, taps = compiled(params, cache, *args)
        jax.block_until_ready((cache, greedy, taps))
        synced.append(time.perf_counter() - t0)
    return min(means), statistics.median(synced), cache


def main(argv=None) -> int:
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("--tiny", action="store_true", help="tiny config, for a CPU smoke test")
    ap.add_argument("--ts", default="1,64,16,32,48,80,96,128", help="new-token counts, comma-separated")
    ap.add_argument("--capacity", type=int, default=2048)
    ap.add_argument("--committed", type=int, default=1000)
    ap.add_argument("--iters", type=int, default=50)
    ap.add_argument("--repeats", type=int, default=5)
    ap.add_argument("--bw-gb", type=float, default=4.0, help="array size (GB) for the bandwidth probe")
    ap.add_argument("--no-probe", action="store_true", help="skip the GEMV-chain probe")
    ap.add_argument("--json", default=None, help="also write the results here")
    ap.add_argument("--hlo-dir", default=None, help="write the optimized HLO of T=1 and T=64 here")
    args = ap.parse_args(argv)

    cfg = TINY if args.tiny else LLAMA31_8B
    if args.tiny:
        args.capacity, args.committed = min(args.capacity, 256), min(args.committed, 100)
        args.iters, args.repeats, args.bw_gb = min(args.iters, 5), min(args.repeats, 2), 0.064
    dtype = jnp.bfloat16
    ts = [int(t) for t in args.ts.split(",")]
    dev = jax.devices()[0]
    print(f"jax {jax.__version__}, device {dev.platform}:{dev.device_kind}", flush=True)

    bw = measure_bandwidth(int(args.bw_gb * 1e9), iters=max(args.iters // 2, 3), repeats=args.repeats)
    print(f"bandwidth: copy {bw['copy']:.0f} GB/s (read+write), reduce {bw['reduce']:.0f} GB/s (read)", flush=True)

    t0 = time.perf_counter()
    graphdef, params = random_params(cfg, dtype)
    leaves = jax.tree.leaves(params)
    weight_bytes = sum(x.size * x.dtype.itemsize for x in leaves)
    embed_bytes = cfg.vocab_size * cfg.hidden_size * jnp.dtype(dtype).itemsize
    kv_bytes = 2 * cfg.num_layers * args.capacity * cfg.num_kv_heads * cfg.head_dim * jnp.dtype(dtype).itemsize
    print(
        f"weights {weight_bytes / 1e9:.3f} GB ({len(leaves)} arrays, init {time.perf_counter() - t0:.1f}s); "
        f"embedding table {embed_bytes / 1e9:.3f} GB; KV cache (capacity {args.capacity}) {kv_bytes / 1e9:.3f} GB",
        flush=True,
    )
    roofline_s = weight_bytes / (bw["copy"] * 1e9)
    print(f"roofline (weight bytes / copy bandwidth): {roofline_s * 1e3:.3f} ms", flush=True)

    step = jax.jit(partial(_step, graphdef), donate_argnames=("cache",))
    cache = KVCache.create(cfg.num_layers, 1, args.capacity, cfg.num_kv_heads, cfg.head_dim, dtype)
    cache = cache.with_lengths(jnp.full((1,), args.committed, jnp.int32))

    results = {
        "jax": jax.__version__,
        "device": f"{dev.platform}:{dev.device_kind}",
        "config": "tiny" if args.tiny else "llama3.1-8b",
        "bandwidth_gbs": bw,
        "weight_bytes": weight_bytes,
        "embed_bytes": embed_bytes,
        "kv_cache_bytes": kv_bytes,
        "capacity": args.capacity,
        "committed": args.committed,
        "roofline_ms": roofline_s * 1e3,
        "rows": [],
    }

    def dump():
        if args.json:
            with open(args.json, "w") as f:
                json.dump(results, f, indent=1)

    dt_name = jnp.dtype(dtype).name.replace("bfloat16", "bf16").replace("float32", "f32")
    cache_type = re.escape(f"{dt_name}[1,{args.capacity},{cfg.num_kv_heads},{cfg.head_dim}]")
    key = jax.random.key(1)
    for t in ts:
        tokens = jax.random.randint(jax.random.fold_in(key, t), (1, t), 0, cfg.vocab_size, jnp.int32)
        positions = (args.committed + jnp.arange(t, dtype=jnp.int32))[None]
        mask = causal_mask(1, t)
        c0 = time.perf_counter()
        try:
            compiled = step.lower(params, cache, tokens, positions, mask).compile()
        except Exception as err:  # report and go on to the next T
            print(f"T={t}: compile failed: {err!r}", flush=True)
            continue
        compile_s = time.perf_counter() - c0
        hlo = compiled.as_text()
        # A full copy of a cache buffer per call means the donated cache is not updated in
        # place (2 x capacity x KVH x D bytes moved per layer for K and V).
        cache_copies = len(re.findall(rf"= {cache_type}\{{[^}}]*\}} copy\(", hlo))
        if args.hlo_dir and t in (1, 64):
            os.makedirs(args.hlo_dir, exist_ok=True)
            with open(os.path.join(args.hlo_dir, f"step_T{t}.hlo.txt"), "w") as f:
                f.write(hlo)
        mean_s, sync_s, cache = time_step(
            compiled, params, cache, (tokens, positions, mask),
            warmup=3, iters=args.iters, repeats=args.repeats, sync_iters=max(args.iters // 2, 3),
        )
        row = {"T": t, "ms": mean_s * 1e3, "ms_sync": sync_s * 1e3, "compile_s": compile_s,
               "pct_roofline": 100 * roofline_s / mean_s, "cache_copies": cache_copies}
        results["rows"].append(row)
        print(f"T={t:4d}: {row['ms']:.3f} ms (synced {row['ms_sync']:.3f} ms), "
              f"{row['pct_roofline']:.1f}% of roofline, compile {compile_s:.1f}s, "
              f"full cache-buffer copies in HLO: {cache_copies}", flush=True)
        dump()
        del compiled

    if not args.no_probe:
        # XLA's own GEMV rate over the same weights: every 2-D weight times a [1, in] vector
        # (embedding excluded), summed so nothing is eliminated; no attention, no norms.
        mats = [x for x in leaves if x.ndim == 2 and x.shape != (cfg.vocab_size, cfg.hidden_size)]
        probe = jax.jit(lambda ms, v: [jnp.sum((v[: m.shape[0]][None] @ m).astype(jnp.float32)) for m in ms])
        v = jnp.ones((max(m.shape[0] for m in mats),), dtype)
        jax.block_until_ready(probe(mats, v))
        best = math.inf
        for _ in range(args.repeats):
            p0 = time.perf_counter()
            for _ in range(args.iters):
                out = probe(mats, v)
            jax.block_until_ready(out)
            best = min(best, (time.perf_counter() - p0) / args.iters)
        mat_bytes = sum(m.size * m.dtype.itemsize for m in mats)
        results["gemv_probe"] = {"ms": best * 1e3, "bytes": mat_bytes, "gbs": mat_bytes / best / 1e9}
        print(f"GEMV probe (all projections + LM head, T=1, no attention): {best * 1e3:.3f} ms over "
              f"{mat_bytes / 1e9:.3f} GB = {mat_bytes / best / 1e9:.0f} GB/s", flush=True)
        dump()

    rows = results["rows"]
    base = next((r["ms"] for r in rows if r["T"] == 1), None)
    print()
    print(f"device {results['device']}, jax {jax.__version__}, config {results['config']}, "
          f"cache capacity {args.capacity} with {args.committed} committed")
    print(f"{'T':>5} {'ms/forward':>11} {'ms synced':>10} {'ratio to T=1':>13} {'% roofline':>11} "
          f"{'copy GB/s':>10} {'weight GB':>10}")
    for r in sorted(rows, key=lambda r: r["T"]):
        ratio = r["ms"] / base if base else float("nan")
        r["ratio"] = ratio
        print(f"{r['T']:>5} {r['ms']:>11.3f} {r['ms_sync']:>10.3f} {ratio:>13.3f} {r['pct_roofline']:>10.1f}% "
              f"{bw['copy']:>10.0f} {weight_bytes / 1e9:>10.3f}")
    dump()
    return 0


if __name__ == "__main__":
    sys.exit(main())
