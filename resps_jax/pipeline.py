"""What more than one command does before it decodes: load the config's target and head,
read the training questions, build the agent's config, and compile untimed.

`train`, `evaluate`, the benchmarks and the probes all start here, so a config means the
same target, head and questions to each of them, and no timed decode ever includes a
compile.
"""

from __future__ import annotations

import dataclasses
from collections.abc import Iterable, Sequence

from resps_jax.errors import UserError


def build_agent_config(config, obs_dim: int, num_actions: int):
    from resps_jax.rl.agent import AgentConfig
    from resps_jax.rl.policy import STATE_MODES
    from resps_jax.rl.ppo import VARIANTS, PPOConfig, variant_defaults

    rl = config.rl
    if rl.variant not in VARIANTS:
        raise UserError(f"rl.variant {rl.variant!r}: expected one of {', '.join(VARIANTS)}")
    if rl.state not in STATE_MODES:
        raise UserError(f"rl.state {rl.state!r}: expected one of {', '.join(STATE_MODES)}")
    defaults = variant_defaults(rl.variant)
    pick = lambda name: defaults[name] if getattr(rl, name) < 0 else getattr(rl, name)  # noqa: E731  (-1: Table 4)
    try:
        hidden = tuple(int(v) for v in str(rl.hidden).split(",") if v.strip())
        ppo = PPOConfig(lr=rl.lr, n_steps=rl.n_steps, batch_size=rl.batch_size, epochs=rl.epochs, clip=rl.clip,
                        gamma=pick("gamma"), gae_lambda=pick("gae_lambda"), ent_coef=pick("ent_coef"),
                        vf_coef=rl.vf_coef, max_grad_norm=rl.max_grad_norm, bandit=rl.bandit,
                        target_kl=rl.target_kl)
    except ValueError as err:
        raise UserError(f"bad rl settings: {err}") from None
    if not hidden or min(hidden) < 1:
        raise UserError(f"rl.hidden {rl.hidden!r}: expected layer widths such as 128,128")
    return AgentConfig(obs_dim=obs_dim, num_actions=num_actions, hidden=hidden, state=rl.state,
                       normalize=rl.normalize, temperature=pick("temperature"), greedy=rl.greedy, ppo=ppo)


def draft_spec(config) -> str:
    """The head a config names: `draft_model`, else the target's own name (its shipped head)."""
    return config.get("draft_model", "") or config.model


def load_pair(config, dtype):
    """The config's target and head: `draft_model` is a folder, 'smollm2', or 'random' (tests)."""
    from resps_jax.config_cli import config_source, require_model
    from resps_jax.models.loading import load_head, load_target

    model = require_model(config)
    with config_source("model"):
        target = load_target(model, dtype)
    with config_source("draft_model"):
        return target, load_head(draft_spec(config), target.cfg, dtype, config.seed + 1)


def training_questions(config, tokenizer) -> list[list[int]]:
    """First user turns of the training source (seed-42 shuffle), filtered to fit the cache."""
    from resps_jax.config_cli import config_source
    from resps_jax.data.prompts import load_training_prompts
    from resps_jax.prompting import encode_prompt

    rl = config.rl
    with config_source("rl.prompts"):
        conversations = load_training_prompts(rl.prompts, seed=42)
    out = []
    for conv in conversations:
        ids = encode_prompt(tokenizer, conv[0])
        if len(ids) <= rl.max_prompt_tokens:
            out.append(ids)
        if len(out) >= rl.questions:
            break
    if not out:
        raise UserError(f"no training question of {rl.prompts!r} fits rl.max_prompt_tokens={rl.max_prompt_tokens}")
    return out


def compile_untimed(decoders: Iterable, prompts: Sequence[list[int]], gen, eos: tuple[int, ...],
                    compiled: set | None = None) -> set:
    """Compile, untimed, everything a decode of `prompts` with `gen` will run on `decoders`
    (SpeculativeEngines): every action's interval once per cache length, and one prefill
    per prompt bucket. `compiled` (returned) holds the (prefill bucket, cache length) pairs
    already done, so a caller that meets new prompts later pays only for new shapes."""
    from resps_jax.models.cache import prefill_bucket

    compiled = set() if compiled is None else compiled
    decoders = list({id(d): d for d in decoders}.values())
    for ids in prompts:
        fitted, capacity = decoders[0].engine.fit_prompt(ids, dataclasses.replace(
            gen, tree_margin=max([gen.tree_margin] + [d.tree_margin for d in decoders])))
        key = (prefill_bucket(len(fitted), capacity), capacity)
        if key in compiled:
            continue
        new_length = all(length != capacity for _, length in compiled)
        compiled.add(key)
        for decoder in decoders:
            if new_length:  # the intervals compile per cache length
                decoder.warm_up(ids, gen, eos)
            else:  # the same intervals: only this bucket's prefill is new
                decoder.generate(ids, dataclasses.replace(gen, max_new_tokens=1), eos)
    return compiled


def compile_policy(policy, hidden_size: int) -> None:
    """A learned policy's forward compiled once, untimed, on an all-zero state (the taps of a
    target with this hidden size); a decode's first decision then compiles nothing."""
    import numpy as np

    policy.decide(np.zeros(3 * hidden_size, np.float32), [])
