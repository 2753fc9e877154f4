"""The learning agent: policy + normaliser + optimizer + rollout buffer, and its checkpoint form.

It is one of the engine's policies (decoding/policy.py: `decide` target features -> action
index, `observe` what the interval did) and PPO's data collector. Decisions are recorded as they are made; when a turn ends its intervals
(tokens, steps, seconds) arrive from the engine, become rewards, and complete the
transitions. Updates run between turns, never inside a timed interval, on exactly
`n_steps` transitions (a fixed shape, so the update compiles once); transitions past
them wait for the next update.
"""

from __future__ import annotations

import dataclasses
from collections.abc import Sequence

import jax
import jax.numpy as jnp
import numpy as np
from flax import nnx

from resps_jax.decoding.policy import IntervalRecord
from resps_jax.distributed import agree_floats
from resps_jax.rl.policy import ActorCritic, Identity, RunningNorm, make_act, make_value, state_features
from resps_jax.rl.ppo import PPOConfig, gae, make_optimizer, make_update


@dataclasses.dataclass
class Transition:
    obs: np.ndarray  # [D] normalised state at decision time
    action: int
    logp: float
    value: float
    reward: float = 0.0
    done: bool = False

    def to_json(self) -> dict:
        return {"obs": self.obs.tolist(), "action": self.action, "logp": self.logp, "value": self.value,
                "reward": self.reward, "done": self.done}

    @classmethod
    def from_json(cls, d: dict) -> Transition:
        return cls(np.asarray(d["obs"], np.float32), int(d["action"]), float(d["logp"]), float(d["value"]),
                   float(d["reward"]), bool(d["done"]))


@dataclasses.dataclass(frozen=True)
class AgentConfig:
    obs_dim: int
    num_actions: int
    hidden: tuple[int, ...] = (128, 128)
    state: str = "concat"  # concat | mean of the three taps | text (a MiniLM embedding of the context)
    normalize: bool = True
    temperature: float = 1.5  # inference temperature (max-entropy PPO: 1.5)
    greedy: bool = False  # inference: argmax instead of sampling
    ppo: PPOConfig = PPOConfig()


