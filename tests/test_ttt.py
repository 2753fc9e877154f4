"""EAGLE-3 training-time test: attention pattern, draft vocabulary, and that training learns."""

from __future__ import annotations

import jax
import jax.numpy as jnp
import numpy as np
from flax import nnx

from resps_jax.models.config import LlamaConfig
from resps_jax.models.eagle3 import Buffer, Eagle3Config, Eagle3Head
from resps_jax.models.eagle3_train import (
    TTTConfig,
    build_draft_vocab,
    lr_schedule,
    make_optimizer,
    make_train_step,
    ttt_mask,
)


def test_ttt_mask_is_causal_then_own_position_only():
    """Facts file section 5: step-0 keys causally, then only the same position's key per later step."""
    t, steps = 5, 4
    for step in range(steps):
        mask = np.asarray(ttt_mask(t, step, steps))
        assert mask.shape == (t, steps * t)
        for p in range(t):
            for s in range(steps):
                for j in range(t):
                    expected = (j <= p) if s == 0 else (s <= step and j == p)
                    assert mask[p, s * t + j] == expected, (step, p, s, j)
    # step 2, query 3: keys 0..3 of step 0, key 3 of steps 1 and 2, nothing of step 3
    row = np.asarray(ttt_mask(t, 2, steps))[3].reshape(steps, t)
    np.testing.assert_array_equal(row, [[1, 1, 1, 1, 0], [0, 0, 0, 1, 0], [0, 0, 0, 1, 0], [0, 0, 0, 0, 0]])


def test_draft_vocab_takes_most_frequent_and_fills_when_short():
    d2t = build_draft_vocab([5, 5, 5, 9, 9, 2], vocab_size=20, draft_vocab_size=2)
    np.testing.assert_array_equal(np.arange(2) + d2t, [5, 9])
    d2t = build_draft_vocab([7, 7, 3], vocab_size=10, draft_vocab_size=5)  # only 2 distinct tokens
    used = np.arange(5) + d2t
    assert set(used) >= {3, 7} and len(set(used)) == 5 and list(used) == sorted(used)


def test_training_reduces_loss_and_raises_agreement():
    """A random head learns a fixed random 'target' on a small batch (the update actually works)."""
    target = LlamaConfig(vocab_size=64, hidden_size=32, intermediate_size=64, num_layers=8, num_heads=4, num_kv_heads=2, head_dim=8)
    cfg = Eagle3Config.for_target(target, draft_vocab_size=48)
    head = Eagle3Head(cfg, rngs=nnx.Rngs(0))
    head.d2t[...] = jnp.zeros((48,), jnp.int32)
    rng = np.random.RandomState(0)
    b, t = 4, 16
    tokens = jnp.asarray(rng.randint(0, 64, (b, t)), jnp.int32)
    taps = jnp.asarray(rng.normal(size=(b, t, 96)), jnp.float32)
    target_logits = jnp.asarray(3.0 * rng.normal(size=(b, t, 48)), jnp.float32)
    in_vocab = jnp.ones((b, t), bool)
    loss_mask = jnp.asarray(rng.rand(b, t) > 0.2)
    embed = jnp.asarray(rng.normal(size=(64, 32)), jnp.float32)
    batch = (tokens, taps, target_logits, in_vocab, loss_mask)

    graphdef, params, buffers = nnx.split(head, nnx.Param, Buffer)
    tx = make_optimizer(lr_schedule(3e-3, warmup_steps=5, total_steps=150))
    train_step, eval_step = make_train_step(graphdef, buffers, tx, TTTConfig(num_steps=3))
    opt_state = tx.init(params)
    before = eval_step(params, embed, batch)
    for _ in range(150):
        params, opt_state, metrics = train_step(params, opt_state, embed, batch)
    after = eval_step(params, embed, batch)
    assert float(after["loss"]) < 0.5 * float(before["loss"])
    assert float(after["acc0"]) > float(before["acc0"]) + 0.3
    assert set(metrics) == {"loss", "acc0", "acc1", "acc2"}
    assert train_step._cache_size() == 1
    jax.block_until_ready(params)
