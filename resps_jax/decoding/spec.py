"""The speculative decoding step and its N-step interval, as pure functions over split state.

One step: grow a tree from the head's last output, verify it in one target forward (tree
ancestor mask, depth positions), walk it to the accepted path plus a bonus token, compact
the target cache, and re-encode the newly committed tokens into the head with their true
target features. An interval runs N such steps with one action (TT, d, k) in a single
`lax.while_loop`, stopping early at EOS or the token budget: one host dispatch per interval.

The no-draft action `ar` runs the target alone and leaves the head behind: it only logs each
step's features. The next tree interval first encodes the positions the head missed, CATCH_UP
rows per head call, so a turn the policy spends in `ar` costs what plain decoding costs, and
the catch-up after an `ar` interval is a few batched head calls instead of one per token.

An action may add a prompt-lookup chain (decoding/ngram.py) found on device in the token
buffer (`SpecState.context`) and verified in the same tree. An n-gram action without the
head (`ngram:L`) runs no head pass at all and, like `ar`, logs its features for the head
to catch up on; an engine built without a head runs only `ar` and `ngram:L`.
"""

from __future__ import annotations

import dataclasses

import jax
import jax.numpy as jnp
from flax import nnx

from resps_jax.decoding.ngram import add_chain, ngram_chain, root_only
from resps_jax.decoding.sampling import select_token
from resps_jax.decoding.tree import DraftTree, TreeShape, grow_tree
from resps_jax.decoding.verify import commit_path, walk_tree
from resps_jax.models.cache import KVCache
from resps_jax.models.llama import causal_mask

CATCH_UP = 16  # positions the head encodes per call when it catches up after `ar` steps


def draft_cache_length(capacity: int, d_max: int, k_max: int, path_width: int = 0) -> int:
    """Head cache slots for a target cache of `capacity`: room for the deepest tree's
    scratch rows, a full catch-up chunk and a step's re-encode written past the prefix."""
    return capacity + max((d_max + 1) * k_max, CATCH_UP, path_width)


@jax.tree_util.register_dataclass
@dataclasses.dataclass
class SpecState:
    target_cache: KVCache
    draft_cache: KVCache
    root: jax.Array  # [] next token to verify (sampled by the target, already emitted)
    last_out: jax.Array  # [H] the head's output at the last committed position
    last_taps: jax.Array  # [3H] target features of the last committed token (the policy's state)
    context: jax.Array  # [S + W] the text by position: prompt, then emitted tokens (root at prompt_len + count - 1)
    count: jax.Array  # [] tokens emitted so far
    steps: jax.Array  # [] speculative steps taken
    accepted: jax.Array  # [S] tokens emitted per step (a + 1)
    done: jax.Array  # [] EOS or budget reached
    key: jax.Array
    taps_log: jax.Array  # [S, 3H] target features by position, written by `ar` steps (1 row without `ar`)
    prompt_len: jax.Array  # [] position of out[0]


