"""Online PPO training of the Re-SpS policy (Algorithm 2), as a library: `train_policy`.

Each training question is one turn decoded by the speculative engine, the policy choosing
an action every `actions.interval_train` steps from the target's own features; each
interval's reward is its speed (rl/env.py). PPO updates run between turns on full buffers
of n_steps intervals. Orbax checkpoints under <workdir>/checkpoints/ hold the policy,
optimizer, normaliser, RNG, data position and pending transitions; `resume` continues from
the latest one exactly. Logs: <workdir>/train_log.jsonl and TensorBoard events in <workdir>/tb/.
"""

from __future__ import annotations

import dataclasses
import json
import time
from collections import Counter
from pathlib import Path

from resps_jax.errors import UserError


@dataclasses.dataclass
class Setup:
    """What a run decodes with, decided before its first timed turn."""

    agent: object  # rl.agent.Agent
    spec: object  # decoding.engine.SpeculativeEngine over the config's actions
    questions: list[list[int]]
    gen: object  # decoding.engine.GenerationConfig, one cache length for the whole run
    eos: tuple[int, ...]
    costs: object  # rl.env.StepCosts of this machine (or shared by rl.costs_from)
    position: int  # the next question
    mngr: object  # the run's Orbax checkpoint manager


def train_policy(config, resume: bool) -> dict | None:
    """Train (or continue) the policy the config describes; the run's summary, or None when
    the resumed run had already trained on every question (a rerun of `make demo`)."""
    from resps_jax.rl.actions import config_actions
    from resps_jax.rl.env import REWARDS

    if "rl" not in config or "actions" not in config:
        raise UserError("the config has no 'rl' or 'actions' section")
    rl = config.rl
    if rl.reward not in REWARDS:
        raise UserError(f"rl.reward {rl.reward!r}: expected one of {', '.join(REWARDS)}")
    actions = config_actions(config.actions)  # a bad action set fails before any folder is made
    ckpt_dir = Path(config.workdir).expanduser() / "checkpoints"
    if not resume and ckpt_dir.is_dir() and any(ckpt_dir.iterdir()):
        raise UserError(f"{ckpt_dir} already holds checkpoints; pass --resume to continue or remove the folder")
    setup = prepare(config, actions, resume, ckpt_dir)
    if setup is None:  # a finished run: nothing to compile or time
        return None
    try:
        return run_turns(config, setup, ckpt_dir)
    finally:
        setup.mngr.close()


def prepare(config, actions, resume: bool, ckpt_dir: Path) -> Setup | None:
    """The agent (fresh, resumed, or continuing rl.init_from), the engine, the questions, the
    step costs, and every executable compiled; None when the resumed run is already done."""
    from resps_jax.decoding.engine import Engine, GenerationConfig, SpeculativeEngine
    from resps_jax.distributed import is_writer
    from resps_jax.models.cache import plan_cache_length
    from resps_jax.models.loading import parse_dtype
    from resps_jax.pipeline import build_agent_config, compile_untimed, load_pair, training_questions
    from resps_jax.prompting import eos_token_ids
    from resps_jax.rl import checkpoint as ckpt
    from resps_jax.rl.agent import Agent
    from resps_jax.rl.env import StepCosts, measure_step_costs
    from resps_jax.rl.policy import state_dim

    rl = config.rl
    target, head = load_pair(config, parse_dtype(config.dtype))
    agent_cfg = build_agent_config(config, state_dim(target.cfg.hidden_size, rl.state), len(actions))
    agent = Agent(agent_cfg, seed=rl.seed)
    agent.use_tokenizer(target.tokenizer)
    mngr = ckpt.manager(ckpt_dir)  # made once the target, head and agent exist: a failed load leaves no folder
    position, costs = 0, None
    if resume and mngr.latest_step() is not None:
        step = mngr.latest_step()
        meta = ckpt.read_meta(mngr, step, ckpt_dir)
        ckpt.check_compatible(meta, actions, agent_cfg.obs_dim, agent_cfg.hidden, ckpt_dir)
        ckpt.restore_into(mngr, step, agent, meta, ckpt_dir)
        position = int(meta["position"])
        costs = StepCosts(meta["costs"]["ar_seconds"], tuple(meta["costs"]["relative"]),
                          tuple(meta["costs"].get("tokens_per_step", ())))
        if is_writer():
            print(f"resumed from update {agent.updates} at question {position}", flush=True)
        if position >= rl.questions:
            if is_writer():
                print(f"{ckpt_dir}: already trained on {position} questions (rl.questions={rl.questions})", flush=True)
            mngr.close()
            return None
    elif rl.init_from:  # a fresh workdir continuing another policy (the shipped one: `make demo`)
        position = continue_from(rl.init_from, agent, actions, agent_cfg, rl.questions)

    spec = SpeculativeEngine(Engine(target.model), head, actions)
    eos = eos_token_ids(target.tokenizer, target.cfg.eos_token_ids)
    questions = training_questions(config, target.tokenizer)
    # one cache length for the whole run, so each TT bucket compiles once (not once per prompt size)
    cache_len = plan_cache_length(rl.max_prompt_tokens, rl.max_new_tokens, spec.tree_margin,
                                  target.cfg.max_position_embeddings)
    gen = GenerationConfig(max_new_tokens=rl.max_new_tokens, temperature=0.0, cache_len=cache_len)
    if costs is None and rl.costs_from:  # another run's calibration, shared (rl.costs_from)
        costs = shared_costs(rl.costs_from, actions)
    if costs is None:  # once per run: plain AR speed and each action's step cost (and every compile)
        costs = measure_step_costs(spec, questions[0], cache_len=cache_len)
    # every action and prompt bucket compiled before any timed interval (also on resume)
    compile_untimed([spec], [questions[0], *questions], gen, eos)
    return Setup(agent, spec, questions, gen, eos, costs, position, mngr)


