"""The Llama target model as Flax NNX modules.

One forward serves prefill, autoregressive decode and tree verification: it takes the new
tokens with explicit positions and an explicit [T, T] mask among them, reads the committed
cache prefix, and returns the final hidden states plus the three residual streams EAGLE-3
taps (the inputs of decoder layers 2, L//2 and L-3). Weights are stored [in, out] so every
projection is a plain `x @ w` with no per-call transpose. Layers are a Python list that
unrolls under jit: on XLA:CPU that measured faster than a scan over stacked layers.
"""

from __future__ import annotations

import math

import jax
import jax.numpy as jnp
from flax import nnx

from resps_jax import kernels
from resps_jax.errors import UserError
from resps_jax.models.cache import KVCache, after, attention_mask, split_mask, write_rows
from resps_jax.models.config import LlamaConfig, RopeConfig


def rope_inv_freq(rope: RopeConfig, head_dim: int) -> jax.Array:
    """Inverse frequencies [D/2] for default, linear and Llama-3 scaled RoPE (as HF)."""
    inv = 1.0 / (rope.theta ** (jnp.arange(0, head_dim, 2, dtype=jnp.float32) / head_dim))
    if rope.rope_type == "linear":
        return inv / rope.factor
    if rope.rope_type == "llama3":
        old_len = rope.original_max_position_embeddings
        low_wavelen = old_len / rope.low_freq_factor
        high_wavelen = old_len / rope.high_freq_factor
        wavelen = 2 * math.pi / inv
        scaled = jnp.where(wavelen > low_wavelen, inv / rope.factor, inv)
        smooth = (old_len / wavelen - rope.low_freq_factor) / (
            rope.high_freq_factor - rope.low_freq_factor
        )
        smoothed = (1 - smooth) * scaled / rope.factor + smooth * scaled
        medium = (wavelen >= high_wavelen) & (wavelen <= low_wavelen)
        return jnp.where(medium, smoothed, scaled)
    return inv


def rope_tables(positions: jax.Array, inv_freq: jax.Array) -> tuple[jax.Array, jax.Array]:
    """cos, sin [B, T, D] for positions [B, T]; computed once per forward, shared by all layers."""
    freqs = positions.astype(jnp.float32)[..., None] * inv_freq  # [B, T, D/2]
    angles = jnp.concatenate([freqs, freqs], -1)
    return jnp.cos(angles), jnp.sin(angles)


def apply_rope(x: jax.Array, cos: jax.Array, sin: jax.Array) -> jax.Array:
    """x [B, N, T, D] rotated by cos/sin [B, T, D] (rotate-half convention, as HF)."""
    half = x.shape[-1] // 2
    rotated = jnp.concatenate([-x[..., half:], x[..., :half]], -1)
    cos, sin = cos[:, None], sin[:, None]  # [B, 1, T, D]
    return (x.astype(jnp.float32) * cos + rotated.astype(jnp.float32) * sin).astype(x.dtype)


def rms_norm(x: jax.Array, weight: jax.Array, eps: float) -> jax.Array:
    x32 = x.astype(jnp.float32)
    normed = x32 * jax.lax.rsqrt(jnp.mean(x32 * x32, axis=-1, keepdims=True) + eps)
    return (weight.astype(jnp.float32) * normed).astype(x.dtype)


def _normal(rngs: nnx.Rngs, shape: tuple[int, ...], dtype, std: float = 0.02) -> nnx.Param:
    return nnx.Param((std * jax.random.normal(rngs.params(), shape, jnp.float32)).astype(dtype))


class Linear(nnx.Module):
    """y = x @ weight (+ bias); weight stored [in, out], or packed for the CPU kernel.

    `kernel_out` is static: None for XLA's dot over [in, out]; `out` once an engine on one
    CPU device has packed the weight (`to_kernel_layout`). Training and checkpoints keep
    [in, out].
    """

    def __init__(self, d_in: int, d_out: int, *, bias: bool, dtype, rngs: nnx.Rngs):
        self.weight = _normal(rngs, (d_in, d_out), dtype)
        self.bias = nnx.Param(jnp.zeros((d_out,), dtype)) if bias else None
        self.kernel_out: int | None = None

    def __call__(self, x: jax.Array, out_dtype=None) -> jax.Array:
        y = kernels.project(x, self.weight[...], self.kernel_out, out_dtype)
        return y if self.bias is None else y + self.bias[...].astype(y.dtype)


class RMSNorm(nnx.Module):
    def __init__(self, dim: int, eps: float, dtype):
        self.weight = nnx.Param(jnp.ones((dim,), dtype))
        self.eps = eps
        self.kernel = False  # static: the row-order-fixed CPU kernel (to_kernel_layout)

    def __call__(self, x: jax.Array) -> jax.Array:
        if self.kernel:
            return kernels.rms_norm(x, self.weight[...], self.eps)
        return rms_norm(x, self.weight[...], self.eps)


