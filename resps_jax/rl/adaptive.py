"""Training-free choosers, the baselines a learned policy has to beat.

Production engines adapt speculation without training: SGLang's adaptive speculation keeps a
running mean of the accepted length and moves between pre-built tiers, and BanditSpec runs a
bandit (UCB) over configurations. Both are here as engine policies over the same action set
and interval machinery as Re-SpS, so `evaluate` compares them on one engine:

- `EmaChooser`: an exponential moving average of how much better or worse the running turn
  drafts than calibration did, which rescales every action's calibrated tokens per step; the
  action with the highest predicted tokens per modeled second is taken, with hysteresis.
- `UcbChooser`: UCB1 within a turn, the reward of an interval being its tokens per modeled
  second (tokens / (steps x the action's step cost in AR steps)), each arm starting from one
  pseudo-pull at its calibrated speed (with 3-10 intervals a turn, a cold start would spend the
  turn trying arms).
- `NgramElseTree`: vLLM's fallback between drafters, the prompt-lookup chain where the context
  matches earlier text, else the head's tree (it reads the context, not the interval records).

`ema` and `ucb` are engine policies (decoding/policy.py) that read only what the engine reports after
each interval (`observe`), never the target's features, and start afresh every turn (the
engine calls `reset` when a turn begins). The
calibration (step cost and tokens per step of every action) comes from
`rl.env.measure_step_costs` on a training prompt.
"""

from __future__ import annotations

import dataclasses
import math
from collections.abc import Sequence

import numpy as np

from resps_jax.decoding.policy import IntervalRecord
from resps_jax.errors import UserError

# The methods `evaluate` runs and `report` orders; this module imports no JAX at load, so
# both can name them before JAX starts.
ADAPTIVE_METHODS = ("ema", "ucb", "ngram_else_tree")


@dataclasses.dataclass(frozen=True)
class Calibration:
    """Each action's step cost in AR steps and tokens per step, measured once on this machine."""

    relative_cost: tuple[float, ...]
    tokens_per_step: tuple[float, ...]

    def __post_init__(self):
        if len(self.relative_cost) != len(self.tokens_per_step) or not self.relative_cost:
            raise UserError("adaptive calibration: one step cost and one tokens-per-step value per action")

    def check(self, actions: Sequence[tuple[int, int, int]]) -> list[tuple[int, int, int]]:
        """`actions` as a list, refused when this calibration measured another number of them."""
        if len(actions) != len(self.relative_cost):
            raise UserError(f"adaptive calibration has {len(self.relative_cost)} actions, the set {len(actions)}")
        return list(actions)

    @property
    def speeds(self) -> np.ndarray:
        """Calibrated tokens per modeled second (AR = 1) of every action, [A]."""
        return np.asarray(self.tokens_per_step) / np.maximum(np.asarray(self.relative_cost), 1e-9)


class EmaChooser:
    """SGLang-style adaptive speculation over an action set.

    `ratio` is a running mean of (accepted drafts per step) / (the calibrated accepted drafts
    per step) of the actions taken this turn: 1 where the turn drafts as calibration did,
    above where it drafts better. Every action's predicted tokens per step is then
    1 + ratio x (calibrated tokens per step - 1), its predicted speed that over its step cost.
    The choice moves only when another action is predicted `margin` faster (hysteresis, so
    noise in one interval does not flip it). An `ar` interval teaches nothing about drafting,
    so there the ratio relaxes toward 1 and a later interval tries a tree again.
    """

    wants_context = False  # a Policy (decoding/policy.py) that reads only the interval records

    def __init__(self, actions: Sequence[tuple[int, int, int]], calibration: Calibration, decay: float = 0.5,
                 margin: float = 0.05):
        if not 0.0 < decay <= 1.0:
            raise UserError(f"ema decay {decay}: expected 0 < decay <= 1")
        self.actions = calibration.check(actions)
        self.calibration = calibration
        self.decay = decay
        self.margin = margin
        from resps_jax.decoding.action import Action

        # a step emits at most its longest draft (d + 1 head levels, or the chain's L) plus the bonus
        self.most_tokens = np.asarray([Action(*a).longest_draft + 1 for a in self.actions], np.float64)  # [A]
        self.reset()

    def reset(self) -> None:
        self.ratio = 1.0
        self.current = int(np.argmax(self.calibration.speeds))

    def predicted_speeds(self) -> np.ndarray:
        tokens = 1.0 + self.ratio * (np.asarray(self.calibration.tokens_per_step) - 1.0)  # [A]
        tokens = np.minimum(tokens, self.most_tokens)
        return tokens / np.maximum(np.asarray(self.calibration.relative_cost), 1e-9)

    def decide(self, taps: np.ndarray, context_ids: Sequence[int] | None = None) -> int:
        del taps, context_ids  # training-free: the running turn's acceptance is its only signal
        return self.current

    def observe(self, record: IntervalRecord) -> None:
        index, tokens, steps, _ = record
        if steps <= 0:
            return
        expected = self.calibration.tokens_per_step[index] - 1.0
        if self.most_tokens[index] == 1 or expected <= 1e-6:  # `ar`: one token a step
            sample = 1.0  # nothing drafted: drift back to the calibrated prior
        else:
            sample = max(tokens / steps - 1.0, 0.0) / expected
        self.ratio = (1.0 - self.decay) * self.ratio + self.decay * sample
        speeds = self.predicted_speeds()
        best = int(np.argmax(speeds))
        if speeds[best] > (1.0 + self.margin) * speeds[self.current]:
            self.current = best


