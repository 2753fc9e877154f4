"""One evaluation: every method decodes every question-turn of the chosen sets, after an
untimed compile, methods interleaved per question with their order rotating (so drift on a
shared machine hits all alike), one record per question x turn x method appended to
report/results.jsonl (resumable). MT-Bench's second turn sees AR's own first answer.
"""

from __future__ import annotations

import dataclasses
import json
import time
from pathlib import Path

from resps_jax.errors import UserError
from resps_jax.evaluation.methods import AR_METHODS, Decoder
from resps_jax.evaluation.results_log import load_done, record_key, result_record


@dataclasses.dataclass(frozen=True)
class Request:
    """What the command line asks of an evaluation beyond the config."""

    policy: str | None = None  # a checkpoint folder (default: the workdir's own)
    benchmarks: str | None = None  # comma-separated subset
    questions: str | None = None  # per set; negative: all
    methods: str | None = None  # ';'-separated
    question_file: str | None = None  # a user's own questions, instead of the benchmarks
    interval_sweep: str | None = None  # resps@N for each N
    grid_search: bool = False
    profile: bool = False
    report: bool = True


def question_sets(config, request: Request) -> dict[str, list]:
    """The benchmark sets (or the question file) with at most `questions` each; clear errors
    for an unknown set, a count that is not an integer, or one that selects nothing."""
    from resps_jax.data.benchmarks import BENCHMARKS, load_benchmark, load_question_file

    ev = config.eval
    chosen = request.benchmarks or ev.benchmarks
    names = [b.strip() for b in chosen.split(",") if b.strip()] if chosen else list(BENCHMARKS)
    unknown = [b for b in names if b not in BENCHMARKS]
    if unknown and not request.question_file:
        raise UserError(f"unknown benchmark(s) {', '.join(unknown)}; expected some of {', '.join(BENCHMARKS)}")
    try:
        n_questions = int(request.questions) if request.questions is not None else int(ev.questions)
    except ValueError:
        raise UserError(f"--questions {request.questions!r}: expected an integer") from None
    if n_questions == 0:
        raise UserError("--questions 0 selects no question: give a positive count (or -1 for every question)")
    limit = None if n_questions < 0 else n_questions
    if request.question_file:  # a user's own question file (same format as the benchmark files)
        return {Path(request.question_file).stem: load_question_file(request.question_file, limit=limit)}
    return {b: load_benchmark(b, limit=limit) for b in names}


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


class Runner:
    """Decodes prompts with any method, every prompt's cache rounded to a power of two so a
    handful of lengths (each compiled once, untimed) serve them all."""

    def __init__(self, engine, decoders: dict[str, Decoder], methods: list[str], gen, eos: tuple[int, ...]):
        self.engine, self.decoders, self.methods, self.gen, self.eos = engine, decoders, methods, gen, eos
        self.compiled: set = set()

    def sized(self, ids: list[int]):
        """This prompt's request with its cache length rounded up to a power of two: every
        method decodes with the same cache."""
        from resps_jax.models.cache import cache_length_bucket

        _, capacity = self.engine.fit_prompt(ids, self.gen)
        return dataclasses.replace(self.gen, cache_len=cache_length_bucket(capacity, self.engine.cfg.max_position_embeddings))

    def run(self, method: str, ids: list[int]):
        request = self.sized(ids)
        if method in AR_METHODS:
            return self.engine.generate(ids, request, self.eos)
        decoder = self.decoders[method]
        if decoder.policy is None:
            return decoder.spec.generate(ids, request, self.eos)
        return decoder.spec.generate(ids, request, self.eos, policy=decoder.policy, interval=decoder.interval)

    def compile_for(self, ids: list[int]) -> None:
        """Compile every method for this prompt's shapes (prefill bucket, cache length),
        untimed: a timed decode never includes compilation."""
        import jax

        from resps_jax.models.cache import prefill_bucket
        from resps_jax.pipeline import compile_untimed

        request = self.sized(ids)
        fitted, capacity = self.engine.fit_prompt(ids, request)
        key = (prefill_bucket(len(fitted), capacity), capacity)
        if key in self.compiled:
            return
        if memory_maps_near_limit():  # drop every executable; the persistent cache reloads them
            jax.clear_caches()
            self.compiled.clear()
        if self.decoders:
            compile_untimed([d.spec for d in self.decoders.values()], [ids], request, self.eos, self.compiled)
        self.compiled.add(key)
        for m in self.methods:
            if m not in self.decoders:
                self.run(m, ids)


