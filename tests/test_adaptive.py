"""The training-free adaptive baselines (ema, ucb): their choices, and the engine's feedback hook."""

from __future__ import annotations

import numpy as np
import pytest

from resps_jax.decoding.engine import Engine, GenerationConfig, SpeculativeEngine
from resps_jax.decoding.policy import IntervalRecord
from resps_jax.decoding.tree import AR_ACTION, format_action
from resps_jax.errors import UserError
from resps_jax.models.config import LlamaConfig
from resps_jax.models.tiny import random_pair
from resps_jax.rl.adaptive import Calibration, EmaChooser, UcbChooser, make_chooser

ACTIONS = [AR_ACTION, (4, 2, 2), (16, 4, 4)]
# calibrated: 4/2/2 1.5 tokens at 1.1 AR steps (1.36x), 16/4/4 2.2 tokens at 1.8 (1.22x): the
# bigger tree gains more per unit of cost when the turn drafts well
CAL = Calibration(relative_cost=(1.0, 1.1, 1.8), tokens_per_step=(1.0, 1.5, 2.2))


def test_ema_starts_at_the_calibrated_best_and_moves_with_the_turns_acceptance():
    ema = EmaChooser(ACTIONS, CAL, decay=0.5, margin=0.05)
    assert ema.decide(None) == 1  # 1.36x beats 1.22x and AR's 1.0x
    for _ in range(3):  # the turn drafts far better than calibration: 4/2/2 emits its maximum
        ema.observe(IntervalRecord(1, 30, 10, 0.1))  # 3 a step: its most
    assert ema.ratio > 1.5 and ema.decide(None) == 2  # a bigger tree now pays
    for _ in range(6):  # then nothing is accepted: every tree is predicted slower than AR
        ema.observe(IntervalRecord(ema.current, 10, 10, 0.1))
    assert ema.ratio < 0.06 and ema.decide(None) == 0
    before = ema.ratio
    ema.observe(IntervalRecord(0, 10, 10, 0.1))  # an `ar` interval: back toward the prior
    assert ema.ratio == pytest.approx(0.5 * before + 0.5)
    ema.reset()
    assert ema.ratio == 1.0 and ema.decide(None) == 1


def test_ema_hysteresis_holds_the_choice_within_the_margin():
    cal = Calibration(relative_cost=(1.0, 1.0, 1.0), tokens_per_step=(1.0, 1.50, 1.52))
    ema = EmaChooser(ACTIONS, cal, decay=1.0, margin=0.05)
    ema.current = 1
    ema.observe(IntervalRecord(1, 15, 10, 0.1))  # as calibrated: 1.52 is not 5% above 1.50
    assert ema.decide(None) == 1
    wide = EmaChooser(ACTIONS, cal, decay=1.0, margin=0.0)
    wide.current = 1
    wide.observe(IntervalRecord(1, 15, 10, 0.1))
    assert wide.decide(None) == 2


def test_ucb_exploits_the_calibrated_best_then_leaves_it_when_its_rewards_fall():
    ucb = UcbChooser(ACTIONS, CAL, exploration=0.1)
    assert ucb.decide(None) == 1
    ucb.observe(IntervalRecord(1, 18, 10, 0.1))  # better than calibrated: 1.64
    assert ucb.decide(None) == 1
    for _ in range(4):  # then 4/2/2 accepts nothing: 1 token per 1.1 AR steps
        ucb.observe(IntervalRecord(1, 10, 10, 0.1))
    assert ucb.decide(None) == 2  # 16/4/4's prior 1.22 and its bonus beat 4/2/2's mean ~1.11
    ucb.reset()
    assert ucb.pulls.tolist() == [1, 1, 1] and ucb.decide(None) == 1


def test_ucb_explores_an_arm_it_has_not_tried_when_the_rest_are_close():
    cal = Calibration(relative_cost=(1.0, 1.0, 1.0), tokens_per_step=(1.0, 1.05, 1.0))
    ucb = UcbChooser(ACTIONS, cal, exploration=1.0)
    picks = []
    for _ in range(6):
        a = ucb.decide(None)
        picks.append(a)
        ucb.observe(IntervalRecord(a, 10, 10, 0.1))  # every arm pays 1.0
    assert set(picks) == {0, 1, 2}


