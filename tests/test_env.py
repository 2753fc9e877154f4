"""The interval rewards of rl/env.py: measured and modeled, in AR speed-up units."""

from __future__ import annotations

import pytest

from resps_jax.decoding.engine import GenerationResult
from resps_jax.decoding.policy import IntervalRecord
from resps_jax.errors import UserError
from resps_jax.rl import env
from resps_jax.rl.env import StepCosts, interval_rewards, measure_step_costs, steady_seconds_per_step

COSTS = StepCosts(ar_seconds=0.04, relative=(1.0, 1.6, 2.5))


def result_with(intervals):
    records = [IntervalRecord(*t) for t in intervals]
    return GenerationResult([], 0, sum(r.seconds for r in records), steps=sum(r.steps for r in records), actions=[],
                            intervals=records)


def test_modeled_reward_is_tokens_over_modeled_time_and_ignores_the_clock():
    # (action, tokens, steps, seconds): ar 10 tokens in 10 steps; 4/2/2 18 tokens in 10 steps
    fast = result_with([(0, 10, 10, 0.4), (1, 18, 10, 0.6)])
    slow = result_with([(0, 10, 10, 4.0), (1, 18, 10, 6.0)])  # the machine 10x slower: same reward
    assert interval_rewards(fast, "modeled", COSTS) == interval_rewards(slow, "modeled", COSTS)
    assert interval_rewards(fast, "modeled", COSTS) == pytest.approx([1.0, 18 / (10 * 1.6)])


def test_measured_reward_is_tokens_per_second_over_plain_ar():
    result = result_with([(0, 10, 10, 0.4), (2, 30, 10, 0.6)])
    assert interval_rewards(result, "measured", COSTS) == pytest.approx([1.0, 30 / 0.6 * 0.04])
    with pytest.raises(UserError, match="rl.reward 'wall'"):
        interval_rewards(result, "wall", COSTS)


def test_step_cost_leaves_out_the_first_interval_and_its_prompt_catch_up():
    # the first interval also runs the head over the prompt: 3x slower per step here
    intervals = [IntervalRecord(*t) for t in [(1, 30, 20, 1.2), (1, 30, 20, 0.4), (1, 25, 10, 0.2)]]
    assert steady_seconds_per_step(intervals) == pytest.approx(0.6 / 30)
    assert steady_seconds_per_step(intervals[:1]) == pytest.approx(1.2 / 20)  # nothing later: the first


def test_step_costs_are_per_round_ratios_so_drift_and_bursts_cancel(monkeypatch):
    # (AR seconds per token, each action's seconds per step) per round; round 0 compiles
    # (AR seconds per token, each action's seconds per step, its tokens per step) per round
    rounds = iter([(9.0, [90.0, 90.0], [1.0, 9.0]),  # the compile pass: ignored
                   (0.04, [0.04, 0.08], [1.0, 2.5]),
                   (0.08, [0.08, 0.16], [1.0, 2.5]),  # the whole machine 2x slower: same ratios
                   (0.04, [0.04, 0.80], [1.0, 2.5])])  # a burst of other work during one action
    monkeypatch.setattr(env, "_one_round", lambda *args: next(rounds))
    costs = measure_step_costs(spec=None, prompt_ids=[1], rounds=3)
    assert costs.relative == pytest.approx((1.0, 2.0))
    assert costs.ar_seconds == pytest.approx(0.04)
    assert costs.tokens_per_step == pytest.approx((1.0, 2.5))
