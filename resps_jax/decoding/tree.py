"""Draft-tree growth under (TT, d, k) on padded static-shape arrays, as EAGLE-2/3 grow it.

Level 1 is the top-k of the head's prediction after the root. Each of d expansions runs
the head once on the k frontier nodes, takes every node's top-k children (cumulative
log-prob = parent + child), pools all k*k of them, and keeps the global top-k as the next
frontier. The final tree is the root plus the TT-1 best pooled nodes by score, ordered by
pool index (so parents come before children). Shapes depend only on k_max, d_max and the
TT bucket: k is a masked width (children and frontier slots >= k score -inf), d a
`fori_loop` bound, and TT a mask over the bucket, so one executable serves many actions.
"""

from __future__ import annotations

import dataclasses
from collections.abc import Sequence

import jax
import jax.numpy as jnp
import numpy as np

from resps_jax.decoding.action import AR_ACTION, Action, format_action, max_tree_tokens, validate_actions
from resps_jax.errors import UserError
from resps_jax.models.cache import KVCache, cache_margin
from resps_jax.models.eagle3 import Eagle3Head

NEG = -jnp.inf
# static mode's action without --tree: the head's 6/2/3 tree with a prompt-lookup chain of 4, the best
# static action on training questions with the CPU kernels (docs/results.md, "n-gram drafting")
DEFAULT_TREE = Action(6, 2, 3, 4)


@dataclasses.dataclass(frozen=True)
class TreeShape:
    """Static limits of one compiled step: the widest k, deepest d, the head tree's TT bucket
    (1: no head tree), the n-gram chain's length bucket (0: no chain) and the longest suffix
    the lookup matches."""

    k_max: int
    d_max: int
    tt_bucket: int
    chain_bucket: int = 0
    ngram_match: int = 3

    @property
    def uses_head(self) -> bool:
        return self.tt_bucket > 1

    @property
    def pool_size(self) -> int:
        """Nodes grow_tree can pool: every tree token but the root (`max_tree_tokens`)."""
        return max_tree_tokens(self.d_max, self.k_max) - 1

    @property
    def path_width(self) -> int:
        """Longest root-to-leaf path: the root plus d_max + 1 drafted levels, or the chain."""
        return max(self.d_max + 2 if self.uses_head else 1, self.chain_bucket + 1)

    @property
    def verify_rows(self) -> int:
        """Slots of the verified tree: the head's bucket plus the chain's."""
        return self.tt_bucket + self.chain_bucket


def tt_buckets(actions: Sequence[Action], max_buckets: int = 12) -> tuple[int, ...]:
    """Verify shapes: the distinct TT values, merged upward when there are too many."""
    values = sorted({a.tt for a in actions})
    while len(values) > max_buckets:  # drop the bucket whose removal wastes least
        waste = [values[i + 1] - values[i] for i in range(len(values) - 1)]
        values.pop(int(np.argmin(waste)))
    return tuple(values)


def round_up(value: int, buckets: Sequence[int]) -> int:
    for b in buckets:
        if value <= b:
            return b
    raise UserError(f"{value} exceeds the largest compiled bucket {buckets[-1]}")


def shape_key(action: Action, buckets: Sequence[int]) -> tuple[int, int]:
    """(TT bucket or 1 without the head, chain length or 0): the compiled step an action runs."""
    return (round_up(action.tt, buckets) if action.uses_head else 1), action.ngram


def step_shapes(actions: Sequence[Action], ngram_match: int = 3) -> dict[tuple[int, int], TreeShape]:
    """The compiled steps an action set needs, by shape_key: k_max and d_max over the head's
    actions, one step per (TT bucket, chain length); `ar` needs none."""
    actions = [Action(*a) for a in actions]
    trees = [a for a in actions if a.uses_head]
    k_max = max((a.topk for a in trees), default=1)
    d_max = max((a.depth for a in trees), default=1)
    buckets = tt_buckets(trees) if trees else ()
    return {shape_key(a, buckets): TreeShape(k_max, d_max, *shape_key(a, buckets), ngram_match)
            for a in actions if a != AR_ACTION}


