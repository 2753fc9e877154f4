"""The adaptive baselines' calibration: each action's step cost and tokens per step on this
machine, measured once on a training prompt (never a benchmark one)."""

from __future__ import annotations

import json
from pathlib import Path


def adaptive_calibration(config, spec, tok, report_dir: Path):
    """The ema/ucb baselines' calibration: every action's step cost and tokens per step,
    measured once (rl.env.measure_step_costs) on the first grid-search training prompt, never a
    benchmark one, and kept in report/calibration.json so a resumed run uses the same table."""
    from resps_jax.config_cli import config_source
    from resps_jax.data.prompts import load_training_prompts
    from resps_jax.decoding.engine import GenerationConfig
    from resps_jax.decoding.tree import format_action
    from resps_jax.models.cache import cache_length_bucket
    from resps_jax.prompting import encode_prompt
    from resps_jax.rl.adaptive import Calibration
    from resps_jax.rl.env import measure_step_costs

    path = report_dir / "calibration.json"
    names = [format_action(a) for a in spec.actions]
    if path.is_file():
        saved = json.loads(path.read_text())
        if saved.get("actions") == names:
            return Calibration(tuple(saved["relative_cost"]), tuple(saved["tokens_per_step"]))
    with config_source("eval.grid_prompts"):
        prompt = load_training_prompts(config.eval.grid_prompts, limit=1, seed=7)[0]
    ids = encode_prompt(tok, prompt[0])
    gen = GenerationConfig(max_new_tokens=config.eval.max_new_tokens, tree_margin=spec.tree_margin)
    capacity = spec.engine.fit_prompt(ids, gen)[1]
    costs = measure_step_costs(spec, ids, cache_len=cache_length_bucket(capacity, spec.engine.cfg.max_position_embeddings))
    path.write_text(json.dumps({"actions": names, "relative_cost": list(costs.relative),
                                "tokens_per_step": list(costs.tokens_per_step), "ar_seconds": costs.ar_seconds},
                               indent=2))
    return Calibration(costs.relative, costs.tokens_per_step)