class Embedding(nnx.Module):
    def __init__(self, vocab: int, dim: int, *, dtype, rngs: nnx.Rngs):
        self.weight = _normal(rngs, (vocab, dim), dtype)

    def __call__(self, tokens: jax.Array) -> jax.Array:
        return jnp.take(self.weight[...], tokens, axis=0)


class Attention(nnx.Module):
    """Grouped-query attention over the cache prefix plus the new tokens.

    Written so that a decode step moves no cache-sized buffer on XLA:CPU (measured: the
    previous form transposed and copied every layer's K and V each step, 17 ms per token
    at 1792 slots). Three rules, each checked by tests/test_attention_hlo.py:
      - K is the left operand of the score dot ([S, D] contracted on D) and V the right one
        of P V ([S, D] contracted on S): the cache's [B, KVH, S, D] is then already the
        operand layout XLA's canonical dot wants. (Q K^T with K on the right transposed K
        to [D, S]; P V with its output ordered [B, T, KVH, G, D] was computed as V^T P^T,
        which transposed V.)
      - the dots read the cache buffers as this forward received them, not the result of
        writing the new K/V: XLA reshapes a dot operand to one batch dimension, and a
        reshape of the write's result fused with the write itself, duplicating it and the
        buffer. The new tokens' scores come from their own K/V, and one softmax spans both.
      - the write happens after the reads, by a data edge (`after`), so it is in place.
    Grouped queries are a reshape of Q to [B, KVH, G*T, D]; K/V are never repeated.
    """

    def __init__(
        self, d_in: int, d_out: int, heads: int, kv_heads: int, head_dim: int, *, bias: bool, dtype, rngs: nnx.Rngs
    ):
        h, d, kv = heads, head_dim, kv_heads
        self.q_proj = Linear(d_in, h * d, bias=bias, dtype=dtype, rngs=rngs)
        self.k_proj = Linear(d_in, kv * d, bias=bias, dtype=dtype, rngs=rngs)
        self.v_proj = Linear(d_in, kv * d, bias=bias, dtype=dtype, rngs=rngs)
        self.o_proj = Linear(h * d, d_out, bias=bias, dtype=dtype, rngs=rngs)
        self.num_heads, self.num_kv_heads, self.head_dim = h, kv, d
        self.kernel_attention = False  # static: the CPU attention kernel (to_kernel_layout)

    def __call__(
        self,
        x: jax.Array,  # [B, T, E]
        rope: tuple[jax.Array, jax.Array],  # cos, sin [B, T, D]
        cache_k: jax.Array,  # [B, KVH, S, D]
        cache_v: jax.Array,  # [B, KVH, S, D]
        lengths: jax.Array,  # [B]
        mask: jax.Array,  # [B, T, S] bool, over the cache with the new tokens at lengths..lengths+T
    ) -> tuple[jax.Array, jax.Array, jax.Array]:
        batch, t, _ = x.shape
        kvh, d = self.num_kv_heads, self.head_dim
        group = self.num_heads // kvh
        dtype = cache_v.dtype
        q = self.q_proj(x).reshape(batch, t, kvh * group, d).transpose(0, 2, 1, 3)  # [B, H, T, D]
        k = self.k_proj(x).reshape(batch, t, kvh, d).transpose(0, 2, 1, 3)  # [B, KVH, T, D]
        v = self.v_proj(x).reshape(batch, t, kvh, d).transpose(0, 2, 1, 3).astype(dtype)
        k = apply_rope(k, *rope).astype(cache_k.dtype)
        rows = apply_rope(q, *rope).reshape(batch, kvh, group * t, d)  # [B, KVH, Q=G*T, D]

        seen_cache, seen_new = split_mask(mask, lengths, t)  # [B, T, S], [B, T, T]
        if self.kernel_attention:  # one pass over K/V, batch-invariant (kernels/cpu/attention.cc)
            out = kernels.attention(rows, cache_k, cache_v, k, v, seen_cache, seen_new, 1 / math.sqrt(d))
            out = out.reshape(batch, kvh, group, t, d).astype(dtype).transpose(0, 3, 1, 2, 4)  # [B, T, KVH, G, D]
        else:
            out = self._attend_xla(rows, k, v, cache_k, cache_v, seen_cache, seen_new)
        k, v = after((k, v), out)  # the reads above come first: the writes below are in place
        cache_k = write_rows(cache_k, k, lengths, axis=1)
        cache_v = write_rows(cache_v, v, lengths, axis=1)
        return self.o_proj(out.reshape(batch, t, kvh * group * d)), cache_k, cache_v

    def _attend_xla(self, rows, k, v, cache_k, cache_v, seen_cache, seen_new) -> jax.Array:
        """XLA's dots: rows [B, KVH, G*T, D], new k/v [B, KVH, T, D] -> out [B, T, KVH, G, D]."""
        batch, kvh, _, d = rows.shape
        t = k.shape[2]
        group = self.num_heads // kvh
        capacity = cache_k.shape[2]
        dtype = cache_v.dtype
        # scores with the key axis before the query rows: [B, KVH, S, Q] and [B, KVH, T, Q]
        s_cache = jnp.einsum("bksd,bkqd->bksq", cache_k, rows, preferred_element_type=jnp.float32)
        s_new = jnp.einsum("bkjd,bkqd->bkjq", k, rows, preferred_element_type=jnp.float32)
        floor = jnp.finfo(jnp.float32).min
        s_cache = jnp.where(  # [B, KVH, S, G, T]
            seen_cache.transpose(0, 2, 1)[:, None, :, None, :],
            s_cache.reshape(batch, kvh, capacity, group, t) / math.sqrt(d), floor,
        )
        s_new = jnp.where(  # [B, KVH, T, G, T]
            seen_new.transpose(0, 2, 1)[:, None, :, None, :], s_new.reshape(batch, kvh, t, group, t) / math.sqrt(d), floor
        )
        # one softmax over the cache slots and the new tokens together
        top = jnp.maximum(s_cache.max(axis=2, keepdims=True), s_new.max(axis=2, keepdims=True))
        e_cache, e_new = jnp.exp(s_cache - top), jnp.exp(s_new - top)
        total = e_cache.sum(axis=2) + e_new.sum(axis=2)  # [B, KVH, G, T]
        out = jnp.einsum(
            "bksq,bksd->bkqd", e_cache.reshape(batch, kvh, capacity, group * t).astype(dtype), cache_v,
            preferred_element_type=jnp.float32,
        ) + jnp.einsum(
            "bkjq,bkjd->bkqd", e_new.reshape(batch, kvh, t, group * t).astype(dtype), v,
            preferred_element_type=jnp.float32,
        )  # [B, KVH, Q, D]
        out = (out.reshape(batch, kvh, group, t, d) / total[..., None]).astype(dtype)
        return out.transpose(0, 3, 1, 2, 4)  # [B, T, KVH, G, D]


