"""How much the modeled reward's start-up step costs move from one calibration to the next.

Runs the calibration `train` does at start-up (SmolLM2, the config's action set, the first
training question, the run's cache length) --calibrations times, alternating two ways:
`sequential`, the way used before af7330b (2026-12-03: AR timed first, then each action in turn,
best of 2 after a compile), and `rounds` (`rl/env.py: measure_step_costs` now: AR and every
action back to back per round, the median of per-round ratios). Prints each action's cost
per calibration and its spread (max / min) per way.

    python benchmarks/probes/step_cost_spread.py [--calibrations 3] [--draft smollm2]
"""

from __future__ import annotations

import argparse
import json

import numpy as np

from resps_jax.decoding.engine import Engine, GenerationConfig, SpeculativeEngine
from resps_jax.decoding.tree import format_action
from resps_jax.models.cache import plan_cache_length
from resps_jax.rl.env import _timed, measure_step_costs, steady_seconds_per_step


def sequential_costs(spec: SpeculativeEngine, prompt_ids: list[int], cache_len: int, steps: int = 24,
                     repeats: int = 2) -> list[float]:
    """The calibration `train` ran before af7330b (2026-12-03), kept here only to compare against."""
    engine = spec.engine
    full = min(_timed(lambda: engine.generate(prompt_ids, GenerationConfig(steps + 1, cache_len=cache_len), ()))
               for _ in range(repeats + 1))
    prefill = min(_timed(lambda: engine.generate(prompt_ids, GenerationConfig(1, cache_len=cache_len), ()))
                  for _ in range(repeats + 1))
    ar = max(full - prefill, 1e-9) / steps
    costs = []
    for index in range(len(spec.actions)):
        best = min(steady_seconds_per_step(spec.generate(prompt_ids, GenerationConfig(4 * steps, cache_len=cache_len),
                                                         (), policy=lambda _t, i=index: i, interval=steps).intervals)
                   for _ in range(repeats + 1))
        costs.append(best / ar)
    return costs


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--calibrations", type=int, default=3, help="per way, alternating")
    parser.add_argument("--draft", default="smollm2")
    parser.add_argument("--json-out")
    args = parser.parse_args()
    from resps_jax.config_cli import parse_config_args, resolve_config_argv
    from resps_jax.rl.actions import config_actions
    from resps_jax.runtime import setup_runtime
    from resps_jax.pipeline import load_pair, training_questions

    setup_runtime()
    config, _ = parse_config_args(resolve_config_argv(["--config", "smollm2", f"--config.draft_model={args.draft}"]))
    target, head = load_pair(config, np.float32)
    actions = config_actions(config.actions)
    spec = SpeculativeEngine(Engine(target.model), head, actions)
    question = training_questions(config, target.tokenizer)[0]
    rl = config.rl
    cache_len = plan_cache_length(rl.max_prompt_tokens, rl.max_new_tokens, spec.tree_margin,
                                  target.cfg.max_position_embeddings)
    names = [format_action(a) for a in actions]
    runs: dict[str, list[list[float]]] = {"sequential": [], "rounds": []}
    for k in range(args.calibrations):
        runs["sequential"].append(sequential_costs(spec, question, cache_len))
        runs["rounds"].append(list(measure_step_costs(spec, question, cache_len=cache_len).relative))
        for way in runs:
            print(f"calibration {k + 1} {way:>10}: " + ", ".join(f"{n} {c:.3f}" for n, c in zip(names, runs[way][-1])),
                  flush=True)
    print("\nspread (max / min over calibrations) per action:")
    spread = {}
    for way, costs in runs.items():
        table = np.array(costs)  # [calibrations, A]
        spread[way] = dict(zip(names, (table.max(0) / table.min(0)).round(3).tolist()))
        print(f"  {way:>10}: " + ", ".join(f"{n} {s:.3f}" for n, s in spread[way].items())
              + f"; worst {max(spread[way].values()):.3f}")
    if args.json_out:
        with open(args.json_out, "w") as f:
            json.dump({"actions": names, "costs": runs, "spread": spread}, f, indent=1)


if __name__ == "__main__":
    main()
