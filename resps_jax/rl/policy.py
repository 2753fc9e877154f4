"""The Re-SpS actor-critic: separate MLPs over the target's tapped features, and their normaliser.

Stable-Baselines3's MlpPolicy is what the paper ran, so its shape is the reference:
separate actor and critic towers ([128, 128] by default), tanh, orthogonal init with gain
sqrt(2) in hidden layers, 0.01 on the action logits and 1 on the value. The state is the
target's three tapped features at the last committed token (concatenated, the paper; or
averaged, the paper's code), never truncated.

Llama residual streams carry a few dimensions of very large magnitude (hundreds against
~1 elsewhere), which saturate the first tanh layer and drown every other direction; the
observations are therefore normalised with a running mean and variance (SB3's
VecNormalize: clip at 10), kept with the policy in its checkpoint.
"""

from __future__ import annotations

import dataclasses
import math
from collections.abc import Sequence
from functools import partial

import jax
import jax.numpy as jnp
import numpy as np
from flax import nnx

STATE_MODES = ("concat", "mean", "text")  # text: a sentence embedding of the context (rl/text_state.py)
OBS_CLIP = 10.0


def state_features(taps: np.ndarray, mode: str) -> np.ndarray:
    """The policy's state from taps [3H]: all of it (concat) or the mean of the three layers [H]."""
    taps = np.asarray(taps, np.float32).reshape(-1)
    if mode == "concat":
        return taps
    if mode == "mean":
        return taps.reshape(3, -1).mean(0)
    if mode == "text":
        raise ValueError("the text state is made from the decoded context, not the taps (Agent.decide)")
    raise ValueError(f"state mode {mode!r}: expected one of {STATE_MODES}")


def state_dim(hidden_size: int, mode: str) -> int:
    if mode == "text":
        from resps_jax.rl.text_state import TEXT_DIM

        return TEXT_DIM
    return 3 * hidden_size if mode == "concat" else hidden_size


class MLP(nnx.Module):
    """tanh hidden layers, then a linear output with its own orthogonal gain."""

    def __init__(self, in_dim: int, hidden: Sequence[int], out_dim: int, out_gain: float, rngs: nnx.Rngs):
        sizes = [in_dim, *hidden]
        ortho = nnx.initializers.orthogonal
        self.hidden = nnx.List([
            nnx.Linear(a, b, kernel_init=ortho(math.sqrt(2)), bias_init=nnx.initializers.zeros, rngs=rngs)
            for a, b in zip(sizes, sizes[1:])
        ])
        self.out = nnx.Linear(sizes[-1], out_dim, kernel_init=ortho(out_gain), bias_init=nnx.initializers.zeros, rngs=rngs)

    def __call__(self, x: jax.Array) -> jax.Array:
        for layer in self.hidden:
            x = jnp.tanh(layer(x))
        return self.out(x)


class ActorCritic(nnx.Module):
    """obs [B, D] (normalised) -> (logits [B, A], value [B])."""

    def __init__(self, obs_dim: int, num_actions: int, hidden: Sequence[int] = (128, 128), *, rngs: nnx.Rngs):
        self.actor = MLP(obs_dim, hidden, num_actions, 0.01, rngs)
        self.critic = MLP(obs_dim, hidden, 1, 1.0, rngs)

    def __call__(self, obs: jax.Array) -> tuple[jax.Array, jax.Array]:
        return self.actor(obs), self.critic(obs)[..., 0]


@dataclasses.dataclass
class RunningNorm:
    """Running mean/variance of observations (parallel-moments update, as SB3's RunningMeanStd)."""

    mean: np.ndarray
    var: np.ndarray
    count: float = 1e-4

    @classmethod
    def create(cls, dim: int) -> RunningNorm:
        return cls(np.zeros(dim, np.float64), np.ones(dim, np.float64))

    def update(self, batch: np.ndarray) -> None:
        batch = np.asarray(batch, np.float64).reshape(-1, self.mean.shape[0])
        b_mean, b_var, b_count = batch.mean(0), batch.var(0), batch.shape[0]
        delta = b_mean - self.mean
        total = self.count + b_count
        m2 = self.var * self.count + b_var * b_count + delta**2 * self.count * b_count / total
        self.mean = self.mean + delta * b_count / total
        self.var = m2 / total
        self.count = total

    def __call__(self, obs: np.ndarray) -> np.ndarray:
        scaled = (np.asarray(obs, np.float64) - self.mean) / np.sqrt(self.var + 1e-8)
        return np.clip(scaled, -OBS_CLIP, OBS_CLIP).astype(np.float32)

    def to_json(self) -> dict:
        return {"mean": self.mean.tolist(), "var": self.var.tolist(), "count": float(self.count)}

    @classmethod
    def from_json(cls, data: dict) -> RunningNorm:
        return cls(np.asarray(data["mean"], np.float64), np.asarray(data["var"], np.float64), float(data["count"]))


class Identity:
    """The no-normalisation ablation: same interface as RunningNorm, observations unchanged."""

    def update(self, batch: np.ndarray) -> None:
        pass

    def __call__(self, obs: np.ndarray) -> np.ndarray:
        return np.asarray(obs, np.float32)

    def to_json(self) -> dict:
        return {}


def _act(graphdef, params, obs, key, temperature, greedy):
    """One decision: obs [D] -> (the next key, [action, log-prob at temperature 1, value]).

    Sampling at `temperature` (1.5 for max-entropy inference) or argmax when `greedy`;
    the log-prob is the training distribution's (temperature 1), what PPO's ratio needs.
    The key is split here and the three results come back as one array, so a decision is
    one dispatch and one device-to-host copy (the policy's overhead is host round trips).
    """
    key, sample_key = jax.random.split(key)
    model = nnx.merge(graphdef, params)
    logits, value = model(obs[None])
    logits, value = logits[0], value[0]
    sampled = jax.random.categorical(sample_key, logits / temperature)
    action = jnp.where(greedy, jnp.argmax(logits), sampled)
    logp = jax.nn.log_softmax(logits)[action]
    return key, jnp.stack([action.astype(jnp.float32), logp, value])


def make_act(graphdef):
    """The jitted decision function (graphdef static); it compiles once per policy shape."""
    return jax.jit(partial(_act, graphdef))


def _value(graphdef, params, obs):
    return nnx.merge(graphdef, params)(obs[None])[1][0]


def make_value(graphdef):
    return jax.jit(partial(_value, graphdef))
