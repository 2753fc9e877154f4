"""What verifying T tokens costs against decoding one: the whole target forward, side by side.

SmolLM2-135M-Instruct (f32 unless --dtype), one jitted forward over T new tokens with a
causal mask among them after a committed prefix in a 256-slot cache, plus the logits of all
T rows (what a tree verification computes), for T = 1 ... 64. Each T runs with the CPU
kernel (`--matmul kernel`) and with XLA's dot (`--matmul xla`), interleaved round by round
in one process so both see the same machine state. Prints ms per forward (best of the
rounds' medians) and each one's ratio to its own T = 1, and the compute bound: the weights
stream once (bytes / the read bandwidth measured by a jitted sum in the same run) and each
row costs 2 x params FLOPs at the FMA rate the kernel reached at the largest T.

    python benchmarks/verify_cost.py [--tokens 1,2,4,8,12,16,24,32,64] [--rounds 5] [--dtype bfloat16]
"""

from __future__ import annotations

import argparse
import json
import statistics
import time

import jax
import jax.numpy as jnp
import numpy as np
from flax import nnx

from resps_jax.models.cache import KVCache
from resps_jax.models.llama import causal_mask, to_kernel_layout
from resps_jax.models.loading import load_target
from resps_jax.runtime import setup_runtime

from ar_decode import read_bandwidth_gbs, weight_bytes_per_token  # benchmarks/ (this script's folder)


def forward_fn(model):
    graphdef, params = nnx.split(model)

    def forward(params, cache, tokens, positions):
        m = nnx.merge(graphdef, params)
        batch, t = tokens.shape
        hidden, _, cache = m(tokens, positions, cache, causal_mask(batch, t))
        return m.logits(hidden), cache

    return jax.jit(forward, donate_argnums=(1,)), params


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--tokens", default="1,2,4,8,12,16,24,32,64")
    parser.add_argument("--rounds", type=int, default=5)
    parser.add_argument("--repeats", type=int, default=10, help="forwards per round")
    parser.add_argument("--prefix", type=int, default=100, help="committed tokens before the T new ones")
    parser.add_argument("--cache", type=int, default=256)
    parser.add_argument("--dtype", default="float32", choices=["float32", "bfloat16"])
    parser.add_argument("--matmul", default="kernel,xla")
    parser.add_argument("--json-out")
    args = parser.parse_args()
    setup_runtime()
    dtype = jnp.dtype(args.dtype)
    sizes = [int(t) for t in args.tokens.split(",")]
    model = load_target("smollm2", dtype, with_tokenizer=False).model
    cfg = model.cfg
    variants = {}
    for name in args.matmul.split(","):
        variants[name] = forward_fn(to_kernel_layout(model) if name == "kernel" else model)
    weight_bytes = weight_bytes_per_token(model)  # every matrix once; the tied embedding as the LM head
    n_params = weight_bytes // dtype.itemsize

    def new_cache():
        c = KVCache.create(cfg.num_layers, 1, args.cache, cfg.num_kv_heads, cfg.head_dim, dtype)
        return c.with_lengths(jnp.full((1,), args.prefix, jnp.int32))

    caches = {name: new_cache() for name in variants}
    inputs = {}
    for t in sizes:
        tokens = jnp.asarray(np.random.default_rng(t).integers(0, cfg.vocab_size, (1, t)), jnp.int32)
        positions = jnp.asarray(args.prefix + np.arange(t)[None], jnp.int32)
        inputs[t] = (tokens, positions)
    for name, (fn, params) in variants.items():  # compile everything first
        for t in sizes:
            _, caches[name] = fn(params, caches[name], *inputs[t])
        jax.block_until_ready(caches[name])
    bandwidth = read_bandwidth_gbs()
    samples = {(name, t): [] for name in variants for t in sizes}
    for _ in range(args.rounds):
        for t in sizes:
            for name, (fn, params) in variants.items():
                times = []
                for _ in range(args.repeats):
                    start = time.perf_counter()
                    logits, caches[name] = fn(params, caches[name], *inputs[t])
                    logits.block_until_ready()
                    times.append(time.perf_counter() - start)
                samples[name, t].append(statistics.median(times))
    ms = {key: 1e3 * min(v) for key, v in samples.items()}
    stream_ms = 1e3 * weight_bytes / (bandwidth * 1e9)
    print(f"SmolLM2 {args.dtype}, cache {args.cache} slots, prefix {args.prefix}; weights {weight_bytes / 1e6:.0f} MB, "
          f"read bandwidth {bandwidth:.1f} GB/s -> {stream_ms:.1f} ms to stream them once")
    header = "| T | " + " | ".join(f"{n} ms | {n} x T=1" for n in variants) + " |"
    print(header)
    print("|" + "---|" * (1 + 2 * len(variants)))
    for t in sizes:
        cells = []
        for name in variants:
            cells += [f"{ms[name, t]:.1f}", f"{ms[name, t] / ms[name, sizes[0]]:.2f}"]
        print(f"| {t} | " + " | ".join(cells) + " |")
    if "kernel" in variants:
        t_max = sizes[-1]
        flops = 2 * n_params * t_max
        rate = flops / (ms["kernel", t_max] / 1e3) / 1e9
        print(f"kernel at T={t_max}: {rate:.0f} GFLOP/s; compute bound per T: max(stream {stream_ms:.1f} ms, "
              f"2*params*T / {rate:.0f} GFLOP/s)")
        for t in sizes:
            bound = max(stream_ms, 2 * n_params * t / (rate * 1e9) * 1e3)
            print(f"  T={t}: bound {bound:.1f} ms, kernel {ms['kernel', t]:.1f} ms ({ms['kernel', t] / bound:.2f}x the bound)")
    if args.json_out:
        with open(args.json_out, "w") as f:
            json.dump({"dtype": args.dtype, "bandwidth_gbs": bandwidth, "weight_bytes": weight_bytes,
                       "ms": {f"{n}@{t}": v for (n, t), v in ms.items()}}, f, indent=1)


if __name__ == "__main__":
    main()
