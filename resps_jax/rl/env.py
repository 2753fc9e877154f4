"""The MDP around the engine (Algorithm 2): one episode is one turn, one step is one interval.

The engine runs a turn, asking the policy for an action every N steps (N = 10 in
training, 30 in evaluation) with the target's features at the last committed token as
the state; state, action and caches start fresh each turn. The reward of an interval is
its accepted tokens per second, drafting and the policy call included (Eq. 5 over the
whole interval), divided by plain decoding's tokens per second measured at start-up, so
rewards read as speed-ups over AR (a constant scale: the optimal policy is unchanged).
`modeled` replaces the wall clock by tokens / (steps x the action's step cost in AR steps),
each cost measured once at start-up: a noise-free reward for shared or noisy machines.
"""

from __future__ import annotations

import dataclasses
import time
from collections.abc import Callable, Sequence

import numpy as np

from resps_jax.decoding.engine import GenerationConfig, GenerationResult, SpeculativeEngine
from resps_jax.decoding.policy import IntervalRecord, Policy, fixed_action
from resps_jax.errors import UserError

REWARDS = ("measured", "modeled")


@dataclasses.dataclass(frozen=True)
class StepCosts:
    """Seconds per plain AR token, each action's seconds per step in AR steps, and the tokens
    per step each action emitted in the same timed runs (the adaptive baselines' calibration;
    empty in policy checkpoints written before it was recorded)."""

    ar_seconds: float
    relative: tuple[float, ...]
    tokens_per_step: tuple[float, ...] = ()


def measure_step_costs(spec: SpeculativeEngine, prompt_ids: list[int], steps: int = 24, rounds: int = 3,
                       cache_len: int | None = None) -> StepCosts:
    """Time plain AR and every action on one prompt in interleaved rounds (after a compile
    pass); each cost is the median over rounds of the action's time over the same round's AR.

    Timing AR once and then each action in turn (best of a few) let the machine's drift land
    between the two: four such start-ups (same engine and actions) read
    `ar` at 0.85-1.04 AR steps and 16/4/4 at 2.37-2.99. A ratio within one round cancels slow
    drift, and the median drops a round that a burst of other work hit: the worst spread over
    three calibrations fell from 1.30 to 1.19 (benchmarks/probes/step_cost_spread.py).

    No EOS stops a timed run, so every round decodes the same number of steps. Pass the run's
    own `cache_len`: attention cost grows with the cache, and measuring at the run's length
    also compiles every executable the run will use, before any timing.
    """
    per_round = [_one_round(spec, prompt_ids, steps, cache_len) for _ in range(rounds + 1)][1:]  # first compiles
    ar_seconds = [ar for ar, _, _ in per_round]  # [rounds]
    ratios = np.array([[c / ar for c in action_seconds] for ar, action_seconds, _ in per_round])  # [rounds, A]
    tokens = np.array([t for _, _, t in per_round])  # [rounds, A]
    return StepCosts(float(np.median(ar_seconds)), tuple(float(r) for r in np.median(ratios, axis=0)),
                     tuple(float(t) for t in np.median(tokens, axis=0)))


def _one_round(spec: SpeculativeEngine, prompt_ids: list[int], steps: int,
               cache_len: int | None) -> tuple[float, list[float], list[float]]:
    """Seconds per plain AR token, then each action's seconds per steady step and tokens per
    step, back to back."""
    engine = spec.engine
    full = _timed(lambda: engine.generate(prompt_ids, GenerationConfig(max_new_tokens=steps + 1, cache_len=cache_len), ()))
    prefill = _timed(lambda: engine.generate(prompt_ids, GenerationConfig(max_new_tokens=1, cache_len=cache_len), ()))
    ar = max(full - prefill, 1e-9) / steps
    action_seconds, action_tokens = [], []
    for index in range(len(spec.actions)):
        result = spec.generate(prompt_ids, GenerationConfig(max_new_tokens=4 * steps, cache_len=cache_len), (),
                               policy=fixed_action(index), interval=steps)
        action_seconds.append(steady_seconds_per_step(result.intervals))
        action_tokens.append(result.new_tokens / max(1, result.steps))
    return ar, action_seconds, action_tokens


def steady_seconds_per_step(intervals: Sequence[IntervalRecord]) -> float:
    """Seconds per step past the first interval, which also runs the head over the whole prompt
    (its catch-up after prefill): with it, 4/2/2 measured 2.10 AR steps where training intervals
    ran at about 1.77."""
    later = intervals[1:] or intervals
    return sum(r.seconds for r in later) / max(1, sum(r.steps for r in later))


def _timed(fn: Callable[[], object]) -> float:
    start = time.perf_counter()
    fn()
    return time.perf_counter() - start


def interval_rewards(result: GenerationResult, mode: str, costs: StepCosts) -> list[float]:
    """One reward per interval of a turn, in AR speed-up units."""
    if mode not in REWARDS:
        raise UserError(f"rl.reward {mode!r}: expected one of {', '.join(REWARDS)}")
    rewards = []
    for r in result.intervals:
        if mode == "measured":
            rewards.append(r.tokens / max(r.seconds, 1e-9) * costs.ar_seconds)
        else:
            rewards.append(r.tokens / max(r.steps * costs.relative[r.action], 1e-9))
    return rewards


@dataclasses.dataclass
class Turn:
    result: GenerationResult
    rewards: list[float]


def run_turn(spec: SpeculativeEngine, prompt_ids: list[int], gen: GenerationConfig, eos: tuple[int, ...],
             policy: Policy, interval: int, reward: str, costs: StepCosts) -> Turn:
    """One episode: decode the turn with `policy` deciding every `interval` steps; rewards per interval."""
    result = spec.generate(prompt_ids, gen, eos, policy=policy, interval=interval)
    return Turn(result, interval_rewards(result, reward, costs))


def action_histogram(actions: Sequence[Sequence[int]], action_set: Sequence[tuple[int, int, int]]) -> list[int]:
    counts = [0] * len(action_set)
    for a in actions:
        counts[action_set.index(tuple(a))] += 1
    return counts
