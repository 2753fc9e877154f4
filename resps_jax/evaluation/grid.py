"""The grid search: the best single static action of the config's set on training prompts
(never benchmark ones), chosen once before an evaluation and saved as best_static.json."""

from __future__ import annotations

import dataclasses


def grid_search(config, engine, head, eos, tok) -> dict:
    """The best single static action of the config's set on training prompts (never benchmarks)."""
    from resps_jax.config_cli import config_source
    from resps_jax.data.prompts import load_training_prompts
    from resps_jax.decoding.engine import GenerationConfig, SpeculativeEngine
    from resps_jax.decoding.tree import format_action
    from resps_jax.models.cache import cache_length_bucket
    from resps_jax.pipeline import compile_untimed
    from resps_jax.prompting import encode_prompt
    from resps_jax.rl.actions import config_actions

    ev = config.eval
    with config_source("eval.grid_prompts"):
        conversations = load_training_prompts(ev.grid_prompts, limit=ev.grid_questions, seed=7)
    tok_prompts = [encode_prompt(tok, c[0]) for c in conversations]
    actions = config_actions(config.actions)
    speeds = {}
    for a in actions:
        spec = SpeculativeEngine(engine, head, [a])
        # one cache length for every prompt (the longest prompt's, rounded as evaluate rounds
        # it) and every prefill bucket compiled before the first timed decode
        gen = GenerationConfig(max_new_tokens=ev.max_new_tokens, tree_margin=spec.tree_margin)
        capacity = max(engine.fit_prompt(ids, gen)[1] for ids in tok_prompts)
        gen = dataclasses.replace(gen, cache_len=cache_length_bucket(capacity, engine.cfg.max_position_embeddings))
        compile_untimed([spec], tok_prompts, gen, eos)
        tokens = seconds = 0.0
        for ids in tok_prompts:
            r = spec.generate(ids, gen, eos)
            tokens, seconds = tokens + r.new_tokens, seconds + r.seconds
        speeds[format_action(a)] = tokens / seconds
    best = max(speeds, key=speeds.get)
    return {"action": best, "tokens_per_second": speeds, "prompts": len(tok_prompts), "source": ev.grid_prompts}
