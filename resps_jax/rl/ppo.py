"""Clipped PPO and max-entropy PPO over a fixed-size buffer, as one jitted update.

The paper ran Stable-Baselines3's PPO (Table 4), so its semantics are the reference:
loss = clipped surrogate - ent_coef * entropy + vf_coef * MSE(returns, values) (no 0.5 on
the value term), advantages normalised per minibatch, Adam eps 1e-5 behind a global-norm
clip of 0.5, n_steps 64 -> 2 minibatches of 32 x 4 epochs, reshuffled every epoch. The
whole update (epochs x minibatches) is one `lax.scan` inside one `jax.jit`, as purejaxrl
does, so it compiles once for the buffer size. Advantages come from GAE over the
intervals of a turn (an episode is one turn); the paper code's form, where every
transition is terminal (a contextual bandit: advantage = r - V), is `bandit=True`.
"""

from __future__ import annotations

import dataclasses
from functools import partial

import jax
import jax.numpy as jnp
import numpy as np
import optax
from flax import nnx

VARIANTS = ("maxent", "standard")


@dataclasses.dataclass(frozen=True)
class PPOConfig:
    lr: float = 3e-4
    n_steps: int = 64
    batch_size: int = 32
    epochs: int = 4
    clip: float = 0.2
    gamma: float = 0.95
    gae_lambda: float = 0.9
    ent_coef: float = 0.1
    vf_coef: float = 0.5
    max_grad_norm: float = 0.5
    bandit: bool = False  # every transition terminal (the paper code's form)
    # SB3's target_kl: the update stops taking gradient steps once a minibatch's approximate KL
    # to the rollout policy passes 1.5 x target_kl (0: never stops, Table 4's setting).
    target_kl: float = 0.0

    def __post_init__(self):
        if self.n_steps % self.batch_size:
            raise ValueError(f"n_steps {self.n_steps} must be a multiple of batch_size {self.batch_size}")


def variant_defaults(variant: str) -> dict:
    """Table 4: max-entropy PPO (the paper's default) or standard PPO, as PPOConfig fields
    plus the inference temperature."""
    if variant == "maxent":
        return dict(gamma=0.95, gae_lambda=0.9, ent_coef=0.1, temperature=1.5)
    if variant == "standard":
        return dict(gamma=0.99, gae_lambda=0.95, ent_coef=0.01, temperature=1.0)
    raise ValueError(f"PPO variant {variant!r}: expected one of {VARIANTS}")


def make_optimizer(cfg: PPOConfig) -> optax.GradientTransformation:
    return optax.chain(optax.clip_by_global_norm(cfg.max_grad_norm), optax.adam(cfg.lr, eps=1e-5))


def gae(rewards: np.ndarray, values: np.ndarray, dones: np.ndarray, last_value: float, gamma: float,
        lam: float) -> tuple[np.ndarray, np.ndarray]:
    """(advantages, returns) [n] by generalised advantage estimation (SB3's recursion).

    dones[t] marks transition t as the last of its episode; the transition after the
    buffer's last one is valued `last_value` (0 when the buffer ends an episode).
    """
    n = len(rewards)
    adv = np.zeros(n, np.float32)
    running = 0.0
    for t in reversed(range(n)):
        next_value = last_value if t == n - 1 else values[t + 1]
        live = 1.0 - float(dones[t])
        delta = rewards[t] + gamma * next_value * live - values[t]
        running = delta + gamma * lam * live * running
        adv[t] = running
    return adv, adv + np.asarray(values, np.float32)


def ppo_loss(model, obs, actions, old_logp, advantages, returns, cfg: PPOConfig):
    logits, values = model(obs)
    logp_all = jax.nn.log_softmax(logits)
    logp = jnp.take_along_axis(logp_all, actions[:, None], axis=1)[:, 0]
    adv = (advantages - advantages.mean()) / (advantages.std() + 1e-8)
    ratio = jnp.exp(logp - old_logp)
    surrogate = jnp.minimum(ratio * adv, jnp.clip(ratio, 1 - cfg.clip, 1 + cfg.clip) * adv)
    pg_loss = -surrogate.mean()
    entropy = -(jnp.exp(logp_all) * logp_all).sum(-1).mean()
    vf_loss = ((returns - values) ** 2).mean()
    loss = pg_loss - cfg.ent_coef * entropy + cfg.vf_coef * vf_loss
    metrics = {
        "loss": loss, "pg_loss": pg_loss, "vf_loss": vf_loss, "entropy": entropy,
        "approx_kl": ((ratio - 1) - (logp - old_logp)).mean(),
        "clip_fraction": (jnp.abs(ratio - 1) > cfg.clip).mean(),
    }
    return loss, metrics


def _update(graphdef, tx, cfg: PPOConfig, params, opt_state, batch, key, lr_scale):
    """epochs x minibatches of PPO on batch = (obs, actions, old_logp, advantages, returns) [n_steps].

    `lr_scale` multiplies every parameter step (a traced scalar, so annealing never
    recompiles): Adam's step is linear in its learning rate, so this is CleanRL's linearly
    annealed rate without a second optimizer state layout (checkpoints stay compatible)."""
    n = cfg.n_steps
    n_mb = n // cfg.batch_size

    def minibatch_step(carry, rows):
        params, opt_state, stopped = carry
        mb = jax.tree.map(lambda x: x[rows], batch)

        def loss_fn(p):
            return ppo_loss(nnx.merge(graphdef, p), *mb, cfg)

        (_, metrics), grads = jax.value_and_grad(loss_fn, has_aux=True)(params)
        # the KL is measured before this minibatch's step, as SB3 does; once stopped, the
        # remaining minibatches of every epoch leave the parameters as they are (static shapes)
        if cfg.target_kl > 0:
            stopped = stopped | (metrics["approx_kl"] > 1.5 * cfg.target_kl)
        updates, new_opt_state = tx.update(grads, opt_state, params)
        updates = jax.tree.map(lambda u: u * lr_scale, updates)
        keep = lambda old, new: jax.tree.map(lambda o, u: jnp.where(stopped, o, u), old, new)  # noqa: E731
        params = keep(params, optax.apply_updates(params, updates))
        opt_state = keep(opt_state, new_opt_state)
        metrics["steps_taken"] = 1.0 - stopped.astype(jnp.float32)
        return (params, opt_state, stopped), metrics

    def epoch(carry, epoch_key):
        order = jax.random.permutation(epoch_key, n).reshape(n_mb, cfg.batch_size)
        return jax.lax.scan(minibatch_step, carry, order)

    carry = (params, opt_state, jnp.asarray(False))
    (params, opt_state, _), metrics = jax.lax.scan(epoch, carry, jax.random.split(key, cfg.epochs))
    steps_taken = metrics.pop("steps_taken").sum()  # gradient steps this update applied
    return params, opt_state, {**jax.tree.map(jnp.mean, metrics), "steps_taken": steps_taken}


def make_update(graphdef, tx: optax.GradientTransformation, cfg: PPOConfig):
    """The jitted update (params, opt_state, batch, key, lr_scale) -> (params, opt_state, metrics)."""
    return jax.jit(partial(_update, graphdef, tx, cfg), donate_argnums=(0, 1))
