"""Discrete tree actions (TT, d, k): the paper's set, a CPU set, and their validation.

The paper keeps the combinations with TT <= k**(d-1) (a tree of depth d and width k can
hold that many nodes): 177 of the 6 x 6 x 5 = 180. A grid also drops what our engine cannot
fill (TT above `max_tree_tokens(d, k)`, which no paper action reaches); an explicit list
with such a TT is refused by `validate_actions` instead.
"""

from __future__ import annotations

import itertools
from collections.abc import Iterable

from resps_jax.decoding.action import AR_ACTION, Action, format_action, max_tree_tokens, parse_actions, validate_actions

__all__ = ["AR_ACTION", "format_action", "Action", "action_grid", "config_actions", "feasible", "paper_actions", "parse_actions", "validate_actions"]

PAPER_TT = (32, 48, 64, 80, 96, 128)
PAPER_DEPTH = (3, 4, 5, 6, 7, 8)
PAPER_TOPK = (8, 12, 16, 20, 32)


def feasible(tt: int, d: int, k: int) -> bool:
    """The paper's filter, and a tree the engine can grow to TT tokens."""
    return tt <= k ** (d - 1) and tt <= max_tree_tokens(d, k)


def action_grid(tts: Iterable[int], depths: Iterable[int], topks: Iterable[int]) -> list[Action]:
    """Every feasible (TT, d, k), in TT-major order (the paper's index order)."""
    return [Action(tt, d, k) for tt, d, k in itertools.product(tts, depths, topks) if feasible(tt, d, k)]


def paper_actions() -> list[Action]:
    return action_grid(PAPER_TT, PAPER_DEPTH, PAPER_TOPK)


def config_actions(actions) -> list[Action]:
    """A config's action set: an explicit `list` ('TT,d,k;...') or `tt`/`depth`/`topk` grids."""
    if "list" in actions and actions.list:
        return parse_actions(actions.list)
    return validate_actions(action_grid(actions.tt, actions.depth, actions.topk))