def spec_prefill(graphdef_t, graphdef_h, params_t, params_h, target_cache, draft_cache, tokens, valid,
                 temperature, key, out_width: int, log_taps: bool = True) -> SpecState:
    """Target prefill (first token + taps), then the head over the prompt with its true
    features (graphdef_h None: an engine without a head, for `ar` and `ngram:L` only)."""
    target = nnx.merge(graphdef_t, params_t)
    _, p = tokens.shape
    positions = jnp.arange(p, dtype=jnp.int32)[None]
    hidden, taps, target_cache = target(tokens, positions, target_cache, causal_mask(1, p))
    n = valid[0]
    last = jax.lax.dynamic_index_in_dim(hidden[0], n - 1, keepdims=False)
    root = select_token(target.logits(last[None]), temperature, jax.random.fold_in(key, 0))[0]
    target_cache = target_cache.with_lengths(valid)
    # the head's input at position j pairs f_j with token j+1 (the root after the prompt)
    next_tokens = jnp.concatenate([tokens[0, 1:], jnp.zeros((1,), jnp.int32)]).at[n - 1].set(root)
    if graphdef_h is not None:
        head = nnx.merge(graphdef_h, params_h)
        embeds = jnp.take(target.embed_tokens.weight[...], next_tokens, axis=0)[None]
        out, draft_cache = head(embeds, taps, positions, draft_cache, causal_mask(1, p))
        draft_cache = draft_cache.with_lengths(valid)
        last_out = jax.lax.dynamic_index_in_dim(out[0], n - 1, keepdims=False)
    else:
        last_out = jnp.zeros((hidden.shape[-1],), hidden.dtype)
    capacity = target_cache.capacity
    context = jnp.zeros((capacity + out_width,), jnp.int32).at[:p].set(tokens[0])
    return SpecState(
        target_cache=target_cache,
        draft_cache=draft_cache,
        root=root,
        last_out=last_out,
        last_taps=jax.lax.dynamic_index_in_dim(taps[0], n - 1, keepdims=False),
        context=jax.lax.dynamic_update_slice(context, root[None], (n,)),
        count=jnp.int32(1),
        steps=jnp.int32(0),
        accepted=jnp.zeros((capacity,), jnp.int32),
        done=jnp.bool_(False),
        key=key,
        taps_log=jnp.zeros((capacity if log_taps else 1, taps.shape[-1]), taps.dtype),
        prompt_len=n,
    )


def spec_prefill_seeded(graphdef_t, graphdef_h, params_t, params_h, target_cache, draft_cache, tokens, valid,
                        temperature, seed, out_width: int, log_taps: bool = True) -> SpecState:
    """spec_prefill with the key made on device from an int seed (host inputs stay numpy)."""
    return spec_prefill(graphdef_t, graphdef_h, params_t, params_h, target_cache, draft_cache, tokens, valid,
                        temperature, jax.random.key(seed), out_width=out_width, log_taps=log_taps)


def catch_up_head(target, head, state: SpecState) -> SpecState:
    """Encode the positions `ar` steps committed without the head, CATCH_UP per call.

    Each position j pairs its logged target features with the embedding of token j+1, as
    the head saw them when it was kept in step, so the drafts that follow are the same.
    Rows past the committed length write cache slots that stay uncommitted.
    """
    n = state.target_cache.lengths[0]
    embed = target.embed_tokens.weight[...]
    rows = jnp.arange(CATCH_UP, dtype=jnp.int32)

    def body(s: SpecState) -> SpecState:
        start = s.draft_cache.lengths[0]  # positions the head has encoded
        positions = start + rows  # [G]
        taps = jnp.take(s.taps_log, positions, axis=0, mode="clip")  # [G, 3H]
        next_tokens = jnp.take(s.context, positions + 1, mode="clip")  # [G] token after each
        embeds = jnp.take(embed, next_tokens, axis=0)[None]  # [1, G, H]
        out_h, draft_cache = head(embeds, taps[None], positions[None], s.draft_cache.with_lengths(start[None]),
                                  causal_mask(1, CATCH_UP))
        end = jnp.minimum(start + CATCH_UP, n)
        last = out_h[0, jnp.clip(n - 1 - start, 0, CATCH_UP - 1)]
        return dataclasses.replace(s, draft_cache=draft_cache.with_lengths(end[None]),
                                   last_out=jnp.where(end == n, last, s.last_out))

    return jax.lax.while_loop(lambda s: s.draft_cache.lengths[0] < n, body, state)


def draft_tree(target, head, state: SpecState, tt, depth, k, shape: TreeShape) -> DraftTree:
    """Drafting: the head grows a tree of at most TT tokens from its last output."""
    embed = target.embed_tokens.weight[...]
    return grow_tree(head, embed, state.draft_cache, state.last_out, state.root, tt, depth, k, shape)