def test_choosers_refuse_a_calibration_of_another_action_set():
    with pytest.raises(UserError, match="calibration"):
        make_chooser("ema", ACTIONS[:2], CAL)
    with pytest.raises(UserError, match="adaptive method"):
        make_chooser("exp3", ACTIONS, CAL)
    with pytest.raises(UserError, match="one step cost"):
        Calibration((1.0,), (1.0, 2.0))


def test_engine_reports_each_interval_to_a_chooser_and_stays_lossless():
    """The engine calls observe(IntervalRecord) after every interval, with the numbers it also
    logs; the chooser's switches never change greedy output."""
    cfg = LlamaConfig(vocab_size=96, hidden_size=32, intermediate_size=64, num_layers=4, num_heads=4,
                      num_kv_heads=2, head_dim=8)
    target, head = random_pair(cfg, seed=11, draft_vocab=64)
    engine = Engine(target)
    spec = SpeculativeEngine(engine, head, ACTIONS)
    seen = []

    class Recording(UcbChooser):
        def observe(self, record):
            seen.append(record)
            super().observe(record)

    chooser = Recording(ACTIONS, Calibration((1.0, 1.0, 1.0), (1.0, 1.0, 1.0)), exploration=2.0)
    prompt = list(range(3, 20))
    gen = GenerationConfig(max_new_tokens=40)
    result = spec.generate(prompt, gen, eos_ids=(), policy=chooser, interval=3)
    assert result.token_ids == engine.generate(prompt, gen, eos_ids=()).token_ids
    assert seen == result.intervals
    assert len({i for i, *_ in seen}) == 3  # with these rewards UCB tries every arm
    assert np.sum(chooser.pulls) == 3 + len(seen)
    seen.clear()  # the next turn starts afresh: the engine resets the chooser when a turn begins
    again = spec.generate(prompt, gen, eos_ids=(), policy=chooser, interval=3)
    assert again.token_ids == result.token_ids and again.intervals[0][0] == result.intervals[0][0]
    assert np.sum(chooser.pulls) == 3 + len(seen)


def test_ngram_else_tree_takes_the_chain_where_the_context_repeats_and_stays_lossless():
    from resps_jax.rl.adaptive import NgramElseTree, match_length

    assert match_length([5, 6, 7, 8, 6, 7]) == 2  # "6 7" ended at position 2
    assert match_length([5, 6, 7, 5, 6, 7], max_match=3) == 3
    assert match_length([1, 2, 3, 4]) == 0 and match_length([9]) == 0
    actions = [AR_ACTION, (3, 1, 2, 0), (1, 0, 0, 4), (3, 1, 2, 4)]  # ar, a tree, ngram:4, the hybrid
    rule = NgramElseTree(actions, Calibration((1.0, 1.3, 1.1, 1.5), (1.0, 1.6, 1.4, 2.0)))
    assert rule.wants_context and (rule.chain, rule.tree) == (2, 1)
    assert rule.decide(None, [5, 6, 7, 8, 6, 7]) == 2 and rule.decide(None, [1, 2, 3, 4]) == 1
    with pytest.raises(UserError, match="ngram_else_tree needs"):
        NgramElseTree(ACTIONS, CAL)  # no chain in the set

    cfg = LlamaConfig(vocab_size=96, hidden_size=32, intermediate_size=64, num_layers=4, num_heads=4,
                      num_kv_heads=2, head_dim=8)
    target, head = random_pair(cfg, seed=11, draft_vocab=64)
    engine = Engine(target)
    spec = SpeculativeEngine(engine, head, actions)
    prompt = [3, 4, 5, 6, 3, 4, 5, 6, 3, 4, 5, 6, 3, 4]  # a repeating prompt: the lookup finds matches
    gen = GenerationConfig(max_new_tokens=40)
    seen = []

    class Recording(NgramElseTree):
        def decide(self, taps, context_ids=None):
            seen.append((list(context_ids), super().decide(taps, context_ids)))
            return seen[-1][1]

    recording = Recording(actions, rule.calibration)
    result = spec.generate(prompt, gen, eos_ids=(), policy=recording, interval=2)
    assert result.token_ids == engine.generate(prompt, gen, eos_ids=()).token_ids
    assert [index for _, index in seen] == [r.action for r in result.intervals]
    for context, index in seen:  # the engine passed the text so far; the rule kept to it
        assert context[: len(prompt)] == prompt and len(context) > len(prompt)
        assert index == (2 if match_length(context) >= 1 else 1)
    assert {format_action(a) for a in result.actions} <= {"3,1,2", "ngram:4"}
