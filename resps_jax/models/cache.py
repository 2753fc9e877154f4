"""Preallocated KV cache: a small pytree with static shapes and per-row lengths.

The forward writes the keys/values of its T new tokens at `lengths[b]` but never moves
`lengths`; the caller commits what it accepts (all T for prefill/AR, the accepted tree
path after compaction). That keeps one forward for prefill, decode and tree verify.

Each layer's K and V are [B, KVH, S, D]: the layout XLA's dot consumes as it is, K as the
left operand of Q K^T (contracting D, the minor dimension) and V as the right operand of
P V (contracting S). Attention (models/llama.py) reads the buffers the step receives and
writes the new tokens' K/V afterwards, ordered by a data edge (`after`), so inside a
decode `while_loop` the cache is updated in place and never transposed or copied.
"""

from __future__ import annotations

import dataclasses
import math

import jax
import jax.numpy as jnp

from resps_jax.errors import UserError

CACHE_ROUND = 128  # cache lengths are rounded up to this so nearby sizes share executables


@jax.tree_util.register_dataclass
@dataclasses.dataclass
class KVCache:
    keys: list[jax.Array]  # per layer [B, KVH, S, D]
    values: list[jax.Array]  # per layer [B, KVH, S, D]
    lengths: jax.Array  # [B] int32, committed tokens per row

    @property
    def capacity(self) -> int:
        return self.keys[0].shape[2]

    @staticmethod
    def create(
        num_layers: int, batch: int, capacity: int, num_kv_heads: int, head_dim: int, dtype
    ) -> KVCache:
        shape = (batch, num_kv_heads, capacity, head_dim)
        return KVCache(
            keys=[jnp.zeros(shape, dtype) for _ in range(num_layers)],
            values=[jnp.zeros(shape, dtype) for _ in range(num_layers)],
            lengths=jnp.zeros((batch,), jnp.int32),
        )

    def with_lengths(self, lengths: jax.Array) -> KVCache:
        return dataclasses.replace(self, lengths=lengths.astype(jnp.int32))


def write_rows(buffer: jax.Array, new: jax.Array, offsets: jax.Array, axis: int = 0) -> jax.Array:
    """buffer [B, ...] <- new [B, ...] at per-row offsets [B] along `axis` of each row."""

    def one(row, new_row, off):
        start = tuple(off if i == axis else 0 for i in range(row.ndim))
        return jax.lax.dynamic_update_slice(row, new_row.astype(row.dtype), start)

    return jax.vmap(one)(buffer, new, offsets)


def after(values: tuple[jax.Array, ...], token: jax.Array) -> tuple[jax.Array, ...]:
    """`values` unchanged, but computed from `token`: their consumers run after token's producers.

    The attention reads a layer's cache buffers, then writes the new K/V into the same
    buffers in place. Nothing orders the two unless the written values depend on what was
    read: XLA:CPU's copy insertion then copies the whole K and V buffers of every layer each
    step so that the in-place write cannot clobber a read (and `optimization_barrier` is
    lowered away before copy insertion, so it does not help). Adding `0 * token` (one
    element of the attention output) is exact for a finite token (x + 0 = x, x + -0 = x)
    and costs a scalar; a non-finite token means the layer's output is already non-finite.
    """
    zero = 0 * token.reshape(-1)[0]
    return tuple(v + zero.astype(v.dtype) for v in values)


def split_mask(mask: jax.Array, lengths: jax.Array, t: int) -> tuple[jax.Array, jax.Array]:
    """mask [B, T, S] over the cache after the write -> (cache part [B, T, S], new part [B, T, T]).

    Attention reads the T new tokens' K/V from the forward's own projections and everything
    else from the cache as it was before this forward's write; the slots lengths..lengths+T
    of that cache hold stale entries (a rejected tree, padding), so the cache part hides them
    and the new part says which new tokens each new token sees (mask[b, :, lengths[b] + j]).
    Slots are assumed in range (plan_cache_length leaves room for every write).
    """
    capacity = mask.shape[-1]
    slots = jnp.arange(capacity)[None, :]  # [1, S]
    fresh = (slots >= lengths[:, None]) & (slots < lengths[:, None] + t)  # [B, S]
    local = jax.vmap(lambda row, n: jax.lax.dynamic_slice_in_dim(row, n, t, axis=1))(mask, lengths)
    return mask & ~fresh[:, None, :], local


def attention_mask(lengths: jax.Array, local_mask: jax.Array, capacity: int) -> jax.Array:
    """Which cache slots each new token may read.

    lengths [B]: committed prefix per row (always visible). local_mask [B, T, T]: which of
    the T new tokens (written at lengths..lengths+T) each new token sees: causal for
    prefill/decode, the ancestor mask for a draft tree. Returns [B, T, S] bool.
    """
    batch, t, _ = local_mask.shape
    slots = jnp.arange(capacity)[None, None, :]  # [1, 1, S]
    prefix = slots < lengths[:, None, None]  # [B, 1, S]
    placed = write_rows(jnp.zeros((batch, capacity, t), bool), local_mask.transpose(0, 2, 1), lengths)
    return prefix | placed.transpose(0, 2, 1)  # [B, T, S]


def plan_cache_length(
    prompt_tokens: int,
    max_new_tokens: int,
    margin: int,
    limit: int,
    requested: int | None = None,
) -> int:
    """Cache length for one request, or a clear error when the request cannot fit.

    `margin` covers a draft tree written past the last committed token (TT_max plus the
    draft depth); `limit` is the model's position limit. Rounded up to CACHE_ROUND.
    """
    need = prompt_tokens + max_new_tokens + margin
    if requested is not None:
        if need > requested:
            raise UserError(
                f"prompt ({prompt_tokens} tokens) + max_new_tokens ({max_new_tokens}) + tree "
                f"margin ({margin}) = {need} exceeds the KV cache length ({requested}); raise "
                "--cache-len, shorten the prompt, or pass --truncate-prompt"
            )
        return requested
    if need > limit:
        raise UserError(
            f"prompt ({prompt_tokens} tokens) + max_new_tokens ({max_new_tokens}) + tree "
            f"margin ({margin}) = {need} exceeds the model's context of {limit} positions; "
            "shorten the prompt or pass --truncate-prompt"
        )
    return min(limit, int(math.ceil(need / CACHE_ROUND) * CACHE_ROUND))


# Every cache length and prompt bucket of the project comes from the functions below, so a
# prompt run by generate, train, evaluate, the grid search, a benchmark or `plan` compiles
# the same shapes.
MIN_PREFILL_BUCKET = 16


def cache_margin(verify_rows: int, path_width: int) -> int:
    """Cache slots a speculative step writes past the committed text: the verified rows of
    its widest tree, then room for the longest committed path (root included)."""
    return max(1, verify_rows) + max(2, path_width)


def prefill_bucket(n: int, capacity: int) -> int:
    """A prompt of n tokens is padded to a power of two from 16 (at most the cache): a few
    prefill executables serve every prompt length."""
    bucket = MIN_PREFILL_BUCKET
    while bucket < n:
        bucket *= 2
    return min(bucket, capacity)


def cache_length_bucket(capacity: int, limit: int) -> int:
    """A cache length rounded up to a power of two (at most the model's limit): a handful of
    lengths serve every prompt of an evaluation, so the untimed compiles stay few."""
    return min(1 << (capacity - 1).bit_length(), limit)