def lookup_chain(state: SpecState, tree: DraftTree, chain_len, shape: TreeShape) -> DraftTree:
    """The n-gram lookup over the text so far, its chain (at most `chain_len` real tokens)
    hung from the tree's root: shape.verify_rows slots."""
    end = state.prompt_len + state.count - 1  # the root's position
    chain, available = ngram_chain(state.context, end, shape.ngram_match, shape.chain_bucket)
    return add_chain(tree, chain, jnp.minimum(available, chain_len), shape.path_width)


def draft_step(target, head, state: SpecState, tt, depth, k, chain_len, shape: TreeShape) -> DraftTree:
    """Everything a step drafts: the head's tree (or the root alone), then the chain."""
    tree = draft_tree(target, head, state, tt, depth, k, shape) if shape.uses_head else root_only(state.root)
    return lookup_chain(state, tree, chain_len, shape) if shape.chain_bucket else tree


def verify_tree(target, state: SpecState, tree: DraftTree):
    """Verification: one target forward over the tree (ancestor mask, depth positions).

    Returns the target's logits [TT, V] at every tree slot, its tapped features [1, TT, 3H]
    and its cache with the tree written after the committed prefix (not yet compacted).
    """
    n = state.target_cache.lengths  # [1]
    positions = (n[:, None] + tree.depths[None]).astype(jnp.int32)  # [1, TT]
    hidden, taps, cache = target(tree.tokens[None], positions, state.target_cache, tree.ancestors[None])
    return target.logits(hidden[0]), taps, cache


def accept_and_commit(target, head, state: SpecState, tree: DraftTree, logits, taps, cache, max_new, eos_ids,
                      temperature, shape: TreeShape) -> SpecState:
    """Tree management after verification: walk the tree to the accepted path and bonus,
    compact the target cache onto that path, emit the tokens, and re-encode them into the
    head with their true target features (a step without the head logs them instead, for
    the next head interval's catch-up)."""
    embed = target.embed_tokens.weight[...]  # [V, H]
    n = state.target_cache.lengths  # [1]
    step_key = jax.random.fold_in(state.key, state.steps + 1)
    width = shape.path_width
    path, accepted, bonus = walk_tree(tree, logits, temperature, step_key, width)
    count = accepted + 1
    cache = commit_path(cache, path, count[None])

    # tokens this step emits: the accepted drafts, then the bonus
    j = jnp.arange(width)
    drafts = tree.tokens[jnp.maximum(path, 0)]
    emit = jnp.where(j < accepted, jnp.roll(drafts, -1), jnp.where(j == accepted, bonus, 0))  # [W]
    is_eos = jnp.isin(emit, eos_ids) & (j < count)
    first_eos = jnp.where(is_eos.any(), jnp.argmax(is_eos), width)
    emitted = jnp.minimum(jnp.minimum(count, first_eos + 1), max_new - state.count)
    context = jax.lax.dynamic_update_slice(state.context, jnp.where(j < emitted, emit, 0),
                                           (state.prompt_len + state.count,))

    step_taps = taps[0][jnp.maximum(path, 0)]  # [W, 3H]
    draft_cache, last_out, taps_log = state.draft_cache, state.last_out, state.taps_log
    if shape.uses_head:
        draft_cache, last_out = reencode(head, embed, state.draft_cache, emit, step_taps, n, count)
    elif taps_log.shape[0] > 1:  # the head catches up on these rows later (rows past count are rewritten)
        taps_log = jax.lax.dynamic_update_slice_in_dim(taps_log, step_taps, n[0], axis=0)

    return SpecState(
        target_cache=cache,
        draft_cache=draft_cache,
        root=bonus,
        last_out=last_out,
        last_taps=step_taps[accepted],
        context=context,
        count=state.count + emitted,
        steps=state.steps + 1,
        accepted=state.accepted.at[state.steps].set(count),
        done=state.done | is_eos.any() | (state.count + emitted >= max_new),
        key=state.key,
        taps_log=taps_log,
        prompt_len=state.prompt_len,
    )