def run_turns(config, setup: Setup, ckpt_dir: Path) -> dict:
    """Decode training questions from setup.position, updating and checkpointing as buffers fill."""
    from tqdm import tqdm

    from resps_jax.decoding.action import format_action
    from resps_jax.distributed import is_writer
    from resps_jax.rl import checkpoint as ckpt
    from resps_jax.rl.env import run_turn

    rl, agent, spec, mngr = config.rl, setup.agent, setup.spec, setup.mngr
    workdir = ckpt_dir.parent
    workdir.mkdir(parents=True, exist_ok=True)
    names = [format_action(a) for a in spec.actions]
    position = setup.position
    writer = log = None
    if is_writer():
        from tensorboardX import SummaryWriter

        writer = SummaryWriter(str(workdir / "tb"))
        log = (workdir / "train_log.jsonl").open("a")
    histogram: Counter = Counter()
    deadline = time.monotonic() + 60 * rl.minutes if rl.minutes > 0 else float("inf")
    end = min(len(setup.questions), rl.questions)
    bar = tqdm(total=end, initial=position, desc="training policy", unit="question", disable=not is_writer())
    tokens_total, seconds_total, turns = 0, 0.0, 0
    try:
        while position < end and time.monotonic() < deadline:
            turn = run_turn(spec, setup.questions[position], setup.gen, setup.eos, agent,
                            config.actions.interval_train, rl.reward, setup.costs)
            values = [round(t.value, 4) for t in agent.pending]  # the critic at each decision (logged)
            agent.end_turn(turn.rewards)
            position += 1
            result = turn.result
            histogram.update(names[r.action] for r in result.intervals)
            tokens_total, seconds_total, turns = tokens_total + result.new_tokens, seconds_total + result.seconds, turns + 1
            if log:
                log.write(json.dumps(turn_record(position - 1, turn, values, names)) + "\n")
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
                    ckpt.save(mngr, position, agent, checkpoint_meta(config, setup, position))
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
        ckpt.save(mngr, position, agent, checkpoint_meta(config, setup, position))
    return {
        "checkpoints": str(ckpt_dir), "updates": agent.updates, "position": position, "turns_this_run": turns,
        "tokens_per_second": round(tokens_total / max(seconds_total, 1e-9), 2),
        "actions": dict(histogram), "executables": {**spec.executables_by_kind(), **agent.executables()},
        "step_costs": dict(zip(names, [round(c, 3) for c in setup.costs.relative])),
    }


def turn_record(question: int, turn, values: list[float], names: list[str]) -> dict:
    """train_log.jsonl's line for one turn: what each reward was made from, so either reward
    mode can be recomputed from the log."""
    result = turn.result
    return {"type": "turn", "question": question, "tokens": result.new_tokens,
            "seconds": round(result.seconds, 4), "steps": result.steps,
            "actions": [names[r.action] for r in result.intervals],
            "rewards": [round(r, 4) for r in turn.rewards], "values": values,
            "interval_tokens": [r.tokens for r in result.intervals],
            "interval_steps": [r.steps for r in result.intervals],
            "interval_seconds": [round(r.seconds, 5) for r in result.intervals]}


def checkpoint_meta(config, setup: Setup, position: int) -> dict:
    """What a checkpoint records beside the arrays: the action set, the data position, the
    PPO settings, the step costs its rewards used, and the exact head they came from."""
    from resps_jax.decoding.action import format_action
    from resps_jax.heads import head_version
    from resps_jax.pipeline import draft_spec

    rl, cfg, costs = config.rl, setup.agent.cfg, setup.costs
    return {
        "actions": [format_action(a) for a in setup.spec.actions], "position": position,
        "temperature": cfg.temperature, "greedy": cfg.greedy, "ppo": dataclasses.asdict(cfg.ppo),
        "variant": rl.variant, "reward": rl.reward,
        "interval_eval": config.actions.interval_eval, "interval_train": config.actions.interval_train,
        "costs": {"ar_seconds": costs.ar_seconds, "relative": list(costs.relative),
                  "tokens_per_step": list(costs.tokens_per_step)}, "model": config.model,
        "draft": head_version(draft_spec(config)),
    }


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