class Agent:
    def __init__(self, cfg: AgentConfig, seed: int = 0):
        self.cfg = cfg
        model = ActorCritic(cfg.obs_dim, cfg.num_actions, cfg.hidden, rngs=nnx.Rngs(seed))
        self.graphdef, self.params = nnx.split(model)
        self.tx = make_optimizer(cfg.ppo)
        self.opt_state = self.tx.init(self.params)
        self.norm = RunningNorm.create(cfg.obs_dim) if cfg.normalize else Identity()
        self.key = jax.random.key(seed + 1)
        self.training = True
        self.buffer: list[Transition] = []
        self.pending: list[Transition] = []  # decisions of the running turn
        self.updates = 0
        self._act = make_act(self.graphdef)
        self._update = make_update(self.graphdef, self.tx, cfg.ppo)
        self.text_state = None  # the context encoder when cfg.state == "text" (use_tokenizer)

    @property
    def wants_context(self) -> bool:
        """True when decide needs the decoded context ids (the engine then passes them)."""
        return self.cfg.state == "text"

    def use_tokenizer(self, tokenizer) -> None:
        """Give a text-state agent its context encoder (the target's tokenizer decodes the ids)."""
        if self.wants_context and self.text_state is None:
            from resps_jax.rl.text_state import TextState

            self.text_state = TextState(tokenizer)

    def features(self, taps: np.ndarray, context_ids: Sequence[int] | None = None) -> np.ndarray:
        """The raw (unnormalised) state."""
        if not self.wants_context:
            return state_features(taps, self.cfg.state)
        if self.text_state is None:
            raise RuntimeError("a text-state agent needs use_tokenizer(tokenizer) before it decides")
        return self.text_state(list(context_ids or []))

    # ---------------------------------------------------------------- acting

    def decide(self, taps: np.ndarray, context_ids: Sequence[int] | None = None) -> int:
        """The engine's policy hook: the target's taps [3H] at the last committed token (or,
        for the text state, the context so far) -> action."""
        raw = self.features(taps, context_ids)
        if self.training:
            self.norm.update(raw[None])
        obs = self.norm(raw)
        temperature = 1.0 if self.training else self.cfg.temperature
        greedy = (not self.training) and self.cfg.greedy
        self.key, picked = self._act(self.params, obs, self.key, np.float32(temperature), np.bool_(greedy))
        action, logp, value = np.asarray(picked).tolist()
        if self.training:
            self.pending.append(Transition(obs, int(action), float(logp), float(value)))
        return int(action)

    def reset(self) -> None:
        """A turn begins: nothing to forget (a turn's decisions wait in `pending` for its rewards)."""

    def observe(self, record: IntervalRecord) -> None:
        """The engine ran `record.action`: process 0's choice, agreed across processes. Where
        this process had sampled another one, its transition takes the agreed action (and its
        log-prob), so every process learns from the same data."""
        if not self.training or not self.pending or self.pending[-1].action == record.action:
            return
        last = self.pending[-1]
        logits, _ = nnx.merge(self.graphdef, self.params)(jnp.asarray(last.obs)[None])
        last.action = int(record.action)
        last.logp = float(jax.nn.log_softmax(logits[0])[record.action])

    def end_turn(self, rewards: Sequence[float]) -> None:
        """Rewards of the turn's intervals, in decision order; the last ends the episode."""
        rewards = agree_floats(list(rewards))
        if len(rewards) != len(self.pending):
            raise RuntimeError(f"{len(rewards)} rewards for {len(self.pending)} decisions")
        for t, r in zip(self.pending, rewards):
            t.reward = float(r)
            t.done = self.cfg.ppo.bandit
        if self.pending:
            self.pending[-1].done = True
        self.buffer.extend(self.pending)
        self.pending = []

    # ---------------------------------------------------------------- learning

    def ready(self) -> bool:
        return len(self.buffer) >= self.cfg.ppo.n_steps

    def update(self, lr_scale: float = 1.0) -> dict[str, float]:
        """One PPO update on the first n_steps transitions of the buffer, every step scaled by
        `lr_scale` (an annealed learning rate: the trainer passes 1 - progress)."""
        cfg = self.cfg.ppo
        batch, self.buffer = self.buffer[: cfg.n_steps], self.buffer[cfg.n_steps :]
        rewards = np.asarray([t.reward for t in batch], np.float32)
        values = np.asarray([t.value for t in batch], np.float32)
        dones = np.asarray([t.done for t in batch])
        last_value = 0.0 if batch[-1].done else (self.buffer[0].value if self.buffer else 0.0)
        adv, returns = gae(rewards, values, dones, last_value, cfg.gamma, cfg.gae_lambda)
        arrays = (
            jnp.asarray(np.stack([t.obs for t in batch])), jnp.asarray([t.action for t in batch], jnp.int32),
            jnp.asarray([t.logp for t in batch], jnp.float32), jnp.asarray(adv), jnp.asarray(returns),
        )
        self.key, key = jax.random.split(self.key)
        self.params, self.opt_state, metrics = self._update(self.params, self.opt_state, arrays, key,
                                                             np.float32(lr_scale))
        self.updates += 1
        out = {k: float(v) for k, v in metrics.items()}
        out["reward_mean"] = float(rewards.mean())
        out["lr_scale"] = float(lr_scale)
        return out

    def probabilities(self, taps: np.ndarray, context_ids: Sequence[int] | None = None) -> np.ndarray:
        """Action probabilities at temperature 1 for a state (for reports and tests)."""
        obs = self.norm(self.features(taps, context_ids))
        logits, _ = nnx.merge(self.graphdef, self.params)(jnp.asarray(obs)[None])
        return np.asarray(jax.nn.softmax(logits[0]))

    def value_fn(self):
        return make_value(self.graphdef)

    def executables(self) -> dict[str, int]:
        return {"act": self._act._cache_size(), "update": self._update._cache_size()}

    # ---------------------------------------------------------------- checkpoint form

    def arrays(self) -> dict:
        return {"params": self.params, "opt_state": self.opt_state}

    def meta(self) -> dict:
        return {
            "obs_dim": self.cfg.obs_dim, "num_actions": self.cfg.num_actions, "hidden": list(self.cfg.hidden),
            "state": self.cfg.state, "normalize": self.cfg.normalize, "updates": self.updates,
            "norm": self.norm.to_json(), "key": np.asarray(jax.random.key_data(self.key)).tolist(),
            "buffer": [t.to_json() for t in self.buffer],
        }

    def restore(self, arrays: dict, meta: dict) -> None:
        self.params, self.opt_state = arrays["params"], arrays["opt_state"]
        self.updates = int(meta["updates"])
        if self.cfg.normalize:
            self.norm = RunningNorm.from_json(meta["norm"])
        # committed where the parameters live, as the key act returns is: an uncommitted key
        # would make the first act after a restore compile a second executable
        key = jax.random.wrap_key_data(jnp.asarray(meta["key"], jnp.uint32))
        self.key = jax.device_put(key, jax.tree.leaves(self.params)[0].sharding)
        self.buffer = [Transition.from_json(t) for t in meta["buffer"]]