class MLP(nnx.Module):
    def __init__(self, e: int, i: int, *, dtype, rngs: nnx.Rngs):
        self.gate_proj = Linear(e, i, bias=False, dtype=dtype, rngs=rngs)
        self.up_proj = Linear(e, i, bias=False, dtype=dtype, rngs=rngs)
        self.down_proj = Linear(i, e, bias=False, dtype=dtype, rngs=rngs)

    def __call__(self, x: jax.Array) -> jax.Array:
        return self.down_proj(jax.nn.silu(self.gate_proj(x)) * self.up_proj(x))


class DecoderLayer(nnx.Module):
    def __init__(self, cfg: LlamaConfig, *, dtype, rngs: nnx.Rngs):
        self.input_layernorm = RMSNorm(cfg.hidden_size, cfg.rms_norm_eps, dtype)
        self.self_attn = Attention(
            cfg.hidden_size, cfg.hidden_size, cfg.num_heads, cfg.num_kv_heads, cfg.head_dim,
            bias=cfg.attention_bias, dtype=dtype, rngs=rngs,
        )
        self.post_attention_layernorm = RMSNorm(cfg.hidden_size, cfg.rms_norm_eps, dtype)
        self.mlp = MLP(cfg.hidden_size, cfg.intermediate_size, dtype=dtype, rngs=rngs)

    def __call__(self, x, rope, cache_k, cache_v, lengths, mask):
        attn, cache_k, cache_v = self.self_attn(
            self.input_layernorm(x), rope, cache_k, cache_v, lengths, mask
        )
        x = x + attn
        x = x + self.mlp(self.post_attention_layernorm(x))
        return x, cache_k, cache_v


