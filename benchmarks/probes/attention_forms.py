"""Decode attention alone, by formulation: ms per token over a 30-layer SmolLM2-shaped cache.

SmolLM2's attention shapes (3 KV heads, 3 query heads per KV head, head_dim 64, float32),
one new token, the cache read (not written) in a `fori_loop` of 30 layers, best of 5:

  dot     the engine's form (models/llama.py): K the left operand of the score dot, V the
          right one of P V, both over the stored [B, KVH, S, D] layout
  mulred  broadcast multiply + reduce (a loop fusion instead of a dot)
  gemv    one matrix-vector product per query row of the group
  flat    batch dims folded, vmapped [S, D] @ [D, Q]
  kernel  the package's CPU attention kernel (one pass over K and V, batch-invariant)

Each form is checked against `dot` first. Issue 11's goal is <= 5 ms per token at 1792
slots; XLA_FLAGS (e.g. --xla_cpu_experimental_onednn_fusion_type=dot) apply as set.

    python benchmarks/probes/attention_forms.py [dot mulred gemv flat]
"""
from __future__ import annotations

import os
import sys
import time

import jax
import jax.numpy as jnp
import numpy as np

L, KV, G, D = 30, 3, 3, 64  # layers, KV heads, query heads per KV head, head_dim (SmolLM2)


def dot_form(ck: jax.Array, cv: jax.Array, rows: jax.Array) -> jax.Array:
    """ck, cv [B, KVH, S, D], rows [B, KVH, Q, D] -> [B, KVH, Q, D]"""
    s = jnp.einsum("bksd,bkqd->bksq", ck, rows)
    e = jnp.exp(s - s.max(axis=2, keepdims=True))
    return jnp.einsum("bksq,bksd->bkqd", e, cv) / e.sum(axis=2)[..., None]


def mulred_form(ck: jax.Array, cv: jax.Array, rows: jax.Array) -> jax.Array:
    s = (ck[:, :, :, None, :] * rows[:, :, None, :, :]).sum(-1)  # [B,K,S,Q]
    e = jnp.exp(s - s.max(axis=2, keepdims=True))
    return (e[..., None] * cv[:, :, :, None, :]).sum(2) / e.sum(axis=2)[..., None]  # [B,K,Q,D]


def gemv_form(ck: jax.Array, cv: jax.Array, rows: jax.Array) -> jax.Array:  # one matvec per query row
    outs = []
    for g in range(rows.shape[2]):
        s = jnp.einsum("bksd,bkd->bks", ck, rows[:, :, g])
        e = jnp.exp(s - s.max(axis=2, keepdims=True))
        outs.append(jnp.einsum("bks,bksd->bkd", e, cv) / e.sum(axis=2)[..., None])
    return jnp.stack(outs, 2)


def flat_form(ck: jax.Array, cv: jax.Array, rows: jax.Array) -> jax.Array:  # per (b, k) an [S, D] matrix
    b, k, s_, d = ck.shape
    f = lambda K, V, R: jax.nn.softmax(K @ R.T, axis=0).T @ V  # [Q,D]
    return jax.vmap(f)(ck.reshape(b * k, s_, d), cv.reshape(b * k, s_, d), rows.reshape(b * k, -1, d)).reshape(b, k, -1, d)


def kernel_form(ck: jax.Array, cv: jax.Array, rows: jax.Array) -> jax.Array:
    """The package's CPU attention kernel (kernels/cpu/attention.cc), every slot visible.

    Its one new token's own key is given as a zero key/value with its mask off, so the sum
    is over the S cache slots only, as in the other forms.
    """
    from resps_jax import kernels

    b, k, s_, d = ck.shape
    new = jnp.zeros((b, k, 1, d), ck.dtype)
    seen = jnp.ones((b, 1, s_), bool)
    return kernels.attention(rows, ck, cv, new, new, seen, jnp.zeros((b, 1, 1), bool), 1.0)


FORMS = {"dot": dot_form, "mulred": mulred_form, "gemv": gemv_form, "flat": flat_form, "kernel": kernel_form}


def run(form: str, S: int, n: int = 30) -> None:
    fn = FORMS[form]
    ks = tuple(jnp.asarray(np.random.default_rng(i).standard_normal((1, KV, S, D), np.float32)) for i in range(L))
    vs = tuple(jnp.asarray(np.random.default_rng(100 + i).standard_normal((1, KV, S, D), np.float32)) for i in range(L))
    rows = jnp.ones((1, KV, G, D), jnp.float32) * 0.01

    @jax.jit
    def steps(ks, vs, rows):
        def body(i, acc):
            for j in range(L):
                out = fn(ks[j], vs[j], rows + acc)
                acc = acc + 1e-9 * out.sum()
            return acc
        return jax.lax.fori_loop(0, n, body, jnp.float32(0))
    ref = dot_form(ks[0], vs[0], rows)
    np.testing.assert_allclose(np.asarray(fn(ks[0], vs[0], rows)), np.asarray(ref), rtol=2e-4, atol=2e-5)
    steps(ks, vs, rows).block_until_ready()
    best = 1e9
    for _ in range(5):
        start = time.perf_counter()
        steps(ks, vs, rows).block_until_ready()
        best = min(best, time.perf_counter() - start)
    ms = best / n * 1e3
    gb = 2 * L * KV * S * D * 4 / 1e9
    print(f"{os.environ.get('XLA_FLAGS','-')[:40]:<40} {form:<7} S={S:<5} {ms:7.3f} ms/step {gb / ms * 1e3:6.1f} GB/s", flush=True)


if __name__ == "__main__":
    for S in (256, 1792):
        for form in sys.argv[1:] or FORMS:
            run(form, S)
