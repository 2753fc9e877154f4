"""Turning target logits into the next token: greedy at T=0, plain sampling at T>0.

Temperature is a traced scalar so greedy and sampled runs share one executable; the
branch is a `lax.cond`, so greedy steps never pay for drawing Gumbel noise.
"""

from __future__ import annotations

import jax
import jax.numpy as jnp


def select_token(logits: jax.Array, temperature: jax.Array, key: jax.Array) -> jax.Array:
    """logits [B, V] float32 -> tokens [B] int32."""

    def sample(_):
        # Every row draws with the same key, as it would alone: batching never changes a row.
        scaled = logits / jnp.maximum(temperature, 1e-6)
        return jax.vmap(lambda row: jax.random.categorical(key, row))(scaled)

    def greedy(_):
        return jnp.argmax(logits, axis=-1)

    return jax.lax.cond(temperature > 0, sample, greedy, None).astype(jnp.int32)

