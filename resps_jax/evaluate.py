"""python -m resps_jax.evaluate --config configs/X.py [--policy P] [--benchmarks a,b] [--questions N]
    [--methods "ar;static:4,2,2;resps"] [--interval-sweep 1,5,10,30,50] [--question-file F.jsonl]
    [--grid-search] [--profile] [--no-report]

Benchmarks and baselines as the paper runs them: for every question and turn of the
chosen benchmark sets (MT-Bench with both turns, the second seeing the model's own first
answer), every method decodes the same prompt after a warm-up that compiled everything:
our AR (timed twice, `ar` and `ar_again`, so the run-to-run spread is measured in the same
run), each static action of the config's set (`static:ar` is the `ar`-only policy), the
EAGLE-3 baselines (`config.baselines`: 60/5/10 as the paper compared against, 60/7/10),
the best static action of a grid search on training prompts (`--grid-search` makes and
saves that pick, then exits: run it once before the evaluation; benchmark prompts never
choose it), two training-free adaptive baselines over the config's action set (`ema`:
SGLang-style running mean of acceptance; `ucb`: BanditSpec-style UCB1; rl/adaptive.py,
calibrated once on a training prompt into report/calibration.json), and the Re-SpS policy.
Methods run
interleaved per question, their order rotating, so drift on a shared machine hits all
alike. One record per question x turn x method goes to <workdir>/report/results.jsonl;
an interrupted run resumes and skips finished records. `python -m resps_jax.report`
turns the records into report.md and plots (this CLI calls it at the end).

`resps@N` is the policy deciding every N steps (`ema@N`, `ucb@N` likewise); `--interval-sweep 1,5,10` adds one such
method per N (the paper's Fig. 3: latency and tokens/s against the cache interval).
`--profile` times each tree action's step piece by piece instead (the paper's Table 8:
drafting, verification, tree management, policy) into report/profile.json.
"""

from __future__ import annotations

import dataclasses
import json
import time
from pathlib import Path

import numpy as np

from resps_jax.errors import UserError, run_cli
from resps_jax.rl.adaptive import ADAPTIVE_METHODS

BOOL_FLAGS = ("debug", "grid_search", "no_report", "profile")


def parse_args(argv: list[str]) -> tuple[list[str], dict]:
    """This CLI's own options; the rest (--config, --config.x=y, flags) goes to the config parser."""
    import argparse

    parser = argparse.ArgumentParser(prog="python -m resps_jax.evaluate", add_help=False, allow_abbrev=False,
                                     exit_on_error=False)
    for name in ("--policy", "--benchmarks", "--questions", "--methods", "--question-file", "--interval-sweep"):
        parser.add_argument(name)
    try:
        known, rest = parser.parse_known_args(argv)
    except argparse.ArgumentError as err:
        raise UserError(str(err)) from None
    rest = [a.replace("--grid-search", "--grid_search").replace("--no-report", "--no_report") for a in rest]
    return rest, vars(known)


def method_names(config, with_policy: bool, best_static: str | None) -> list[str]:
    from resps_jax.decoding.tree import format_action
    from resps_jax.rl.actions import config_actions

    names = ["ar", "ar_again"]
    names += [f"static:{format_action(a)}" for a in config_actions(config.actions)]
    names += [f"eagle3:{b.strip()}" for b in str(config.get("baselines", "")).split(";") if b.strip()]
    names += list(ADAPTIVE_METHODS)  # training-free adaptive baselines over the same action set
    if best_static and f"static:{best_static}" not in names:  # the pick is one of the config's own actions
        names.append("best_static")  # unless the action set changed since the search
    if with_policy:  # as trained (sampled at its temperature, or argmax), and its argmax
        names += ["resps", "resps_argmax"]
    return names


def sweep_methods(spec: str) -> list[str]:
    """--interval-sweep 1,5,10 -> the policy at each cache interval: resps@1;resps@5;resps@10 (Fig. 3)."""
    try:
        intervals = [int(v) for v in spec.split(",") if v.strip()]
    except ValueError:
        raise UserError(f"--interval-sweep {spec!r}: expected comma-separated step counts, e.g. 1,5,10,30") from None
    if not intervals or min(intervals) < 1:
        raise UserError(f"--interval-sweep {spec!r}: every interval must be >= 1")
    return [f"resps@{n}" for n in intervals]


