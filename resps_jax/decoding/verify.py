"""Accepting a verified draft tree, losslessly, and committing the accepted path.

The walk starts at the root. At a node with target distribution p (after temperature),
its children x_1..x_m (in slot order) are tried in turn: x_i is accepted with probability
p(x_i) / (1 - p(x_1) - ... - p(x_{i-1})), i.e. with p(x_i) under p renormalised after the
earlier siblings were zeroed. That is sampling from p without replacement among the
children, so the token emitted at each position is distributed exactly as p: the draft is
deterministic (q is one-hot), and this is EAGLE's multi-sibling rejection rule in closed
form. When every child is rejected (or the node is a leaf) the bonus token is drawn from
the residual: p with the children zeroed. At temperature 0, p is one-hot on the argmax, so
the walk accepts exactly the child equal to the target's argmax and the bonus is the
argmax: token-identical to greedy decoding.
"""

from __future__ import annotations

import jax
import jax.numpy as jnp

from resps_jax.decoding.tree import DraftTree, children
from resps_jax.models.cache import KVCache, write_rows


def target_distribution(logits: jax.Array, temperature: jax.Array) -> jax.Array:
    """[..., V] logits -> the distribution plain decoding samples from (one-hot at T=0)."""
    greedy = jax.nn.one_hot(jnp.argmax(logits, -1), logits.shape[-1], dtype=jnp.float32)
    sampled = jax.nn.softmax(logits / jnp.maximum(temperature, 1e-6), axis=-1)
    return jnp.where(temperature > 0, sampled, greedy)


def walk_tree(
    tree: DraftTree, logits: jax.Array, temperature: jax.Array, key: jax.Array, path_width: int
) -> tuple[jax.Array, jax.Array, jax.Array]:
    """logits [TT, V] at the tree slots -> (path [W] slots, -1 padded; accepted drafts a; bonus).

    Greedy decoding takes `greedy_walk`, the same rule on the slots' argmax tokens: one pass
    over the logits instead of a softmax and a one-hot over the vocabulary per level.
    """
    return jax.lax.cond(temperature > 0,
                        lambda: sampled_walk(tree, logits, temperature, key, path_width),
                        lambda: greedy_walk(tree, logits, path_width))


def greedy_walk(tree: DraftTree, logits: jax.Array, path_width: int) -> tuple[jax.Array, jax.Array, jax.Array]:
    """The walk at temperature 0: at each node accept the child whose token is the target's
    argmax there (siblings are distinct tokens, so at most one), else stop; the bonus is the
    argmax at the last node. The sampled walk at temperature 0 takes exactly these steps."""
    best = jnp.argmax(logits, axis=-1).astype(jnp.int32)  # [TT] the target's token after each slot

    def level(i, carry):
        node, done, accepted, path = carry
        take = children(tree, node) & (tree.tokens == best[node])  # [TT]
        go = ~done & take.any()
        nxt = jnp.argmax(take).astype(jnp.int32)
        path = jnp.where(go, path.at[accepted + 1].set(nxt), path)
        return jnp.where(go, nxt, node), done | ~go, accepted + go.astype(jnp.int32), path

    path = jnp.full((path_width,), -1, jnp.int32).at[0].set(0)
    node, _, accepted, path = jax.lax.fori_loop(
        0, path_width - 1, level, (jnp.int32(0), jnp.bool_(False), jnp.int32(0), path)
    )
    return path, accepted, best[node]


def sampled_walk(
    tree: DraftTree, logits: jax.Array, temperature: jax.Array, key: jax.Array, path_width: int
) -> tuple[jax.Array, jax.Array, jax.Array]:
    """The walk at temperature > 0 (module docstring): sampling without replacement among
    each node's children, then the bonus from the residual."""
    tt = tree.tokens.shape[0]

    def level(i, carry):
        node, done, accepted, path = carry
        p = target_distribution(logits[node], temperature)  # [V]
        kids = children(tree, node)
        p_kid = jnp.where(kids, p[tree.tokens], 0.0)  # [TT]
        before = jnp.cumsum(p_kid) - p_kid  # mass of earlier siblings
        ratio = p_kid / jnp.maximum(1.0 - before, 1e-30)
        u = jax.random.uniform(jax.random.fold_in(key, i), (tt,))
        take = kids & (u < ratio)
        go = ~done & take.any()
        nxt = jnp.argmax(take)
        path = jnp.where(go, path.at[accepted + 1].set(nxt), path)
        return jnp.where(go, nxt, node), done | ~go, accepted + go.astype(jnp.int32), path

    path = jnp.full((path_width,), -1, jnp.int32).at[0].set(0)
    node, _, accepted, path = jax.lax.fori_loop(
        0, path_width - 1, level, (jnp.int32(0), jnp.bool_(False), jnp.int32(0), path)
    )
    # bonus from the residual at the last node: its children were all rejected (or absent)
    p = target_distribution(logits[node], temperature)
    rejected = jnp.zeros_like(p).at[tree.tokens].max(children(tree, node).astype(p.dtype))
    residual = p * (1.0 - rejected)
    sampled = jax.random.categorical(jax.random.fold_in(key, path_width), jnp.log(residual))
    bonus = sampled.astype(jnp.int32)  # temperature 0 takes greedy_walk
    return path, accepted, bonus


def commit_path(cache: KVCache, path: jax.Array, count: jax.Array) -> KVCache:
    """Move the K/V of the accepted tree slots (path[:count]) to the committed prefix.

    The tree was written at lengths..lengths+TT; slot path[j] moves to lengths + j. Padding
    beyond `count` writes garbage past the new length, which attention never reads.
    """
    n = cache.lengths  # [B]
    src = n[:, None] + jnp.maximum(path, 0)[None, :]  # [B, W]

    def move(buffer):  # [B, KVH, S, D]
        picked = jax.vmap(lambda row, idx: jnp.take(row, idx, axis=1))(buffer, src)  # [B, KVH, W, D]
        return write_rows(buffer, picked, n, axis=1)

    return KVCache(
        keys=[move(k) for k in cache.keys],
        values=[move(v) for v in cache.values],
        lengths=n + count,
    )
