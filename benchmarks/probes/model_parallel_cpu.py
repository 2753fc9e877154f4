"""Does splitting the model over this machine's cores as JAX devices beat one device?

One XLA:CPU device already spreads each dot over the cores (Eigen's thread pool), but a
tree verify's 4-row products cost about 2x a 1-row one, as if they did not. This probe
gives each core its own device (`--xla_force_host_platform_device_count`), shards a
30-layer chain of SmolLM2's MLP matrices Megatron-style over a 1 x cores mesh (gate/up by
column, down by row, one all-reduce per layer), and times it beside the same chain on one
device, interleaved, at 1, 4 and 8 rows. Pass `--single-thread` to turn off Eigen's
threads, so each device computes on one core.

    python benchmarks/probes/model_parallel_cpu.py [--single-thread]
"""

from __future__ import annotations

import argparse
import os
import time


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--single-thread", action="store_true", help="--xla_cpu_multi_thread_eigen=false")
    parser.add_argument("--rounds", type=int, default=5)
    args = parser.parse_args()
    cores = os.cpu_count() or 1
    flags = [f"--xla_force_host_platform_device_count={cores}"]
    if args.single_thread:
        flags.append("--xla_cpu_multi_thread_eigen=false")
    os.environ["XLA_FLAGS"] = " ".join([os.environ.get("XLA_FLAGS", ""), *flags])

    import jax  # after XLA_FLAGS: the device count is read once, at start-up
    import jax.numpy as jnp
    import numpy as np
    from jax.sharding import Mesh, NamedSharding
    from jax.sharding import PartitionSpec as P

    layers, hidden, mlp, iterations = 30, 576, 1536, 20
    rng = np.random.default_rng(0)

    def weight(*shape):
        return jnp.asarray(rng.normal(size=shape).astype(np.float32) * 0.02)

    gates = [weight(hidden, mlp) for _ in range(layers)]  # [E, I] each
    ups = [weight(hidden, mlp) for _ in range(layers)]  # [E, I]
    downs = [weight(mlp, hidden) for _ in range(layers)]  # [I, E]

    @jax.jit
    def chain(ws, x):  # x: [M, E]
        def body(_, x):
            for g, u, d in zip(*ws):
                x = x + (jax.nn.silu(x @ g) * (x @ u)) @ d * 0.1
            return x
        return jax.lax.fori_loop(0, iterations, body, x)

    devices = jax.devices()
    mesh = Mesh(np.array(devices).reshape(1, len(devices)), ("data", "model"))
    one = NamedSharding(Mesh(np.array(devices[:1]).reshape(1, 1), ("data", "model")), P())
    by_column, by_row, replicated = (NamedSharding(mesh, P(None, "model")), NamedSharding(mesh, P("model", None)),
                                     NamedSharding(mesh, P()))
    placed = {
        "1 device": (jax.device_put((gates, ups, downs), one), one),
        f"{len(devices)} devices": (([jax.device_put(w, by_column) for w in gates],
                                     [jax.device_put(w, by_column) for w in ups],
                                     [jax.device_put(w, by_row) for w in downs]), replicated),
    }
    print(f"{len(devices)} CPU devices, eigen threads {'off' if args.single_thread else 'on'}; "
          f"ms per 30-layer MLP chain (best of {args.rounds}, interleaved)")
    for rows in (1, 4, 8):
        best = {name: float("inf") for name in placed}
        inputs = {name: jax.device_put(jnp.ones((rows, hidden), jnp.float32), s) for name, (_, s) in placed.items()}
        for name, (ws, _) in placed.items():
            chain(ws, inputs[name]).block_until_ready()  # compile
        for _ in range(args.rounds):
            for name, (ws, _) in placed.items():
                start = time.perf_counter()
                chain(ws, inputs[name]).block_until_ready()
                best[name] = min(best[name], (time.perf_counter() - start) / iterations * 1e3)
        print(f"  {rows} rows: " + ", ".join(f"{name} {ms:.2f}" for name, ms in best.items()))


if __name__ == "__main__":
    main()