def cache_length_bucket(capacity: int, limit: int) -> int:
    """A cache length rounded up to a power of two (at most the model's limit): a handful of
    lengths serve every prompt, so the untimed compiles stay few."""
    return min(1 << (capacity - 1).bit_length(), limit)


def memory_maps_near_limit(fraction: float = 0.6) -> bool:
    """Whether this process holds more than `fraction` of the kernel's memory-map limit.

    Every XLA:CPU executable is JIT-linked code in many small mappings (about 7,000 for one
    cache length's 13 methods on SmolLM2), and past vm.max_map_count (65,530 by default)
    LLVM fails with "Cannot allocate memory" and the process dies: a 10-question SmolLM2
    evaluation did so after 23 question-turns. Linux only; elsewhere never near."""
    try:
        limit = int(Path("/proc/sys/vm/max_map_count").read_text())
        with open("/proc/self/maps") as maps:
            return sum(1 for _ in maps) > fraction * limit
    except (OSError, ValueError):
        return False


def policy_interval(method: str) -> int | None:
    """resps@N, ema@N, ucb@N -> N (the chooser decides every N steps); None for every other method."""
    if method.split("@", 1)[0] in ("resps", *ADAPTIVE_METHODS) and "@" in method:
        try:
            n = int(method.split("@", 1)[1])
        except ValueError:
            n = 0
        if n < 1:
            raise UserError(f"method {method!r}: the cache interval after @ must be an integer >= 1")
        return n
    return None


