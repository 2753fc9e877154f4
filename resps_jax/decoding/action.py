"""What a decoding step drafts: the action type, its text syntax, and its validation.

An action is the head's tree limits (TT, d, k), an n-gram chain length L, or both:

    ar              no draft: one plain target step
    TT,d,k          the EAGLE-3 head's tree (TT tokens with the root, d expansions, top-k)
    ngram:L         a prompt-lookup chain of up to L tokens, no head pass at all
    TT,d,k+ngram:L  both, verified as one tree in one target forward

Every path to an action set (`generate --tree`, a config's `actions.list`, `evaluate`'s
`static:` methods, a policy checkpoint's saved set, the engine itself) comes through
`parse_actions` / `validate_actions`, so each check is made once and each error names
the action and what is allowed.
"""

from __future__ import annotations

from collections.abc import Sequence
from typing import NamedTuple

from resps_jax.errors import UserError

# Longest n-gram chain an action may ask for. A chain is one branch of the verified tree, so
# L + 1 rows join the target forward; past 16 rows verification is no longer near one step's
# price (benchmarks/verify_cost.py: T=16 costs ~1.5x T=1 on the kernels).
NGRAM_MAX = 16


class Action(NamedTuple):
    """One decoding action. tt = 1 (with d = k = 0) means no head tree; ngram = 0 no chain."""

    tt: int
    depth: int
    topk: int
    ngram: int = 0

    @property
    def uses_head(self) -> bool:
        """The head drafts a tree (and so must be kept in step with the committed text)."""
        return self.tt > 1

    @property
    def tree(self) -> tuple[int, int, int]:
        return (self.tt, self.depth, self.topk)

    @property
    def longest_draft(self) -> int:
        """The most drafted tokens one step can accept: the head's d + 1 levels or the chain's L."""
        return max(self.depth + 1 if self.uses_head else 0, self.ngram)

    @property
    def verify_rows(self) -> int:
        """Rows of the target forward at most: the head's TT (root included) plus the chain."""
        return self.tt + self.ngram


AR_ACTION = Action(1, 0, 0, 0)


def max_tree_tokens(depth: int, k: int) -> int:
    """The most tokens (root included) the head can place with `depth` expansions of top-`k`.

    The pool holds the root's k children plus k*k per expansion, and the tree is the root
    plus the best pooled nodes, so 1 + k + d*k*k. A larger TT cannot be filled: the verify
    would pad to TT with empty slots and pay for them every step.
    """
    return 1 + k + depth * k * k


def _ints(values: Sequence) -> bool:
    return all(isinstance(v, int) and not isinstance(v, bool) for v in values)


def validate_action(a: Sequence[int]) -> Action:
    """One action as (TT, d, k) or (TT, d, k, L), checked."""
    name = format_action(a) if len(a) in (3, 4) and _ints(a) else repr(list(a))
    if len(a) not in (3, 4) or not _ints(a):
        raise UserError(f"action {name} is not three integers (TT, d, k) or four (TT, d, k, L)")
    action = Action(*a)
    tt, d, k, chain = action
    if chain < 0 or chain > NGRAM_MAX:
        raise UserError(f"action {name}: the n-gram chain length L must be 1..{NGRAM_MAX} (got {chain})")
    if action.tree == AR_ACTION.tree:
        return action  # `ar` or `ngram:L`
    if tt < 2 or d < 1 or k < 1:
        raise UserError(f"invalid action (TT={tt}, d={d}, k={k}): need TT >= 2, d >= 1, k >= 1")
    if tt > max_tree_tokens(d, k):
        raise UserError(f"action (TT={tt}, d={d}, k={k}): depth {d} and top-k {k} grow at most "
                        f"{max_tree_tokens(d, k)} tokens (root included), so TT can be at most "
                        f"{max_tree_tokens(d, k)}; lower TT or raise d or k")
    return action


def validate_actions(actions: Sequence[Sequence[int]]) -> list[Action]:
    """A user-given action set, checked: non-empty, each action valid, no repeats."""
    if not actions:
        raise UserError("the action set is empty")
    out = [validate_action(a) for a in actions]
    if len(set(out)) != len(out):
        raise UserError("the action set repeats an action")
    return out


ALLOWED = f"'ar', 'TT,d,k', 'ngram:L' or 'TT,d,k+ngram:L' (L in 1..{NGRAM_MAX})"


def parse_action(text: str) -> Action:
    """'ar' | 'TT,d,k' | 'ngram:L' | 'TT,d,k+ngram:L' -> a validated Action."""
    part = str(text).strip().lower()
    if part == "ar":
        return AR_ACTION
    tree_text, plus, chain_text = part.partition("+")
    if not plus and tree_text.startswith("ngram:"):
        tree_text, chain_text = "", tree_text
    chain = 0
    if chain_text or plus:
        length = chain_text.removeprefix("ngram:") if chain_text.startswith("ngram:") else None
        if length is None or not length.strip().lstrip("-").isdigit():
            raise UserError(f"action {text.strip()!r}: expected {ALLOWED}")
        chain = int(length)
        if not 1 <= chain <= NGRAM_MAX:
            raise UserError(f"action {text.strip()!r}: the n-gram chain length L must be 1..{NGRAM_MAX} "
                            f"(got {chain})")
    if not tree_text:
        return validate_action((*AR_ACTION.tree, chain))
    if tree_text == "ar":
        raise UserError(f"action {text.strip()!r}: 'ar' drafts nothing, so it takes no chain; "
                        f"use 'ngram:{chain}' for the chain alone (allowed: {ALLOWED})")
    try:
        tree = tuple(int(v) for v in tree_text.split(","))
    except ValueError:
        raise UserError(f"action {text.strip()!r}: expected {ALLOWED}") from None
    if len(tree) != 3:
        raise UserError(f"action {text.strip()!r}: expected TT,d,k (three integers); allowed: {ALLOWED}")
    return validate_action((*tree, chain))


def parse_actions(text: str) -> list[Action]:
    """'ar;4,2,2;ngram:4;3,1,2+ngram:4' -> validated actions."""
    return validate_actions([parse_action(p) for p in str(text).split(";") if p.strip()])


def format_action(action: Sequence[int]) -> str:
    """The action-list syntax: 'ar', 'TT,d,k', 'ngram:L' or 'TT,d,k+ngram:L'."""
    a = Action(*action)
    if a == AR_ACTION:
        return "ar"
    chain = f"ngram:{a.ngram}" if a.ngram else ""
    if not a.uses_head:
        return chain
    tree = ",".join(str(v) for v in a.tree)
    return f"{tree}+{chain}" if chain else tree


def action_json(action: Sequence[int]):
    """--json's form: [TT, d, k] for a head tree alone (as before), else the text syntax."""
    a = Action(*action)
    return list(a.tree) if a.uses_head and not a.ngram else format_action(a)
