"""python -m resps_jax.train --config configs/X.py [--config.rl.x=y ...] [--resume]

Online PPO training of the Re-SpS policy (Algorithm 2): each training question is one
turn decoded by the speculative engine, the policy choosing the tree limits every
`actions.interval_train` steps from the target's own features; each interval's reward is
its speed (see rl/env.py). PPO updates run between turns on full buffers of n_steps
intervals. Orbax checkpoints under <workdir>/checkpoints/ hold the policy, optimizer,
normaliser, RNG, data position and pending transitions; `--resume` continues from the
latest one exactly. Logs: <workdir>/train_log.jsonl and TensorBoard events in <workdir>/tb/.
"""

from __future__ import annotations

import dataclasses
import json
import time
from collections import Counter
from pathlib import Path

from resps_jax.errors import UserError, run_cli


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


def main(argv: list[str] | None = None) -> int:
    from resps_jax.config_cli import parse_config_args

    config, flags = parse_config_args(list(argv or []), ("resume", "debug"))
    if "rl" not in config or "actions" not in config:
        raise UserError("the config has no 'rl' or 'actions' section")
    from resps_jax.distributed import initialize_from_config
    from resps_jax.runtime import setup_runtime

    initialize_from_config(config)
    setup_runtime()
    from tqdm import tqdm

    from resps_jax.decoding.engine import Engine, GenerationConfig, SpeculativeEngine, prefill_bucket
    from resps_jax.decoding.tree import format_action
    from resps_jax.distributed import is_writer
    from resps_jax.models.cache import plan_cache_length
    from resps_jax.models.loading import parse_dtype
    from resps_jax.prompting import eos_token_ids
    from resps_jax.rl import checkpoint as ckpt
    from resps_jax.rl.actions import config_actions
    from resps_jax.rl.agent import Agent
    from resps_jax.rl.env import REWARDS, StepCosts, measure_step_costs, run_turn
    from resps_jax.rl.policy import state_dim

    rl = config.rl
    if rl.reward not in REWARDS:
        raise UserError(f"rl.reward {rl.reward!r}: expected one of {', '.join(REWARDS)}")
    actions = config_actions(config.actions)
    workdir = Path(config.workdir).expanduser()
    ckpt_dir = workdir / "checkpoints"
    if not flags["resume"] and ckpt_dir.is_dir() and any(ckpt_dir.iterdir()):
        raise UserError(f"{ckpt_dir} already holds checkpoints; pass --resume to continue or remove the folder")

    target, head = load_pair(config, parse_dtype(config.dtype))
    agent_cfg = build_agent_config(config, state_dim(target.cfg.hidden_size, rl.state), len(actions))
    agent = Agent(agent_cfg, seed=rl.seed)
    agent.use_tokenizer(target.tokenizer)
    mngr = ckpt.manager(ckpt_dir)
    position, costs = 0, None
    if flags["resume"] and mngr.latest_step() is not None:
        step = mngr.latest_step()
        meta = ckpt.read_meta(mngr, step, ckpt_dir)
        ckpt.check_compatible(meta, actions, agent_cfg.obs_dim, agent_cfg.hidden, ckpt_dir)
        ckpt.restore_into(mngr, step, agent, meta, ckpt_dir)
        position = int(meta["position"])
        costs = StepCosts(meta["costs"]["ar_seconds"], tuple(meta["costs"]["relative"]),
                          tuple(meta["costs"].get("tokens_per_step", ())))
        if is_writer():
            print(f"resumed from update {agent.updates} at question {position}", flush=True)
        if position >= rl.questions:  # a finished run (a rerun of `make demo`): nothing to compile or time
            if is_writer():
                print(f"{ckpt_dir}: already trained on {position} questions (rl.questions={rl.questions})", flush=True)
            mngr.close()
            return 0
    elif rl.init_from:  # a fresh workdir continuing another policy (the shipped one: `make demo`)
        position = continue_from(rl.init_from, agent, actions, agent_cfg, rl.questions)

    from resps_jax.heads import head_version

    engine = Engine(target.model)
    spec = SpeculativeEngine(engine, head, actions)
    eos = eos_token_ids(target.tokenizer, target.cfg.eos_token_ids)
    questions = training_questions(config, target.tokenizer)
    # one cache length for the whole run, so each TT bucket compiles once (not once per prompt size)
    cache_len = plan_cache_length(rl.max_prompt_tokens, rl.max_new_tokens, spec.tree_margin,
                                  target.cfg.max_position_embeddings)
    gen = GenerationConfig(max_new_tokens=rl.max_new_tokens, temperature=0.0, cache_len=cache_len)
    warmed: set[int] = set()
    if costs is None and rl.costs_from:  # another run's calibration, shared (rl.costs_from)
        costs = shared_costs(rl.costs_from, actions)
    if costs is None:  # once per run: plain AR speed and each action's step cost (and every compile)
        costs = measure_step_costs(spec, questions[0], cache_len=cache_len)
    spec.warm_up(questions[0], gen, eos)  # every action compiled before any timed interval (also on resume)
    for ids in {len(q): q for q in questions}.values():  # every prompt bucket's prefill, untimed
        if prefill_bucket(len(ids), cache_len) not in warmed:
            warmed.add(prefill_bucket(len(ids), cache_len))
            spec.generate(ids, dataclasses.replace(gen, max_new_tokens=1), eos)
    workdir.mkdir(parents=True, exist_ok=True)
    names = [format_action(a) for a in actions]
    extra = lambda: {  # noqa: E731
        "actions": names, "position": position, "temperature": agent_cfg.temperature, "greedy": agent_cfg.greedy,
        "ppo": vars_of(agent_cfg.ppo), "variant": rl.variant, "reward": rl.reward,
        "interval_eval": config.actions.interval_eval, "interval_train": config.actions.interval_train,
        "costs": {"ar_seconds": costs.ar_seconds, "relative": list(costs.relative),
                  "tokens_per_step": list(costs.tokens_per_step)}, "model": config.model,
        "draft": head_version(draft_spec(config)),  # the exact head its rewards came from
    }

    writer = None
    if is_writer():
        from tensorboardX import SummaryWriter

        writer = SummaryWriter(str(workdir / "tb"))
    log = (workdir / "train_log.jsonl").open("a") if is_writer() else None
    histogram: Counter = Counter()
    deadline = time.monotonic() + 60 * rl.minutes if rl.minutes > 0 else float("inf")
    end = min(len(questions), rl.questions)
    bar = tqdm(total=end, initial=position, desc="training policy", unit="question", disable=not is_writer())
    tokens_total, seconds_total, turns = 0, 0.0, 0
    try:
        while position < end and time.monotonic() < deadline:
            turn = run_turn(spec, questions[position], gen, eos, agent.decide, config.actions.interval_train,
                            rl.reward, costs)
            values = [round(t.value, 4) for t in agent.pending]  # the critic at each decision (logged)
            agent.end_turn(turn.rewards)
            position += 1
            result = turn.result
            histogram.update(names[i] for i, *_ in result.intervals)
            tokens_total, seconds_total, turns = tokens_total + result.new_tokens, seconds_total + result.seconds, turns + 1
            record = {"type": "turn", "question": position - 1, "tokens": result.new_tokens,
                      "seconds": round(result.seconds, 4), "steps": result.steps,
                      "actions": [names[i] for i, *_ in result.intervals],
                      "rewards": [round(r, 4) for r in turn.rewards], "values": values,
                      # what each reward was made from: either reward mode can be recomputed from them
                      "interval_tokens": [tokens for _, tokens, _, _ in result.intervals],
                      "interval_steps": [steps for _, _, steps, _ in result.intervals],
                      "interval_seconds": [round(seconds, 5) for *_, seconds in result.intervals]}
            if log:
                log.write(json.dumps(record) + "\n")
                writer.add_scalar("turn/tokens_per_second", result.tokens_per_second, position)
                writer.add_scalar("turn/mean_reward", sum(turn.rewards) / max(1, len(turn.rewards)), position)
            while agent.ready():
                metrics = agent.update(max(0.0, 1.0 - position / rl.questions) if rl.anneal_lr else 1.0)
                if log:
                    log.write(json.dumps({"type": "update", "update": agent.updates, "question": position, **{
                        k: round(v, 5) for k, v in metrics.items()}}) + "\n")
                    for k, v in metrics.items():
                        writer.add_scalar(f"update/{k}", v, agent.updates)
                if agent.updates % rl.checkpoint_every == 0:  # steps count questions: each save is new
                    ckpt.save(mngr, position, agent, extra())
            if log:
                log.flush()
            top = ", ".join(f"{a}:{c}" for a, c in histogram.most_common(3))
            bar.set_postfix_str(f"{tokens_total / max(seconds_total, 1e-9):.1f} tok/s, reward "
                                f"{sum(turn.rewards) / max(1, len(turn.rewards)):.2f}, {top}")
            bar.update(1)
    finally:
        bar.close()
        if log:
            log.close()
            writer.close()
    if mngr.latest_step() != position:  # the final state, unless the last update's checkpoint holds it
        ckpt.save(mngr, position, agent, extra())
    mngr.close()
    summary = {
        "checkpoints": str(ckpt_dir), "updates": agent.updates, "position": position, "turns_this_run": turns,
        "tokens_per_second": round(tokens_total / max(seconds_total, 1e-9), 2),
        "actions": dict(histogram), "executables": {**spec.executables_by_kind(), **agent.executables()},
        "step_costs": dict(zip(names, [round(c, 3) for c in costs.relative])),
    }
    if is_writer():
        print(json.dumps(summary), flush=True)
    return 0