def main(argv: list[str] | None = None) -> int:
    from resps_jax.config_cli import parse_config_args

    rest, extra = parse_args(list(argv or []))
    config, flags = parse_config_args(rest, BOOL_FLAGS)
    if "actions" not in config or "eval" not in config:
        raise UserError("the config has no 'actions' or 'eval' section")
    ev = config.eval
    from resps_jax.data.benchmarks import BENCHMARKS, load_benchmark, load_question_file

    names = BENCHMARKS if not (extra["benchmarks"] or ev.benchmarks) else [
        b.strip() for b in (extra["benchmarks"] or ev.benchmarks).split(",") if b.strip()]
    unknown = [b for b in names if b not in BENCHMARKS]
    if unknown and not extra["question_file"]:
        raise UserError(f"unknown benchmark(s) {', '.join(unknown)}; expected some of {', '.join(BENCHMARKS)}")
    try:
        n_questions = int(extra["questions"]) if extra["questions"] is not None else int(ev.questions)
    except ValueError:
        raise UserError(f"--questions {extra['questions']!r}: expected an integer") from None
    limit = None if n_questions < 0 else n_questions
    if extra["question_file"]:  # a user's own question file (same format as the benchmark files)
        sets = {Path(extra["question_file"]).stem: load_question_file(extra["question_file"], limit=limit)}
    else:
        sets = {b: load_benchmark(b, limit=limit) for b in names}

    from resps_jax.distributed import initialize_from_config
    from resps_jax.runtime import setup_runtime

    initialize_from_config(config)
    setup_runtime()
    import jax
    from tqdm import tqdm

    from resps_jax.decoding.engine import Engine, GenerationConfig, SpeculativeEngine, prefill_bucket
    from resps_jax.decoding.tree import format_action
    from resps_jax.models.loading import parse_dtype
    from resps_jax.prompting import encode_conversation, eos_token_ids
    from resps_jax.rl.actions import config_actions, parse_actions
    from resps_jax.train import load_pair

    workdir = Path(config.workdir).expanduser()
    report_dir = workdir / "report"
    report_dir.mkdir(parents=True, exist_ok=True)
    target, head = load_pair(config, parse_dtype(config.dtype))
    engine = Engine(target.model)
    eos = eos_token_ids(target.tokenizer, target.cfg.eos_token_ids)
    tok = target.tokenizer

    if flags["grid_search"]:
        pick = grid_search(config, engine, head, eos, tok)
        (report_dir / "best_static.json").write_text(json.dumps(pick, indent=2))
        print(json.dumps(pick))
        return 0

    best_file = report_dir / "best_static.json"
    best_static = json.loads(best_file.read_text())["action"] if best_file.is_file() else None
    policy_path = extra["policy"] or (str(workdir / "checkpoints") if (workdir / "checkpoints").is_dir() else None)
    agent = meta = None
    from resps_jax.rl.checkpoint import load_policy

    if policy_path:
        agent, meta = load_policy(policy_path)
        agent.use_tokenizer(tok)
    methods = method_names(config, agent is not None, best_static)
    if extra["methods"] or extra["interval_sweep"]:
        wanted = [m.strip() for m in (extra["methods"] or "").split(";") if m.strip()]
        wanted += sweep_methods(extra["interval_sweep"]) if extra["interval_sweep"] else []
        allowed = methods + (["best_static"] if best_static else [])
        missing = [m for m in wanted if m not in allowed and not (
            policy_interval(m) and (agent is not None or not m.startswith("resps@")))]
        if missing:
            raise UserError(f"unknown method(s) {', '.join(missing)}; this config has {', '.join(methods)}"
                            + ("" if agent is not None else " (resps@N needs a policy)"))
        methods = list(dict.fromkeys(wanted))

    decoders = {}
    policy_spec = None  # one engine over the policy's action set, shared by resps, resps_argmax, resps@N
    adaptive_spec = None  # one engine over the config's action set for ema and ucb
    default_interval = int(ev.interval or (meta or {}).get("interval_eval", config.actions.interval_eval))
    for m in methods:
        if m.split("@", 1)[0] in ADAPTIVE_METHODS:
            from resps_jax.rl.adaptive import make_chooser

            if adaptive_spec is None:
                adaptive_spec = SpeculativeEngine(engine, head, config_actions(config.actions))
                calibration = adaptive_calibration(config, adaptive_spec, tok, report_dir)
            chooser = make_chooser(m.split("@", 1)[0], adaptive_spec.actions, calibration)
            decoders[m] = (adaptive_spec, chooser.decide, policy_interval(m) or default_interval)
            continue
        if m.startswith("static:") or m.startswith("eagle3:"):
            decoders[m] = (SpeculativeEngine(engine, head, parse_actions(m.split(":", 1)[1])), None, 1 << 20)
        elif m == "best_static":
            decoders[m] = (SpeculativeEngine(engine, head, parse_actions(best_static)), None, 1 << 20)
        elif m in ("resps", "resps_argmax") or policy_interval(m):
            if policy_spec is None:  # its executables then compile once, not once per policy method
                policy_spec = SpeculativeEngine(engine, head, parse_actions(";".join(meta["actions"])))
            spec = policy_spec
            chooser = agent
            if m == "resps_argmax":
                chooser, _ = load_policy(policy_path)
                chooser.cfg = dataclasses.replace(chooser.cfg, greedy=True)
                chooser.use_tokenizer(tok)
            decoders[m] = (spec, chooser.decide, policy_interval(m) or default_interval)
    margin = max([spec.tree_margin for spec, _, _ in decoders.values()], default=0)
    gen = GenerationConfig(max_new_tokens=ev.max_new_tokens, temperature=0.0, tree_margin=margin,
                           truncate_prompt=bool(ev.get("truncate_prompt", False)))

    if flags["profile"]:  # Table 8: each tree action's step, timed piece by piece
        profile_actions(config, engine, head, agent, meta, gen, sets, tok, report_dir)
        if not flags["no_report"] and (report_dir / "results.jsonl").is_file():
            from resps_jax.report import write_report

            print(write_report(report_dir))
        return 0

    results_path = report_dir / "results.jsonl"
    done: dict[tuple, dict] = {}
    if results_path.is_file():
        for number, line in enumerate(results_path.read_text().splitlines(), 1):
            if line.strip():
                try:
                    r = json.loads(line)
                except json.JSONDecodeError:
                    raise UserError(f"{results_path}:{number}: not valid JSON; remove the line to resume") from None
                done[(r["benchmark"], str(r["question_id"]), r["turn"], r["method"])] = r
    # question-major: every benchmark's first question, then every second one, ..., so a run
    # stopped early (and resumed later) has covered all benchmarks alike
    depth = max((len(qs) for qs in sets.values()), default=0)
    jobs = [(b, qs[i], t) for i in range(depth) for b, qs in sets.items() if i < len(qs)
            for t in range(len(qs[i].turns))]
    todo = [(b, q, t) for b, q, t in jobs if any((b, str(q.question_id), t, m) not in done for m in methods)]

    def sized(ids: list[int]) -> GenerationConfig:
        """This prompt's request with its cache length rounded up to a power of two: every
        method decodes with the same cache, and a handful of lengths serve all prompts, so
        compilation (done untimed, once per length) stays small."""
        _, capacity = engine.fit_prompt(ids, gen)
        return dataclasses.replace(gen, cache_len=cache_length_bucket(capacity, target.cfg.max_position_embeddings))

    def run(method: str, ids: list[int]):
        request = sized(ids)
        if method in ("ar", "ar_again"):
            return engine.generate(ids, request, eos)
        spec, policy, interval = decoders[method]
        if policy is None:
            return spec.generate(ids, request, eos)
        return spec.generate(ids, request, eos, policy=policy, interval=interval)

    warmed: set = set()

    def warm(ids: list[int]) -> None:
        """Compile every method for this prompt's shapes (prefill bucket, cache length), untimed:
        a timed decode never includes compilation."""
        request = sized(ids)
        fitted, capacity = engine.fit_prompt(ids, request)
        key = (prefill_bucket(len(fitted), capacity), capacity)
        if key in warmed:
            return
        if memory_maps_near_limit():  # drop every executable; the persistent cache reloads them
            jax.clear_caches()
            warmed.clear()
        warmed.add(key)
        for spec in {id(d[0]): d[0] for d in decoders.values()}.values():
            spec.warm_up(ids, request, eos)
        for m in methods:
            if m not in decoders:
                run(m, ids)

    if agent is not None:
        agent.decide(np.zeros(3 * target.cfg.hidden_size, np.float32), [])  # the policy's forward compiles once

    out = results_path.open("a")
    answers: dict[tuple, str] = {}  # (benchmark, qid, turn) -> AR's answer text, for later turns
    bar = tqdm(total=len(todo), desc="evaluating", unit="turn")
    start = time.monotonic()
    try:
        for row, (b, q, t) in enumerate(todo):
            previous = []
            for k in range(t):
                key = (b, str(q.question_id), k)
                if key not in answers:
                    r = done.get((b, str(q.question_id), k, "ar"))
                    answers[key] = r["text"] if r else tok.decode(
                        run("ar", encode_conversation(tok, list(q.turns), previous)).token_ids,
                        skip_special_tokens=True)
                previous.append(answers[key])
            ids = encode_conversation(tok, list(q.turns), previous)
            warm(ids)
            order = methods[row % len(methods):] + methods[: row % len(methods)]
            records = {}
            for m in order:
                if (b, str(q.question_id), t, m) in done:
                    continue
                result = run(m, ids)
                records[m] = result
            ar_ids = (records["ar"].token_ids if "ar" in records
                      else done.get((b, str(q.question_id), t, "ar"), {}).get("token_ids"))
            for m in methods:
                if m not in records:
                    continue
                result = records[m]
                record = {
                    "benchmark": b, "question_id": q.question_id, "turn": t, "method": m,
                    "tokens": result.new_tokens, "seconds": round(result.seconds, 5), "steps": result.steps,
                    "tokens_per_second": round(result.tokens_per_second, 3),
                    "accepted": result.accepted_per_step,
                    "actions": [format_action(a) for a in result.actions],
                    "prompt_tokens": result.prompt_tokens,
                    "identical_to_ar": ar_ids is None or result.token_ids == ar_ids,
                }
                if m == "ar":
                    record["text"] = tok.decode(result.token_ids, skip_special_tokens=True)
                    record["token_ids"] = result.token_ids
                    answers[(b, str(q.question_id), t)] = record["text"]
                out.write(json.dumps(record) + "\n")
                done[(b, str(q.question_id), t, m)] = record
            out.flush()
            bar.update(1)
    finally:
        bar.close()
        out.close()
    print(json.dumps({"results": str(results_path), "turns": len(jobs), "methods": methods,
                      "minutes": round((time.monotonic() - start) / 60, 2)}), flush=True)
    if not flags["no_report"]:
        from resps_jax.report import speed_summary, write_report

        write_report(report_dir, command=" ".join(["python -m resps_jax.evaluate", *(argv or [])]))
        print(speed_summary(report_dir))
    return 0


