"""EAGLE-3 training-time test (TTT): the math of one training step, as pure functions.

A training sequence x_0..x_{T-1} comes with the frozen target's taps f_p and its logits
l_p (restricted to the draft vocabulary). Step 0 pairs f_p with the embedding of x_{p+1}
and learns the target's distribution l_{p+1} (the token after next). Step k feeds the
head's own step-(k-1) output back with the embedding of x_{p+1+k}, learning l_{p+1+k},
at RoPE position p + k: exactly what a chain of depth k sees while drafting. Its query
reads step-0 keys causally and, from each later step, only its own position's key
(`ttt_mask`). Loss: soft cross-entropy to the target distribution, weighted 0.8^k, on
assistant tokens whose target argmax is in the draft vocabulary.
"""

from __future__ import annotations

import dataclasses
from collections import Counter
from collections.abc import Iterable

import jax
import jax.numpy as jnp
import numpy as np
import optax
from flax import nnx

from resps_jax.models.eagle3 import Eagle3Head


def ttt_mask(length: int, step: int, num_steps: int) -> jax.Array:
    """[T, num_steps*T] visibility for the queries of `step`; keys of step s sit at s*T..s*T+T-1."""
    query = jnp.arange(length)[:, None]  # [T, 1]
    slot = jnp.arange(num_steps * length)[None, :]  # [1, S]
    key_step, key_pos = slot // length, slot % length
    causal_prefix = (key_step == 0) & (key_pos <= query)
    own_diagonal = (key_step >= 1) & (key_step <= step) & (key_pos == query)
    return causal_prefix | own_diagonal


def build_draft_vocab(assistant_tokens: Iterable[int], vocab_size: int, draft_vocab_size: int) -> np.ndarray:
    """d2t for the `draft_vocab_size` most frequent assistant tokens (ascending target ids).

    If the data has fewer distinct tokens than asked for (EAGLE issue #241 crashes there),
    the lowest unused target ids fill the rest, so the map is always complete.
    """
    if draft_vocab_size > vocab_size:
        raise ValueError(f"draft vocabulary {draft_vocab_size} > target vocabulary {vocab_size}")
    counts = Counter(int(t) for t in assistant_tokens)
    chosen = [t for t, _ in sorted(counts.items(), key=lambda kv: (-kv[1], kv[0]))[:draft_vocab_size]]
    if len(chosen) < draft_vocab_size:
        taken = set(chosen)
        chosen += [t for t in range(vocab_size) if t not in taken][: draft_vocab_size - len(chosen)]
    used = np.sort(np.asarray(chosen, np.int64))
    return used - np.arange(draft_vocab_size)


@dataclasses.dataclass(frozen=True)
class TTTConfig:
    num_steps: int = 7
    step_decay: float = 0.8


def shift_left(x: jax.Array, by: int) -> jax.Array:
    """x[:, by:] padded with zeros at the end to keep the length (axis 1)."""
    if by == 0:
        return x
    pad = [(0, 0)] * x.ndim
    pad[1] = (0, by)
    return jnp.pad(x[:, by:], pad)


def ttt_loss(
    head: Eagle3Head,
    embed_table: jax.Array,  # [V, H] the target's embeddings (frozen)
    tokens: jax.Array,  # [B, T] int32
    taps: jax.Array,  # [B, T, 3H]
    target_logits: jax.Array,  # [B, T, Vd] the target's logits restricted to the draft vocab
    target_in_vocab: jax.Array,  # [B, T] bool: target argmax at p is a draft-vocab token
    loss_mask: jax.Array,  # [B, T] bool: token p is an assistant token (and not padding)
    cfg: TTTConfig,
) -> tuple[jax.Array, dict[str, jax.Array]]:
    batch, length = tokens.shape
    capacity = cfg.num_steps * length
    cache = head.new_cache(batch, capacity, taps.dtype)
    positions = jnp.broadcast_to(jnp.arange(length, dtype=jnp.int32), (batch, length))
    hidden = taps
    total = jnp.float32(0.0)
    metrics = {}
    for k in range(cfg.num_steps):
        embeds = jnp.take(embed_table, shift_left(tokens, 1 + k), axis=0)  # x_{p+1+k}
        cache = cache.with_lengths(jnp.full((batch,), k * length, jnp.int32))
        mask = jnp.broadcast_to(ttt_mask(length, k, cfg.num_steps), (batch, length, capacity))
        hidden, cache = head(embeds, hidden, positions + k, cache, None, mask=mask)
        log_q = jax.nn.log_softmax(head.logits(hidden), axis=-1)  # [B, T, Vd]
        p = jax.nn.softmax(shift_left(target_logits, 1 + k).astype(jnp.float32), axis=-1)
        weight = (shift_left(loss_mask, 2 + k) & shift_left(target_in_vocab, 1 + k)).astype(jnp.float32)
        count = jnp.maximum(weight.sum(), 1.0)
        ce = -(p * log_q).sum(-1)
        step_loss = (ce * weight).sum() / count
        agree = (jnp.argmax(log_q, -1) == jnp.argmax(p, -1)).astype(jnp.float32)
        metrics[f"acc{k}"] = (agree * weight).sum() / count
        total = total + (cfg.step_decay**k) * step_loss
    metrics["loss"] = total
    return total, metrics


def lr_schedule(peak_lr: float, warmup_steps: int, total_steps: int) -> optax.Schedule:
    """Linear warm-up to peak_lr, then cosine decay to 0.1x by total_steps, indexed by the
    optimizer's own update count (0 for a new optimizer, whatever step the head is at)."""
    return optax.warmup_cosine_decay_schedule(
        0.0, peak_lr, max(1, warmup_steps), max(total_steps, warmup_steps + 1), end_value=peak_lr * 0.1
    )


def make_optimizer(schedule: optax.Schedule, clip: float = 0.5) -> optax.GradientTransformation:
    """AdamW (0.9, 0.95, no weight decay) on the given learning-rate schedule, global-norm clip."""
    return optax.chain(optax.clip_by_global_norm(clip), optax.adamw(schedule, b1=0.9, b2=0.95, weight_decay=0.0))


def make_train_step(graphdef, buffers, tx: optax.GradientTransformation, cfg: TTTConfig):
    """A jitted (params, opt_state, batch) -> (params, opt_state, metrics) over split head state."""

    def loss_fn(params, embed_table, batch):
        head = nnx.merge(graphdef, params, buffers)
        return ttt_loss(head, embed_table, *batch, cfg)

    @jax.jit
    def train_step(params, opt_state, embed_table, batch):
        (_, metrics), grads = jax.value_and_grad(loss_fn, has_aux=True)(params, embed_table, batch)
        updates, opt_state = tx.update(grads, opt_state, params)
        return optax.apply_updates(params, updates), opt_state, metrics

    @jax.jit
    def eval_step(params, embed_table, batch):
        return loss_fn(params, embed_table, batch)[1]

    return train_step, eval_step