def reencode(head, embed, draft_cache: KVCache, emit, step_taps, n, count):
    """The committed tokens into the head with their true target features: row j pairs the
    features of path token j with the token after it (emit[j]). Returns the head's cache
    committed to n + count and its output at the last committed token (the next level 1)."""
    width = emit.shape[0]
    embeds = jnp.take(embed, emit, axis=0)[None]  # [1, W, H]
    dpos = (n[:, None] + jnp.arange(width)[None]).astype(jnp.int32)  # [1, W]
    out_h, draft_cache = head(embeds, step_taps[None], dpos, draft_cache.with_lengths(n), causal_mask(1, width))
    return draft_cache.with_lengths(n + count), out_h[0, count - 1]


def spec_step(target, head, state: SpecState, tt, depth, k, chain_len, max_new, eos_ids, temperature,
              shape: TreeShape) -> SpecState:
    """One speculative step: draft, verify, accept and commit (timed apart by decoding/profile.py)."""
    tree = draft_step(target, head, state, tt, depth, k, chain_len, shape)
    logits, taps, cache = verify_tree(target, state, tree)
    return accept_and_commit(target, head, state, tree, logits, taps, cache, max_new, eos_ids, temperature, shape)


def ar_step(target, state: SpecState, max_new, eos_ids, temperature) -> SpecState:
    """The no-draft action: one plain target step on the root, its features logged for the head.

    The target's token is chosen exactly as plain decoding chooses it (greedy, or sampled
    from the target's own distribution), so the output law is untouched. The head is not
    run: the next tree interval encodes the logged positions first (catch_up_head).
    """
    n = state.target_cache.lengths  # [1]
    hidden, taps, cache = target(state.root[None, None], n[:, None], state.target_cache, causal_mask(1, 1))
    cache = cache.with_lengths(n + 1)
    step_key = jax.random.fold_in(state.key, state.steps + 1)
    bonus = select_token(target.logits(hidden[:, 0]), temperature, step_key)[0]  # []
    is_eos = jnp.isin(bonus, eos_ids)
    context = jax.lax.dynamic_update_slice(state.context, bonus[None], (state.prompt_len + state.count,))
    return dataclasses.replace(
        state,
        target_cache=cache,
        root=bonus,
        last_taps=taps[0, 0],
        context=context,
        count=state.count + 1,
        steps=state.steps + 1,
        accepted=state.accepted.at[state.steps].set(1),
        done=state.done | is_eos | (state.count + 1 >= max_new),
        taps_log=jax.lax.dynamic_update_slice_in_dim(state.taps_log, taps[0], n[0], axis=0),
    )


def ar_interval(graphdef_t, graphdef_h, params_t, params_h, state: SpecState, n_steps, max_new, eos_ids,
                temperature) -> SpecState:
    """Up to n_steps no-draft steps as one while_loop (the `ar` action's interval)."""
    del graphdef_h, params_h  # the head waits for the next tree interval (catch_up_head)
    target = nnx.merge(graphdef_t, params_t)
    start = state.steps

    def cond(s: SpecState):
        return ~s.done & (s.steps - start < n_steps)

    return jax.lax.while_loop(cond, lambda s: ar_step(target, s, max_new, eos_ids, temperature), state)


def spec_interval(graphdef_t, graphdef_h, params_t, params_h, state: SpecState, tt, depth, k, chain_len, n_steps,
                  max_new, eos_ids, temperature, shape: TreeShape) -> SpecState:
    """Up to n_steps speculative steps with one action, as one while_loop.

    A shape with the head first catches the head up on what `ar` or `ngram:L` steps
    committed without it; a shape without the head never runs it."""
    target = nnx.merge(graphdef_t, params_t)
    head = nnx.merge(graphdef_h, params_h) if shape.uses_head else None
    start = state.steps

    def cond(s: SpecState):
        return ~s.done & (s.steps - start < n_steps)

    def body(s: SpecState):
        return spec_step(target, head, s, tt, depth, k, chain_len, max_new, eos_ids, temperature, shape)

    if shape.uses_head:
        state = catch_up_head(target, head, state)
    return jax.lax.while_loop(cond, body, state)
