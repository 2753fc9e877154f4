"""What Re-SpS adds to a decode, measured side by side in one run on the embedded default.

1. The policy call: microseconds per decision (state features -> normalise -> jitted
   actor -> action, host round trip included) and its share of the interval time it
   governs (the paper reports 0.02%).
2. The no-draft action `ar`: its step cost against a plain AR step (DESIGN: <= 1.05x).
   Both run the same prompts with the same fixed cache length, best of --repeats.

    python benchmarks/probes/resps_overhead.py [--policy WORKDIR] [--prompts 6] [--new-tokens 96] [--interval 30]

Without --policy a freshly initialised policy of the config's shape stands in (the cost
of a call does not depend on its weights).
"""

from __future__ import annotations

import argparse
import json
import time

import numpy as np

from resps_jax.data.benchmarks import BENCHMARKS, load_benchmark
from resps_jax.decoding.engine import Engine, GenerationConfig, SpeculativeEngine
from resps_jax.decoding.tree import AR_ACTION
from resps_jax.models.loading import load_head, load_target
from resps_jax.prompting import encode_prompt, eos_token_ids
from resps_jax.runtime import setup_runtime


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--policy", help="a train workdir or checkpoint (default: a fresh policy)")
    parser.add_argument("--draft", default="smollm2")
    parser.add_argument("--prompts", type=int, default=6, help="held-out prompts, spread over the five benchmarks")
    parser.add_argument("--new-tokens", type=int, default=96)
    parser.add_argument("--interval", type=int, default=30)
    parser.add_argument("--repeats", type=int, default=3)
    parser.add_argument("--json-out")
    args = parser.parse_args()
    setup_runtime()
    target = load_target("smollm2")
    engine = Engine(target.model)
    head = load_head(args.draft, target.cfg)
    if args.policy:
        from resps_jax.rl.actions import parse_actions
        from resps_jax.rl.checkpoint import load_policy

        agent, meta = load_policy(args.policy)
        actions = parse_actions(";".join(meta["actions"]))
    else:
        from resps_jax.config_cli import parse_config_args, resolve_config_argv
        from resps_jax.rl.actions import config_actions
        from resps_jax.rl.agent import Agent
        from resps_jax.rl.policy import state_dim
        from resps_jax.pipeline import build_agent_config

        config, _ = parse_config_args(resolve_config_argv(["--config", "smollm2"]))
        actions = config_actions(config.actions)
        agent = Agent(build_agent_config(config, state_dim(target.cfg.hidden_size, config.rl.state), len(actions)))
        agent.training = False
    spec = SpeculativeEngine(engine, head, actions)
    eos = eos_token_ids(target.tokenizer, target.cfg.eos_token_ids)
    per = max(1, args.prompts // len(BENCHMARKS))
    prompts = [encode_prompt(target.tokenizer, q.turns[0]) for b in BENCHMARKS for q in load_benchmark(b, limit=per)]
    cache_len = max(len(p) for p in prompts) + args.new_tokens + spec.tree_margin
    gen = GenerationConfig(max_new_tokens=args.new_tokens, cache_len=cache_len + (-cache_len) % 128)

    # 1. the policy call inside real decodes
    calls: list[float] = []

    def timed_policy(taps):
        start = time.perf_counter()
        index = agent.decide(taps)
        calls.append(time.perf_counter() - start)
        return index

    for ids in prompts[:1]:  # compile everything first
        spec.warm_up(ids, gen, eos)
        spec.generate(ids, gen, eos, policy=timed_policy, interval=args.interval)
    calls.clear()
    interval_seconds = 0.0
    for ids in prompts:
        result = spec.generate(ids, gen, eos, policy=timed_policy, interval=args.interval)
        interval_seconds += sum(r.seconds for r in result.intervals)
    policy_us = 1e6 * float(np.median(calls))
    share = sum(calls) / interval_seconds

    # 2. `ar` against plain AR: seconds per step, prefill excluded (a 1-token run subtracted)
    ar_index = actions.index(AR_ACTION) if AR_ACTION in actions else None
    one = GenerationConfig(max_new_tokens=1, cache_len=gen.cache_len)
    plain, noarr = [], []
    for _ in range(args.repeats):
        for ids in prompts:
            t0 = time.perf_counter()
            full = engine.generate(ids, gen, eos)
            t1 = time.perf_counter()
            engine.generate(ids, one, eos)
            t2 = time.perf_counter()
            plain.append(((t1 - t0) - (t2 - t1)) / max(1, full.steps))
            if ar_index is not None:
                r = spec.generate(ids, gen, eos, policy=lambda _t: ar_index, interval=1 << 20)
                noarr.append(sum(i.seconds for i in r.intervals) / max(1, r.steps))
    report = {
        "policy_us_per_call": round(policy_us, 1), "policy_calls": len(calls),
        "policy_share_of_interval_time": share, "interval": args.interval,
        "plain_ar_ms_per_step": round(1e3 * float(np.median(plain)), 3),
    }
    if noarr:
        report["ar_action_ms_per_step"] = round(1e3 * float(np.median(noarr)), 3)
        report["ar_action_vs_plain_ar"] = round(float(np.median(noarr) / np.median(plain)), 4)
    print(f"policy call: {policy_us:.0f} us median over {len(calls)} calls; "
          f"{100 * share:.3f}% of the interval time (interval {args.interval})")
    print(f"plain AR step: {report['plain_ar_ms_per_step']} ms")
    if noarr:
        print(f"`ar` action step: {report['ar_action_ms_per_step']} ms = {report['ar_action_vs_plain_ar']}x plain AR")
    if args.json_out:
        with open(args.json_out, "w") as f:
            json.dump(report, f, indent=2)


if __name__ == "__main__":
    main()
