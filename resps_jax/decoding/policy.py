"""The seam between the speculative engine and whatever chooses its actions.

`SpeculativeEngine.generate(..., policy=P, interval=N)` decodes in intervals of N steps.
Before each interval it asks `P.decide` for an action index; after it, it tells
`P.observe` what the interval did (an `IntervalRecord`); when a turn begins it calls
`P.reset`. That is all the engine knows of a policy: the learned agent (`rl.agent.Agent`),
the training-free choosers (`rl.adaptive`) and a plain function (`FunctionPolicy`) meet it
the same way, and `decoding/` imports nothing from `rl/`.

The engine agrees each decision across processes (one broadcast of process 0's index) before
it runs the interval, and the record it sends to `observe` carries that agreed index, so a
policy that learns from its choices records the action that actually ran.
"""

from __future__ import annotations

from collections.abc import Callable, Sequence
from typing import NamedTuple, Protocol, runtime_checkable

import numpy as np


class IntervalRecord(NamedTuple):
    """What one interval did: the reward signal of a learned policy and the feedback of an
    adaptive one. `seconds` is its wall time, the policy's own decision included."""

    action: int  # index into the engine's action set (agreed across processes)
    tokens: int  # tokens committed, bonus included
    steps: int  # target forwards
    seconds: float


@runtime_checkable
class Policy(Protocol):
    """A chooser of actions for the speculative engine."""

    # True when `decide` needs the decoded context ids (prompt + output so far); the engine
    # then copies them to the host before each decision, which a taps-only policy never pays.
    wants_context: bool

    def reset(self) -> None:
        """A new turn begins (an adaptive chooser forgets the last turn's acceptance)."""

    def decide(self, taps: np.ndarray, context_ids: Sequence[int] | None = None) -> int:
        """taps [3H]: the target's tapped hidden states at the last committed token (the
        paper's state) -> an index into the engine's action set."""

    def observe(self, record: IntervalRecord) -> None:
        """What the interval that followed the last decision did."""


class FunctionPolicy:
    """A plain function of the taps as a policy: no context, no feedback, no per-turn state."""

    wants_context = False

    def __init__(self, choose: Callable[[np.ndarray], int]):
        self.choose = choose

    def reset(self) -> None:
        pass

    def decide(self, taps: np.ndarray, context_ids: Sequence[int] | None = None) -> int:
        return int(self.choose(taps))

    def observe(self, record: IntervalRecord) -> None:
        pass


def fixed_action(index: int) -> FunctionPolicy:
    """The policy that always takes action `index` (warm-up and step-cost calibration)."""
    return FunctionPolicy(lambda _taps: index)


def as_policy(policy: Policy | Callable[[np.ndarray], int] | None) -> Policy | None:
    """A Policy as given, a plain function of the taps wrapped, None kept (a static action)."""
    if policy is None or isinstance(policy, Policy):
        return policy
    if callable(policy):
        return FunctionPolicy(policy)
    raise TypeError(f"a policy needs decide/observe/reset or to be a function of the taps, not {type(policy).__name__}")