def run_questions(runner: Runner, sets: dict[str, list], tok, results_path: Path) -> dict:
    """Every question-turn not yet in results.jsonl, question-major (every set's first
    question, then every second one, ...), so a run stopped early has covered all sets alike."""
    from tqdm import tqdm

    from resps_jax.prompting import encode_conversation

    methods = runner.methods
    done = load_done(results_path)
    depth = max((len(qs) for qs in sets.values()), default=0)
    jobs = [(b, qs[i], t) for i in range(depth) for b, qs in sets.items() if i < len(qs)
            for t in range(len(qs[i].turns))]
    todo = [(b, q, t) for b, q, t in jobs if any(record_key(b, q.question_id, t, m) not in done for m in methods)]
    answers: dict[tuple, str] = {}  # (benchmark, qid, turn) -> AR's answer text, for later turns

    def ar_answer(b: str, q, k: int, previous: list[str]) -> str:
        key = (b, str(q.question_id), k)
        if key not in answers:
            r = done.get(record_key(b, q.question_id, k, "ar"))
            answers[key] = r["text"] if r else tok.decode(
                runner.run("ar", encode_conversation(tok, list(q.turns), previous)).token_ids, skip_special_tokens=True)
        return answers[key]

    out = results_path.open("a")
    bar = tqdm(total=len(todo), desc="evaluating", unit="turn")
    start = time.monotonic()
    try:
        for row, (b, q, t) in enumerate(todo):
            previous: list[str] = []
            for k in range(t):
                previous.append(ar_answer(b, q, k, previous))
            ids = encode_conversation(tok, list(q.turns), previous)
            runner.compile_for(ids)
            order = methods[row % len(methods):] + methods[: row % len(methods)]
            results = {m: runner.run(m, ids) for m in order if record_key(b, q.question_id, t, m) not in done}
            ar_ids = (results["ar"].token_ids if "ar" in results
                      else done.get(record_key(b, q.question_id, t, "ar"), {}).get("token_ids"))
            for m in [m for m in methods if m in results]:
                record = result_record(b, q.question_id, t, m, results[m], ar_ids)
                if m == "ar":
                    record["text"] = tok.decode(results[m].token_ids, skip_special_tokens=True)
                    record["token_ids"] = results[m].token_ids
                    answers[(b, str(q.question_id), t)] = record["text"]
                out.write(json.dumps(record) + "\n")
                done[record_key(b, q.question_id, t, m)] = record
            out.flush()
            bar.update(1)
    finally:
        bar.close()
        out.close()
    return {"results": str(results_path), "turns": len(jobs), "methods": methods,
            "minutes": round((time.monotonic() - start) / 60, 2)}


def evaluate(config, request: Request, sets: dict[str, list], command: str = "") -> None:
    """The whole evaluation a config and request describe over `sets` (question_sets): the
    grid search, the profile, or the decode of every question with every method, then the
    report."""
    from resps_jax.decoding.engine import Engine, GenerationConfig
    from resps_jax.evaluation.methods import build_decoders, select_methods
    from resps_jax.models.loading import parse_dtype
    from resps_jax.pipeline import compile_policy, load_pair
    from resps_jax.prompting import eos_token_ids
    from resps_jax.rl.checkpoint import load_policy

    ev = config.eval
    workdir = Path(config.workdir).expanduser()
    report_dir = workdir / "report"
    report_dir.mkdir(parents=True, exist_ok=True)
    target, head = load_pair(config, parse_dtype(config.dtype))
    engine = Engine(target.model)
    eos = eos_token_ids(target.tokenizer, target.cfg.eos_token_ids)
    tok = target.tokenizer

    if request.grid_search:
        from resps_jax.evaluation.grid import grid_search

        pick = grid_search(config, engine, head, eos, tok)
        (report_dir / "best_static.json").write_text(json.dumps(pick, indent=2))
        print(json.dumps(pick))
        return

    best_file = report_dir / "best_static.json"
    best_static = json.loads(best_file.read_text())["action"] if best_file.is_file() else None
    policy_path = request.policy or (str(workdir / "checkpoints") if (workdir / "checkpoints").is_dir() else None)
    agent = meta = None
    if policy_path:
        agent, meta = load_policy(policy_path)
        agent.use_tokenizer(tok)
    methods = select_methods(config, agent is not None, best_static, request.methods, request.interval_sweep)
    decoders = build_decoders(config, engine, head, methods, best_static, policy_path, agent, meta, tok, report_dir)
    margin = max([d.spec.tree_margin for d in decoders.values()], default=0)
    gen = GenerationConfig(max_new_tokens=ev.max_new_tokens, temperature=0.0, tree_margin=margin,
                           truncate_prompt=bool(ev.get("truncate_prompt", False)))
    results_path = report_dir / "results.jsonl"

    if request.profile:  # Table 8: each tree action's step, timed piece by piece
        from resps_jax.evaluation.profiling import profile_actions

        profile_actions(config, engine, head, agent, meta, gen, sets, tok, report_dir)
        if request.report and results_path.is_file():
            from resps_jax.evaluation.report import write_report

            print(write_report(report_dir))
        return

    if agent is not None:
        compile_policy(agent, target.cfg.hidden_size)
    summary = run_questions(Runner(engine, decoders, methods, gen, eos), sets, tok, results_path)
    print(json.dumps(summary), flush=True)
    if request.report:
        from resps_jax.evaluation.report import speed_summary, write_report

        if not results_path.is_file() or not results_path.read_text().strip():
            raise UserError(f"{results_path} holds no records: nothing was decoded, so there is no report")
        write_report(report_dir, command=command)
        print(speed_summary(report_dir))