def adaptive_calibration(config, spec, tok, report_dir: Path):
    """The ema/ucb baselines' calibration: every action's step cost and tokens per step,
    measured once (rl.env.measure_step_costs) on the first grid-search training prompt, never a
    benchmark one, and kept in report/calibration.json so a resumed run uses the same table."""
    from resps_jax.config_cli import config_source
    from resps_jax.data.prompts import load_training_prompts
    from resps_jax.decoding.engine import GenerationConfig
    from resps_jax.decoding.tree import format_action
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


def profile_actions(config, engine, head, agent, meta, gen, sets, tok, report_dir: Path) -> None:
    """report/profile.json: drafting, verification, tree management and policy milliseconds
    per step for every tree action of the config and the EAGLE-3 baselines, on the first
    question of the first benchmark (untimed warm-up first; see decoding/profile.py)."""
    from tqdm import tqdm

    from resps_jax.decoding.engine import SpeculativeEngine
    from resps_jax.decoding.profile import step_breakdown
    from resps_jax.decoding.tree import AR_ACTION
    from resps_jax.prompting import encode_conversation
    from resps_jax.rl.actions import config_actions, parse_actions

    trees = [a for a in config_actions(config.actions) if a != AR_ACTION]
    trees += [a for b in str(config.get("baselines", "")).split(";") if b.strip() for a in parse_actions(b)]
    first = next(iter(sets.values()))[0]
    ids = encode_conversation(tok, [first.turns[0]], [])
    interval = int(config.eval.interval or (meta or {}).get("interval_eval", config.actions.interval_eval))
    rows = []
    for action in tqdm(list(dict.fromkeys(trees)), desc="profiling steps", unit="action"):
        spec = SpeculativeEngine(engine, head, [AR_ACTION, action])
        rows.append(step_breakdown(spec, ids, gen, action, decide=agent.decide if agent is not None else None,
                                   interval=interval))
    (report_dir / "profile.json").write_text(json.dumps(rows, indent=2))
    print(json.dumps({"profile": str(report_dir / "profile.json"), "actions": [r["action"] for r in rows]}))


def grid_search(config, engine, head, eos, tok) -> dict:
    """The best single static action of the config's set on training prompts (never benchmarks)."""
    from resps_jax.config_cli import config_source
    from resps_jax.data.prompts import load_training_prompts
    from resps_jax.decoding.engine import GenerationConfig, SpeculativeEngine, prefill_bucket
    from resps_jax.decoding.tree import format_action
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
        for ids in {prefill_bucket(len(ids), gen.cache_len): ids for ids in tok_prompts}.values():
            spec.warm_up(ids, gen, eos)
        tokens = seconds = 0.0
        for ids in tok_prompts:
            r = spec.generate(ids, gen, eos)
            tokens, seconds = tokens + r.new_tokens, seconds + r.seconds
        speeds[format_action(a)] = tokens / seconds
    best = max(speeds, key=speeds.get)
    return {"action": best, "tokens_per_second": speeds, "prompts": len(tok_prompts), "source": ev.grid_prompts}


if __name__ == "__main__":
    run_cli(main)