class Llama(nnx.Module):
    """Llama decoder: embeddings, L layers, final norm, tied or untied LM head."""

    def __init__(self, cfg: LlamaConfig, *, dtype=jnp.float32, rngs: nnx.Rngs):
        self.cfg = cfg
        self.embed_tokens = Embedding(cfg.vocab_size, cfg.hidden_size, dtype=dtype, rngs=rngs)
        self.layers = nnx.List([DecoderLayer(cfg, dtype=dtype, rngs=rngs) for _ in range(cfg.num_layers)])
        self.norm = RMSNorm(cfg.hidden_size, cfg.rms_norm_eps, dtype)
        self.lm_head = (
            None
            if cfg.tie_word_embeddings
            else Linear(cfg.hidden_size, cfg.vocab_size, bias=False, dtype=dtype, rngs=rngs)
        )
        self.kernel_logits = False  # static: the tied head on the CPU kernel (lm_head_panels)

    def __call__(
        self,
        tokens: jax.Array,  # [B, T] int32
        positions: jax.Array,  # [B, T] int32
        cache: KVCache,
        local_mask: jax.Array,  # [B, T, T] bool, visibility among the new tokens
    ) -> tuple[jax.Array, jax.Array, KVCache]:
        """Returns final-normed hidden [B, T, E], taps [B, T, 3E] (low, mid, high), cache.

        The cache comes back with the new keys/values written at `cache.lengths`; its
        lengths are unchanged (the caller commits).
        """
        rope = rope_tables(positions, rope_inv_freq(self.cfg.rope, self.cfg.head_dim))
        mask = attention_mask(cache.lengths, local_mask, cache.capacity)
        x = self.embed_tokens(tokens)
        taps: list[jax.Array] = []
        keys, values = list(cache.keys), list(cache.values)
        tap_layers = self.cfg.tap_layers
        for i, layer in enumerate(self.layers):
            if i in tap_layers:
                taps.extend([x] * tap_layers.count(i))
            x, keys[i], values[i] = layer(x, rope, keys[i], values[i], cache.lengths, mask)
        new_cache = KVCache(keys=keys, values=values, lengths=cache.lengths)
        return self.norm(x), jnp.concatenate(taps, axis=-1), new_cache

    def logits(self, hidden: jax.Array) -> jax.Array:
        """[..., E] final-normed hidden -> [..., V] float32 logits."""
        if self.lm_head is None:
            if self.kernel_logits:  # the embedding packed as panels of the [E, V] head
                return kernels.matmul(hidden, self.lm_head_panels[...], self.cfg.vocab_size, jnp.float32)
            w = self.embed_tokens.weight[...]
            return jnp.einsum("...e,ve->...v", hidden, w, preferred_element_type=jnp.float32)
        return self.lm_head(hidden, out_dtype=jnp.float32)


def to_kernel_layout(module: nnx.Module, weight_dtype=None) -> nnx.Module:
    """A copy of `module` (a target or a head) whose products run on the CPU kernel.

    Every Linear's [in, out] weight is packed once into the kernel's panels; a tied LM head
    gets a packed copy of the embedding (the lookup keeps the [V, E] table); attention and
    RMSNorm run on their kernels. Together they make the forward batch-invariant: a row's
    logits do not depend on how many rows share the forward. The original
    module is untouched: training and checkpoints keep [in, out].

    `weight_dtype` (e.g. bfloat16) stores the packed Linear weights in that type while
    activations keep theirs: the kernel widens each weight exactly and accumulates in f32, so
    a step reads fewer bytes. Only the draft head takes it (its outputs are proposals the
    target verifies, so output stays lossless whatever the head's precision).
    """
    module = nnx.clone(module)
    for _, sub in nnx.iter_modules(module):
        if isinstance(sub, Linear) and sub.kernel_out is None:
            w = jnp.asarray(sub.weight[...], weight_dtype)  # [in, out]
            sub.weight = nnx.Param(kernels.pack_weight(w))  # [out/32, in, 32]
            sub.kernel_out = int(w.shape[1])
        elif isinstance(sub, Attention):
            sub.kernel_attention = True
        elif isinstance(sub, RMSNorm):
            sub.kernel = True
        if isinstance(sub, Llama) and sub.lm_head is None and not sub.kernel_logits:
            sub.lm_head_panels = nnx.Param(kernels.pack_rows(jnp.asarray(sub.embed_tokens.weight[...])))
            sub.kernel_logits = True
    return module


MATMUL_BACKENDS = ("kernel", "xla")


def resolve_matmul(requested: str | None, single_cpu_device: bool) -> str:
    """'kernel' or 'xla': the CPU kernel by default on a single CPU device, XLA's dot elsewhere.

    Meshes and accelerators keep XLA's dot (its sharding propagation and the GPU's own
    kernels); asking for the kernel there is an error, not a silent fallback.
    """
    if requested in (None, "", "auto"):
        return "kernel" if single_cpu_device and kernels.available() else "xla"
    if requested not in MATMUL_BACKENDS:
        raise UserError(f"--matmul {requested!r}: expected one of {', '.join(MATMUL_BACKENDS)}")
    if requested == "kernel":
        if not single_cpu_device:
            raise UserError("--matmul kernel runs on a single CPU device; meshes and accelerators use --matmul xla")
        if not kernels.available():
            raise UserError("the CPU kernels are not built in this install (run `pip install -e .` with a C++ compiler)")
    return requested


def causal_mask(batch: int, t: int) -> jax.Array:
    return jnp.broadcast_to(jnp.tril(jnp.ones((t, t), bool)), (batch, t, t))