class UcbChooser:
    """BanditSpec-style UCB1 over the action set within a turn.

    Arm a's score is its mean reward plus `exploration` x sqrt(2 ln n / n_a), rewards in AR
    speed-up units (tokens / (steps x step cost)). Each arm starts with one pseudo-pull at its
    calibrated speed, so the first interval takes the calibrated best and exploration is
    spent where the turn's rewards leave the arms close.
    """

    wants_context = False  # a Policy (decoding/policy.py) that reads only the interval records

    def __init__(self, actions: Sequence[tuple[int, int, int]], calibration: Calibration, exploration: float = 0.5):
        self.actions = calibration.check(actions)
        self.calibration = calibration
        self.exploration = exploration
        self.reset()

    def reset(self) -> None:
        self.pulls = np.ones(len(self.actions))  # [A] the calibration's pseudo-pull
        self.totals = self.calibration.speeds.astype(np.float64).copy()  # [A]

    def scores(self) -> np.ndarray:
        n = self.pulls.sum()
        return self.totals / self.pulls + self.exploration * np.sqrt(2.0 * math.log(n) / self.pulls)

    def decide(self, taps: np.ndarray, context_ids: Sequence[int] | None = None) -> int:
        del taps, context_ids
        return int(np.argmax(self.scores()))

    def observe(self, record: IntervalRecord) -> None:
        index, tokens, steps, _ = record
        if steps <= 0:
            return
        self.pulls[index] += 1
        self.totals[index] += tokens / (steps * max(self.calibration.relative_cost[index], 1e-9))


def match_length(context_ids: Sequence[int], max_match: int = 3) -> int:
    """The longest suffix (up to `max_match` tokens) of the context that also ends at an earlier
    position: what the engine's prompt lookup (decoding/ngram.py) would match; 0 for none."""
    ids = np.asarray(context_ids, np.int64)  # [S]
    end = len(ids) - 1
    best = 0
    for n in range(1, min(max_match, end) + 1):
        windows = np.lib.stride_tricks.sliding_window_view(ids[:end], n)  # [end - n + 1, n]: ends before `end`
        if not np.any(np.all(windows == ids[end - n + 1 :], axis=1)):
            break
        best = n
    return best


class NgramElseTree:
    """vLLM's training-free rule between drafters: the prompt-lookup chain where the context
    has a match of at least `min_match` tokens, else the head's tree. The chain and the tree
    are the set's fastest of each kind by calibration (`ngram:L` alone, and a head tree
    without a chain). It reads the context (the engine copies it to the host before each
    decision) and nothing the interval reports."""

    wants_context = True

    def __init__(self, actions: Sequence[tuple[int, int, int]], calibration: Calibration, min_match: int = 1,
                 max_match: int = 3):
        from resps_jax.decoding.action import Action

        self.actions = [Action(*a) for a in calibration.check(actions)]
        self.calibration = calibration
        speeds = calibration.speeds
        chains = [i for i, a in enumerate(self.actions) if a.ngram and not a.uses_head]
        trees = [i for i, a in enumerate(self.actions) if a.uses_head and not a.ngram]
        if not chains or not trees:
            raise UserError("ngram_else_tree needs an `ngram:L` action and a head tree `TT,d,k` in the action set")
        self.chain = max(chains, key=lambda i: speeds[i])
        self.tree = max(trees, key=lambda i: speeds[i])
        self.min_match, self.max_match = min_match, max_match

    def reset(self) -> None:
        pass

    def decide(self, taps: np.ndarray, context_ids: Sequence[int] | None = None) -> int:
        del taps
        found = match_length(context_ids or [], self.max_match)
        return self.chain if found >= self.min_match else self.tree

    def observe(self, record: IntervalRecord) -> None:
        pass


def make_chooser(method: str, actions: Sequence[tuple[int, int, int]], calibration: Calibration):
    """'ema', 'ucb' or 'ngram_else_tree' -> a fresh chooser over `actions`."""
    if method == "ema":
        return EmaChooser(actions, calibration)
    if method == "ucb":
        return UcbChooser(actions, calibration)
    if method == "ngram_else_tree":
        return NgramElseTree(actions, calibration)
    raise UserError(f"adaptive method {method!r}: expected one of {', '.join(ADAPTIVE_METHODS)}")
