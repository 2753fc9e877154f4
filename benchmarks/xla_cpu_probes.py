"""Micro-probes behind docs/results.md's reading of AR speed on XLA:CPU.

Each probe times a jitted function on SmolLM2-shaped random weights (hidden 576, MLP 1536,
vocab 49152, 30 layers) and prints ms and GB/s of weights read:
  - the LM head matvec: f32 [V, E] contracted on E, f32 [E, V], bf16 weights (convert and
    native), and a fused multiply-reduce over bf16 weights;
  - a 30-layer chain of MLP-sized matvecs (the layers' pure weight-read cost);
  - a 30-layer decoder without attention/RoPE, with separate vs fused q/k/v and gate/up.

    python benchmarks/xla_cpu_probes.py
"""

from __future__ import annotations

import time

import jax
import jax.numpy as jnp

E, I, H, KV, D, V, L = 576, 1536, 9, 3, 64, 49152, 30


def best_ms(fn, *args, repeats: int = 20) -> float:
    fn(*args).block_until_ready()
    best = float("inf")
    for _ in range(repeats):
        start = time.perf_counter()
        fn(*args).block_until_ready()
        best = min(best, time.perf_counter() - start)
    return best * 1e3


def report(name: str, ms: float, nbytes: int, per: int = 1) -> None:
    print(f"{name:<44}{ms / per:>9.3f} ms{nbytes / ms / 1e6:>9.1f} GB/s")


def weights(*shape, seed=[0]):  # noqa: B006 - a counter, on purpose
    seed[0] += 1
    return 0.02 * jax.random.normal(jax.random.key(seed[0]), shape)


def lm_head_probes() -> None:
    x = jnp.ones((1, E))
    w_ve = weights(V, E)
    w_ev = w_ve.T.copy()
    w_bf16 = w_ev.astype(jnp.bfloat16)
    report("LM head f32 [V,E] contracted on E", best_ms(jax.jit(lambda x, w: jnp.einsum("te,ve->tv", x, w)), x, w_ve), w_ve.nbytes)
    report("LM head f32 [E,V]", best_ms(jax.jit(lambda x, w: x @ w), x, w_ev), w_ev.nbytes)
    report("LM head bf16 -> f32 convert + dot", best_ms(jax.jit(lambda x, w: x @ w.astype(jnp.float32)), x, w_bf16), w_bf16.nbytes)
    report("LM head bf16 native dot", best_ms(jax.jit(lambda x, w: x.astype(jnp.bfloat16) @ w), x, w_bf16), w_bf16.nbytes)
    fused = jax.jit(lambda x, w: jnp.sum(x[0][:, None] * w.astype(jnp.float32), 0))
    report("LM head bf16 fused multiply-reduce", best_ms(fused, x, w_bf16, repeats=2), w_bf16.nbytes)


def rms(x):
    return x * jax.lax.rsqrt(jnp.mean(x * x, -1, keepdims=True) + 1e-5)


def layer_probes() -> None:
    x = jnp.ones((1, E))
    mlp = [(weights(E, I), weights(I, E)) for _ in range(L)]

    def chain(x, ps):
        for up, down in ps:
            x = x + jnp.tanh(x @ up) @ down
        return x

    nbytes = sum(a.nbytes + b.nbytes for a, b in mlp)
    report("matvec chain 576x1536 + 1536x576, per layer", best_ms(jax.jit(chain), x, mlp), nbytes // L * L, per=L)

    separate = [
        dict(q=weights(E, H * D), k=weights(E, KV * D), v=weights(E, KV * D), o=weights(H * D, E),
             g=weights(E, I), u=weights(E, I), d=weights(I, E))
        for _ in range(L)
    ]
    fused = [dict(qkv=weights(E, (H + 2 * KV) * D), o=weights(H * D, E), gu=weights(E, 2 * I), d=weights(I, E)) for _ in range(L)]

    def run_separate(x, ps):
        for p in ps:
            h = rms(x)
            q, k, v = h @ p["q"], h @ p["k"], h @ p["v"]
            x = x + (q + jnp.tile(k + v, 3)) @ p["o"]
            h = rms(x)
            x = x + (jax.nn.silu(h @ p["g"]) * (h @ p["u"])) @ p["d"]
        return x

    def run_fused(x, ps):
        for p in ps:
            h = rms(x)
            qkv = h @ p["qkv"]
            q, kv = qkv[:, : H * D], qkv[:, H * D :]
            x = x + (q + jnp.tile(kv[:, : KV * D] + kv[:, KV * D :], 3)) @ p["o"]
            gu = rms(x) @ p["gu"]
            x = x + (jax.nn.silu(gu[:, :I]) * gu[:, I:]) @ p["d"]
        return x

    layer_bytes = sum(a.nbytes for a in separate[0].values()) * L
    report("decoder layer, separate projections", best_ms(jax.jit(run_separate), x, separate), layer_bytes, per=L)
    report("decoder layer, fused qkv and gate/up", best_ms(jax.jit(run_fused), x, fused), layer_bytes, per=L)


if __name__ == "__main__":
    print(f"jax {jax.__version__}, {jax.device_count()} {jax.default_backend()} device(s)")
    lm_head_probes()
    layer_probes()
