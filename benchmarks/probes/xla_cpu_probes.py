"""Micro-probes behind docs/results.md's reading of AR speed on XLA:CPU.

Each probe times a jitted function on SmolLM2-shaped random weights (hidden 576, MLP 1536,
vocab 49152, 30 layers) and prints ms and GB/s of weights read:
  - the LM head matvec: f32 [V, E] contracted on E, f32 [E, V], bf16 weights (convert and
    native), and a fused multiply-reduce over bf16 weights;
  - a 30-layer chain of MLP-sized matvecs (the layers' pure weight-read cost);
  - a 30-layer decoder without attention/RoPE, with separate vs fused q/k/v and gate/up;
  - the same matvec chain with M = 1, 2, 4, 8, 16 rows (a tree verify's T tokens): what a
    T-token target forward costs over a one-token step, before attention;
  - attention alone over a preallocated cache (30 layers, cache written in place inside a
    fori_loop as in the decode loop) at S = 256 and 1792 and T = 1 and 4 new tokens, in
    three layouts (K as the engine stores it, K stored transposed, group heads folded into
    rows), with the cache bytes read per step as GB/s.

    python benchmarks/probes/xla_cpu_probes.py
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


def small_m_probes() -> None:
    chain_w = [(weights(E, I), weights(I, E)) for _ in range(L)]

    def chain(x, ws):
        for a, b in ws:
            x = x + 0.01 * (jnp.tanh(x @ a) @ b)
        return x

    fn = jax.jit(chain)
    nbytes = sum(a.nbytes + b.nbytes for a, b in chain_w)
    one = None
    for m in (1, 2, 4, 8, 16):
        ms = best_ms(fn, jnp.ones((m, E)), chain_w, repeats=10)
        one = one or ms
        print(f"matvec chain, {m:>2} rows{'':<26}{ms:>9.3f} ms{nbytes / ms / 1e6:>9.1f} GB/s  {ms / one:.2f}x one row")


def _attention_layer(layout: str):
    """One layer's cache write + attention; layout picks how K is stored and contracted."""

    def write(buf, new, off, axis):
        start = [jnp.int32(0)] * buf.ndim
        start[axis] = off
        return jax.lax.dynamic_update_slice(buf, new, start)

    def layer(q, k, v, ck, cv, off):  # q [1, KV, G, T, D]; k, v [1, KV, T, D]
        s = ck.shape[3] if layout == "k_transposed" else ck.shape[2]
        cv = write(cv, v, off, 2)
        if layout == "k_transposed":  # K stored [1, KV, D, S]: a plain [T, D] @ [D, S]
            ck = write(ck, k.transpose(0, 1, 3, 2), off, 3)
            scores = jnp.einsum("bkgtd,bkds->bkgts", q, ck)
        elif layout == "folded":  # K [1, KV, S, D], heads of a group folded into rows
            ck = write(ck, k, off, 2)
            rows = q.reshape(1, KV, -1, D)
            scores = jax.lax.dot_general(rows, ck, (((3,), (3,)), ((0, 1), (0, 1)))).reshape(q.shape[:4] + (s,))
        else:  # "engine": what models/llama.py does, K [1, KV, S, D]
            ck = write(ck, k, off, 2)
            scores = jnp.einsum("bkgtd,bksd->bkgts", q, ck)
        probs = jax.nn.softmax(jnp.where(jnp.arange(s) <= off, scores / 8.0, -1e30), -1)
        return jnp.einsum("bkgts,bksd->btkgd", probs, cv), ck, cv

    return layer


def attention_probes() -> None:
    g = H // KV
    for s, t in ((256, 1), (1792, 1), (1792, 4)):
        q, kv = jnp.ones((1, KV, g, t, D)), jnp.ones((1, KV, t, D))
        for layout in ("engine", "k_transposed", "folded"):
            layer = _attention_layer(layout)
            k_shape = (1, KV, D, s) if layout == "k_transposed" else (1, KV, s, D)
            caches = (tuple(jnp.zeros(k_shape) for _ in range(L)), tuple(jnp.zeros((1, KV, s, D)) for _ in range(L)))

            def steps(caches, n, layer=layer, q=q, kv=kv):
                def body(i, carry):
                    ks, vs, acc = list(carry[0]), list(carry[1]), carry[2]
                    for j in range(L):
                        out, ks[j], vs[j] = layer(q + acc, kv, kv, ks[j], vs[j], i)
                        acc = acc + 1e-9 * out.sum()
                    return tuple(ks), tuple(vs), acc

                return jax.lax.fori_loop(0, n, body, (*caches, jnp.float32(0)))[2]

            fn = jax.jit(steps)
            ms = best_ms(fn, caches, jnp.int32(20), repeats=3) / 20
            kv_bytes = 2 * L * KV * s * D * 4
            print(f"attention S={s:<5} T={t} {layout:<13}{ms:>9.3f} ms/step{kv_bytes / ms / 1e6:>8.1f} GB/s")


if __name__ == "__main__":
    print(f"jax {jax.__version__}, {jax.device_count()} {jax.default_backend()} device(s)")
    lm_head_probes()
    layer_probes()
    small_m_probes()
    attention_probes()