def tree_margin(actions: Sequence[Action]) -> int:
    """Cache slots past the committed text that a SpeculativeEngine over `actions` reserves:
    what a benchmark or `plan` sizes the cache with before any engine exists."""
    shapes = step_shapes(actions).values()
    return cache_margin(max([1] + [s.verify_rows for s in shapes]), max([2] + [s.path_width for s in shapes]))


@jax.tree_util.register_dataclass
@dataclasses.dataclass
class DraftTree:
    tokens: jax.Array  # [TT] target ids; slot 0 is the root
    parents: jax.Array  # [TT] parent slot (root: 0)
    depths: jax.Array  # [TT] root 0
    valid: jax.Array  # [TT] bool
    ancestors: jax.Array  # [TT, TT] bool: j is i or an ancestor of i (valid nodes only)


def grow_tree(
    head: Eagle3Head,
    embed_table: jax.Array,  # [V, H] the target's embeddings
    draft_cache: KVCache,  # committed prefix of length n (per row 0)
    last_out: jax.Array,  # [H] the head's output at position n-1 (predicts level 1)
    root: jax.Array,  # [] the root token (sampled by the target, not yet verified)
    tt: jax.Array,  # [] int32 total tokens including the root, <= shape.tt_bucket
    depth: jax.Array,  # [] int32 expansions, <= shape.d_max
    k: jax.Array,  # [] int32 top-k, <= shape.k_max
    shape: TreeShape,
) -> DraftTree:
    """The head's draft tree under (tt, depth, k) as the module docstring describes.

    One function of about 90 lines, on purpose: its helpers (top children, one expansion
    level) close over this call's traced limits (the k mask, the cache's committed length),
    and as module functions each would take the same six arguments.
    """
    km = shape.k_max
    n = draft_cache.lengths[0]
    width_ok = jnp.arange(km) < k  # [km]

    def top_children(out: jax.Array) -> tuple[jax.Array, jax.Array]:
        """[F, H] outputs -> top-k_max child (log-prob, target id) per node, slots >= k masked."""
        logp = jax.nn.log_softmax(head.logits(out), axis=-1)  # [F, Vd]
        values, draft_ids = jax.lax.top_k(logp, km)  # [F, km]
        return jnp.where(width_ok, values, NEG), head.to_target_ids(draft_ids)

    # level 1: children of the root
    scores1, tokens1 = top_children(last_out[None])
    scores1, tokens1 = scores1[0], tokens1[0]  # [km]
    pool_scores = jnp.full((shape.pool_size,), NEG).at[:km].set(scores1)
    pool_tokens = jnp.zeros((shape.pool_size,), jnp.int32).at[:km].set(tokens1)
    pool_parents = jnp.full((shape.pool_size,), -1, jnp.int32)  # pool index of the parent; -1: root
    pool_depths = jnp.ones((shape.pool_size,), jnp.int32)

    slots = jnp.arange(draft_cache.capacity)

    def expand(i, carry):
        cache, f_tokens, f_scores, f_pool, f_hidden, f_anc, pool = carry
        p_scores, p_tokens, p_parents, p_depths = pool
        # the frontier (level i+1) reads the prefix, its ancestors' slots, and its own slot
        own = n + i * km + jnp.arange(km)  # [km]
        self_slot = slots[None, :] == own[:, None]  # [km, S]
        mask = (slots[None, :] < n) | f_anc | self_slot  # [km, S]
        embeds = jnp.take(embed_table, f_tokens, axis=0)[None]  # [1, km, H]
        positions = jnp.full((1, km), n + i, jnp.int32)
        cache = cache.with_lengths(jnp.full((1,), n + i * km, jnp.int32))
        out, cache = head(embeds, f_hidden[None], positions, cache, None, mask=mask[None])
        out = out[0]  # [km, H]
        c_scores, c_tokens = top_children(out)  # [km, km]
        cum = jnp.where(f_scores[:, None] > NEG, f_scores[:, None] + c_scores, NEG)  # [km, km]
        start = km + i * km * km
        flat_scores, flat_tokens = cum.reshape(-1), c_tokens.reshape(-1)
        flat_parents = jnp.repeat(f_pool, km)
        p_scores = jax.lax.dynamic_update_slice(p_scores, flat_scores, (start,))
        p_tokens = jax.lax.dynamic_update_slice(p_tokens, flat_tokens, (start,))
        p_parents = jax.lax.dynamic_update_slice(p_parents, flat_parents, (start,))
        p_depths = jax.lax.dynamic_update_slice(p_depths, jnp.full((km * km,), i + 2, jnp.int32), (start,))
        # next frontier: the global top-k of the k*k children (slots >= k stay -inf)
        best_scores, best = jax.lax.top_k(flat_scores, km)
        best_scores = jnp.where(width_ok, best_scores, NEG)
        parent_row = best // km
        next_anc = f_anc[parent_row] | self_slot[parent_row]
        carry = (cache, flat_tokens[best], best_scores, start + best, out[parent_row], next_anc,
                 (p_scores, p_tokens, p_parents, p_depths))
        return carry

    frontier_anc = jnp.zeros((km, draft_cache.capacity), bool)
    carry = (draft_cache, tokens1, scores1, jnp.arange(km, dtype=jnp.int32), jnp.broadcast_to(last_out, (km, last_out.shape[-1])),
             frontier_anc, (pool_scores, pool_tokens, pool_parents, pool_depths))
    carry = jax.lax.fori_loop(0, depth, expand, carry)
    p_scores, p_tokens, p_parents, p_depths = carry[-1]

    # rerank: the best TT-1 pooled nodes, then back into pool order (parents first)
    nodes = shape.tt_bucket - 1
    if nodes > shape.pool_size:  # tiny trees: a pool smaller than the bucket
        p_scores = jnp.concatenate([p_scores, jnp.full((nodes - shape.pool_size,), NEG)])
    sel_scores, sel = jax.lax.top_k(p_scores, nodes)
    chosen = (jnp.arange(nodes) < tt - 1) & (sel_scores > NEG)
    order_key = jnp.where(chosen, sel, p_scores.shape[0] + jnp.arange(nodes))
    sel = jnp.sort(order_key)
    chosen = sel < shape.pool_size
    sel = jnp.where(chosen, sel, 0)
    # parent slot: position of the parent's pool index among the chosen (root = slot 0)
    parent_pool = p_parents[sel]
    match = (sel[None, :] == parent_pool[:, None]) & chosen[None, :]  # [nodes, nodes]
    parent_slot = jnp.where(parent_pool < 0, 0, jnp.argmax(match, axis=1) + 1)
    parent_found = (parent_pool < 0) | match.any(axis=1)

    tokens = jnp.concatenate([root[None].astype(jnp.int32), jnp.where(chosen, p_tokens[sel], 0)])
    parents = jnp.concatenate([jnp.zeros((1,), jnp.int32), parent_slot.astype(jnp.int32)])
    depths = jnp.concatenate([jnp.zeros((1,), jnp.int32), jnp.where(chosen, p_depths[sel], 0)])
    valid = jnp.concatenate([jnp.ones((1,), bool), chosen & parent_found])
    return finish_tree(tokens, parents, depths, valid, shape.d_max + 2)


def children(tree: DraftTree, node: jax.Array) -> jax.Array:
    """[T] bool: the valid slots whose parent is `node` (the root is nobody's child)."""
    return tree.valid & (tree.parents == node) & (jnp.arange(tree.tokens.shape[0]) != 0)


def finish_tree(tokens: jax.Array, parents: jax.Array, depths: jax.Array, valid: jax.Array,
                longest_path: int) -> DraftTree:
    """A DraftTree from parent pointers: a node stays valid only if its whole ancestry is, and
    its ancestor row (the verify's attention mask) follows the pointers `longest_path` times."""
    slots = tokens.shape[0]
    eye = jnp.eye(slots, dtype=bool)
    anc, ptr, ok = eye, parents, valid
    for _ in range(longest_path):
        anc = anc | jax.nn.one_hot(ptr, slots, dtype=bool)
        ok = ok & valid[ptr]
        ptr = parents[ptr]
    valid = ok
    anc = jnp.where(valid[:, None], anc, eye) & (valid[None, :] | eye)
    return DraftTree(tokens=jnp.where(valid, tokens, 0), parents=jnp.where(valid, parents, 0),
                     depths=jnp.where(valid, depths, 0), valid=valid, ancestors=anc)
