"""Prompt-lookup drafting inside the jitted step, and the chain joined to the head's tree.

A small model repeats itself, and a prompt holds its answer's words (code identifiers,
GSM8K's numbers, the article being summarised), so the tokens that followed the latest
earlier occurrence of the text's last few tokens are a free draft. `ngram_chain` finds
them on device over the token buffer (prompt + emitted tokens, static length), with no
host round trip: one comparison per buffer slot and match length, a few microseconds.

`add_chain` hangs the chain from the root of the head's tree. Where a chain token equals a
head node's token at the same place the two share the node and the chain continues
beneath it; from the first token the head did not draft, the rest is a fresh branch. So
siblings stay distinct tokens (the walk's sampling without replacement needs that), every
draft is a deterministic function of the committed text (the walk's losslessness needs
that), and the same ancestor mask, target forward and walk serve both drafters.
"""

from __future__ import annotations

import jax
import jax.numpy as jnp

from resps_jax.decoding.tree import DraftTree, children, finish_tree


def ngram_chain(context: jax.Array, end: jax.Array, max_match: int, length: int) -> tuple[jax.Array, jax.Array]:
    """The lookup: (chain [length] tokens, how many of them are real []).

    context [S] int32 holds the text by position; `end` is the position of its last token
    (the root: sampled by the target, not yet verified). The match is the longest suffix
    of up to `max_match` tokens ending at `end` that also ends at an earlier position p
    (ties: the latest p); the chain is context[p + 1 .. p + length], cut at `end` (only
    known tokens). No match (not even the last token alone): zero real tokens.
    """
    size = context.shape[0]
    p = jnp.arange(size)  # [S] candidate end positions of an earlier occurrence
    run = p < end  # an occurrence must end before the suffix itself does
    match_len = jnp.zeros((size,), jnp.int32)
    for i in range(max_match):  # suffix token end - i against context[p - i]
        shifted = jnp.concatenate([jnp.full((i,), -1, context.dtype), context[: size - i]])  # [S] context[p - i]
        suffix_token = context[jnp.maximum(end - i, 0)]
        run = run & (shifted == suffix_token) & (end - i >= 0)
        match_len = match_len + run.astype(jnp.int32)
    score = jnp.where(match_len > 0, match_len * size + p, -1)  # longest, then latest
    best = jnp.argmax(score)
    found = score[best] >= 0
    available = jnp.where(found, jnp.minimum(end - best, length), 0).astype(jnp.int32)
    chain = jnp.take(context, best + 1 + jnp.arange(length), mode="clip")  # [length]
    return chain.astype(jnp.int32), available


def root_only(root: jax.Array) -> DraftTree:
    """The tree of an n-gram action without the head: the root alone, for add_chain to extend."""
    return DraftTree(tokens=root[None].astype(jnp.int32), parents=jnp.zeros((1,), jnp.int32),
                     depths=jnp.zeros((1,), jnp.int32), valid=jnp.ones((1,), bool),
                     ancestors=jnp.ones((1, 1), bool))


def add_chain(tree: DraftTree, chain: jax.Array, chain_len: jax.Array, longest_path: int) -> DraftTree:
    """tree [T slots] + chain [L] (first `chain_len` real) -> one tree of T + L slots.

    Chain token j descends the head's tree while it matches a child there (shared node, its
    own slot T + j left empty); from its first miss on it occupies slot T + j under the
    previous chain token. `longest_path` bounds root-to-leaf paths (ancestor pointer hops).
    """
    slots = tree.tokens.shape[0]
    length = chain.shape[0]

    def place(carry, j):
        node, on_tree, prev = carry  # head slot the chain has reached, still sharing it, last chain slot
        live = j < chain_len
        match = children(tree, node) & (tree.tokens == chain[j])  # [T]
        shared = on_tree & live & match.any()
        parent = jnp.where(on_tree, node, prev)
        new = live & ~shared
        carry = (jnp.where(shared, jnp.argmax(match), node).astype(jnp.int32), shared,
                 jnp.where(new, slots + j, prev).astype(jnp.int32))
        return carry, (new, parent)

    start = (jnp.int32(0), jnp.bool_(True), jnp.int32(0))
    _, (chain_valid, chain_parents) = jax.lax.scan(place, start, jnp.arange(length))
    tokens = jnp.concatenate([tree.tokens, chain.astype(jnp.int32)])
    parents = jnp.concatenate([tree.parents, chain_parents.astype(jnp.int32)])
    depths = jnp.concatenate([tree.depths, jnp.arange(1, length + 1, dtype=jnp.int32)])
    valid = jnp.concatenate([tree.valid, chain_valid])
    return finish_tree(tokens, parents, depths, valid, longest_path)