def continue_from(source: str, agent, actions, agent_cfg, questions: int) -> int:
    """Restore another run's (or a shipped) policy into `agent`, for a new workdir to go on
    training it on the questions after the ones it saw; returns that data position. Its step
    costs are not taken: they were measured on the machine that trained it, and the
    modeled reward must use this one's."""
    from resps_jax.distributed import is_writer
    from resps_jax.rl import checkpoint as ckpt

    with ckpt.opened(source, f"rl.init_from={source}") as (source_mngr, step, meta, folder):
        ckpt.check_compatible(meta, actions, agent_cfg.obs_dim, agent_cfg.hidden, folder)
        ckpt.restore_into(source_mngr, step, agent, meta, folder)
    position = int(meta["position"])
    if position >= questions:
        raise UserError(f"rl.init_from={source} has already trained on {position} questions; rl.questions="
                        f"{questions} counts from the first question, so set it past {position}")
    if is_writer():
        print(f"continuing {source} (update {agent.updates}, question {position})", flush=True)
    return position


def shared_costs(source: str, actions):
    """The step costs another run measured (its latest checkpoint's metadata), for this run's
    modeled reward; the two runs must have the same action set, or the costs mean nothing."""
    from resps_jax.decoding.tree import format_action
    from resps_jax.distributed import is_writer
    from resps_jax.rl import checkpoint as ckpt
    from resps_jax.rl.env import StepCosts

    with ckpt.opened(source, f"rl.costs_from={source}") as (_, step, meta, folder):
        found = meta.get("costs")
    names = [format_action(a) for a in actions]
    if meta["actions"] != names or found is None:
        raise UserError(f"rl.costs_from={source}: its actions {';'.join(meta['actions'])} are not this run's "
                        f"{';'.join(names)}")
    if is_writer():
        print(f"step costs from {folder} (checkpoint {step}): "
              + ", ".join(f"{n} {c:.2f}" for n, c in zip(names, found["relative"])), flush=True)
    return StepCosts(found["ar_seconds"], tuple(found["relative"]), tuple(found.get("tokens_per_step", ())))


def vars_of(cfg) -> dict:
    import dataclasses

    return dataclasses.asdict(cfg)


if __name__ == "__main__":
    run_cli(main)
