"""Speculative decoding speed on the embedded default, side by side in one run.

For SmolLM2-135M-Instruct + its trained EAGLE-3 head, over held-out benchmark prompts (first
turns, chat template): our AR, then every action asked for (the head's trees `TT,d,k`,
prompt-lookup chains `ngram:L`, both in one verify `TT,d,k+ngram:L`), and optionally the
peers: transformers' greedy generate and its prompt lookup, and llama.cpp's prompt lookup
(llama-cpp-python, the `[bench]` extra) on the F32 GGUF of the same weights, at each chain
length L asked for. Per action and per benchmark set: tokens per step, a step's cost in AR
steps (decode time per step, prefill apart, over AR's), speed over our AR, and whether every
output is token-identical to our AR (greedy only; at temperature > 0 outputs are samples).

    python benchmarks/spec_decode.py [--per-benchmark 4] [--new-tokens 128] \
        [--actions "ngram:4;3,1,2;3,1,2+ngram:4"] [--temperature 0] [--peers] [--no-hf]
"""

from __future__ import annotations

import argparse
import dataclasses
import json
import time

from resps_jax.data.benchmarks import BENCHMARKS, load_benchmark
from resps_jax.decoding.action import Action, format_action, parse_actions
from resps_jax.decoding.engine import NGRAM_MATCH, Engine, GenerationConfig, SpeculativeEngine
from resps_jax.decoding.tree import tree_margin
from resps_jax.models.cache import plan_cache_length, prefill_bucket
from resps_jax.models.loading import f32_gguf, load_eagle3, load_target, resolve_draft_folder, smollm2_gguf
from resps_jax.prompting import encode_prompt, eos_token_ids
from resps_jax.runtime import setup_runtime

GRID = [
    (60, 5, 10), (60, 7, 10),  # EAGLE-3's evaluation default and its library default (GPU-sized)
    (7, 5, 1),  # a plain chain: 5 expansions of top-1 (EAGLE's depth counts expansions)
    (4, 2, 2), (6, 3, 2), (8, 3, 2), (8, 4, 2), (10, 4, 3), (12, 4, 3), (16, 4, 4), (16, 5, 4), (24, 5, 4), (32, 6, 8),
]


@dataclasses.dataclass
class Run:
    """One prompt's decode: what every table row is summed from."""

    set: str
    tokens: int
    seconds: float  # prefill included
    decode_seconds: float  # prefill apart (0 where a peer cannot tell them apart)
    steps: int  # target forwards after the prefill
    same: bool | None  # token-identical to our AR (None: not compared)


def run_decoder(name, generate, prompts, sets, capacity_of, reference=None) -> dict:
    for ids in warmup_prompts(prompts, capacity_of):  # compile every (prefill bucket, cache) outside the timed runs
        generate(ids)
    runs = []
    for i, ids in enumerate(prompts):
        result = generate(ids)
        runs.append(Run(sets[i], result.new_tokens, result.seconds, getattr(result, "decode_seconds", 0.0),
                        result.steps, None if reference is None else result.token_ids == reference[i]))
    return {"decoder": name, "runs": [dataclasses.asdict(r) for r in runs]}


def summary(runs: list[dict]) -> dict:
    """Totals over some runs: tok/s, tokens per step (after the prefill's token), decode s per step."""
    tokens = sum(r["tokens"] for r in runs)
    seconds = sum(r["seconds"] for r in runs)
    steps = sum(r["steps"] for r in runs)
    decode = sum(r["decode_seconds"] for r in runs)
    return {
        "tok_s": tokens / seconds if seconds else 0.0,
        "per_step": (tokens - len(runs)) / steps if steps else 0.0,
        "step_s": decode / steps if steps and decode else 0.0,
        "mismatches": None if all(r["same"] is None for r in runs) else sum(1 for r in runs if r["same"] is False),
    }


def warmup_prompts(prompts: list[list[int]], capacity_of) -> list[list[int]]:
    """One prompt per (prefill bucket, cache length) pair: each pair is one compile."""
    seen, chosen = set(), []
    for ids in prompts:
        capacity = capacity_of(ids)
        bucket = (prefill_bucket(len(ids), capacity), capacity)
        if bucket not in seen:
            seen.add(bucket)
            chosen.append(ids)
    return chosen


class _Result:
    def __init__(self, token_ids, seconds, steps=0):
        self.token_ids, self.seconds = token_ids, seconds
        self.new_tokens, self.steps = len(token_ids), steps


def hf_decoders(new_tokens: int, eos: tuple[int, ...], lookups: list[int], default_lookup: bool) -> dict:
    """transformers on the same weights (torch CPU): greedy, and prompt lookup at each L.
    Steps are counted as the model's forward calls after the first (its prefill)."""
    import torch
    from transformers import AutoModelForCausalLM

    gguf = smollm2_gguf()
    model = AutoModelForCausalLM.from_pretrained(str(gguf.parent), gguf_file=gguf.name, dtype=torch.float32).eval()
    forwards = [0]
    model.register_forward_hook(lambda *_: forwards.__setitem__(0, forwards[0] + 1))

    def timed(**kwargs):
        def run(ids):
            forwards[0] = 0
            start = time.perf_counter()
            with torch.no_grad():
                out = model.generate(torch.tensor([ids]), max_new_tokens=new_tokens, do_sample=False,
                                     eos_token_id=list(eos), pad_token_id=eos[0], **kwargs)
            new = out[0, len(ids):].tolist()
            return _Result(new, time.perf_counter() - start, forwards[0] - 1)
        return run

    decoders = {"transformers greedy": timed()}
    for length in lookups:
        decoders[f"transformers prompt lookup L={length}"] = timed(prompt_lookup_num_tokens=length)
    if default_lookup:
        decoders["transformers prompt lookup (10)"] = timed(prompt_lookup_num_tokens=10)
    return decoders


def llama_cpp_decoders(new_tokens: int, eos: tuple[int, ...], lookups: list[int], capacity: int,
                       threads: int = 2) -> dict:
    """llama.cpp (llama-cpp-python) on the F32 GGUF of our weights: greedy `generate`, and
    with its LlamaPromptLookupDecoding at each L. Steps are its eval calls after the prefill."""
    try:
        from llama_cpp import Llama
        from llama_cpp.llama_speculative import LlamaPromptLookupDecoding
    except ImportError:
        print("llama.cpp peers skipped: llama-cpp-python is not installed (pip install -e '.[bench]')")
        return {}
    path = str(f32_gguf(smollm2_gguf()))

    def make(draft):
        model = Llama(model_path=path, n_ctx=capacity, n_threads=threads, n_threads_batch=threads,
                      logits_all=draft is not None, draft_model=draft, verbose=False)
        evals = [0]
        original = model.eval

        def counted(tokens):
            evals[0] += 1
            return original(tokens)

        model.eval = counted

        def run(ids):
            evals[0] = 0
            model.reset()
            start = time.perf_counter()
            new = []
            for token in model.generate(ids, temp=0.0, top_k=1, reset=True):
                if token in eos:
                    new.append(token)
                    break
                new.append(token)
                if len(new) == new_tokens:
                    break
            return _Result(new, time.perf_counter() - start, max(0, evals[0] - 1))
        return run

    decoders = {"llama.cpp greedy": make(None)}
    for length in lookups:
        decoders[f"llama.cpp prompt lookup L={length}"] = make(LlamaPromptLookupDecoding(num_pred_tokens=length))
    return decoders


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--per-benchmark", type=int, default=4)
    parser.add_argument("--new-tokens", type=int, default=128)
    parser.add_argument("--draft", default="smollm2")
    parser.add_argument("--actions", "--trees", dest="actions",
                        help="semicolon-separated actions (TT,d,k | ngram:L | TT,d,k+ngram:L) replacing the grid")
    parser.add_argument("--temperature", type=float, default=0.0,
                        help="> 0: sampled decoding (tokens per step and speed; outputs are samples, not compared)")
    parser.add_argument("--seed", type=int, default=0)
    parser.add_argument("--ngram-match", type=int, default=NGRAM_MATCH,
                        help="our lookup's longest matched suffix (tokens)")
    parser.add_argument("--cache", choices=("fit", "fixed"), default="fit",
                        help="fit: each prompt's cache sized as generate sizes it (prompt + new tokens + the "
                             "largest action's margin, rounded up to 128), the same for every decoder; "
                             "fixed: one length for all, from the longest prompt")
    parser.add_argument("--no-hf", action="store_true", help="no transformers rows")
    parser.add_argument("--peers", action="store_true",
                        help="transformers' and llama.cpp's prompt lookup at every ngram:L length asked for")
    parser.add_argument("--matmul", choices=["kernel", "xla"], help="backend (default: the kernels on one CPU device)")
    parser.add_argument("--draft-weights", choices=["float32", "bfloat16", "both"],
                        help="the head's packed weights on the kernel backend (default bf16): both runs every "
                             "tree with each, side by side")
    parser.add_argument("--training-prompts", type=int, default=0,
                        help="N > 0: time on N ShareGPT training questions (first turns of at most 256 tokens, "
                             "the seed-42 shuffle from --training-offset on) instead of the benchmark prompts, "
                             "to choose an action set without looking at held-out data")
    parser.add_argument("--training-offset", type=int, default=3000,
                        help="first training question used (past what a policy run trains on)")
    parser.add_argument("--json-out", help="write the rows (every prompt's run) here too")
    args = parser.parse_args()
    setup_runtime()

    target = load_target("smollm2")
    actions = parse_actions(args.actions) if args.actions else [Action(*t) for t in GRID]
    head = load_eagle3(resolve_draft_folder(args.draft), target.cfg) if any(a.uses_head for a in actions) else None
    engine = Engine(target.model, matmul=args.matmul)
    eos = eos_token_ids(target.tokenizer, target.cfg.eos_token_ids)
    if args.training_prompts > 0:
        from resps_jax.data.prompts import load_training_prompts

        conversations = load_training_prompts("sharegpt", seed=42)[args.training_offset:]
        prompts = [ids for ids in (encode_prompt(target.tokenizer, c[0]) for c in conversations[:4 * args.training_prompts])
                   if len(ids) <= 256][: args.training_prompts]
        sets = ["sharegpt"] * len(prompts)
        source = f"{len(prompts)} ShareGPT training questions from #{args.training_offset}"
    else:
        questions = [(name, q) for name in BENCHMARKS for q in load_benchmark(name, limit=args.per_benchmark)]
        prompts = [encode_prompt(target.tokenizer, q.turns[0]) for _, q in questions]
        sets = [name for name, _ in questions]
        source = f"{len(prompts)} held-out prompts ({args.per_benchmark} per benchmark, first turn)"
    margin = tree_margin(actions)
    limit = target.cfg.max_position_embeddings
    fixed = plan_cache_length(max(len(ids) for ids in prompts), args.new_tokens, margin, limit)

    def capacity_of(ids: list[int]) -> int:
        return fixed if args.cache == "fixed" else plan_cache_length(len(ids), args.new_tokens, margin, limit)

    gen = GenerationConfig(max_new_tokens=args.new_tokens, tree_margin=margin, temperature=args.temperature,
                           seed=args.seed, cache_len=fixed if args.cache == "fixed" else None)
    greedy = args.temperature == 0

    ar_outputs = [engine.generate(ids, gen, eos).token_ids for ids in prompts] if greedy else None
    rows = [run_decoder("resps_jax AR", lambda ids: engine.generate(ids, gen, eos), prompts, sets, capacity_of,
                        ar_outputs)]
    if greedy:  # the text itself, for offline looks (e.g. which lookup rule would have matched)
        rows[0]["prompts"], rows[0]["outputs"] = prompts, ar_outputs
    ar = summary(rows[0]["runs"])
    draft_weights = ["float32", "bfloat16"] if args.draft_weights == "both" else [args.draft_weights]
    for action in actions:
        for weights in draft_weights if action.uses_head else [None]:
            spec = SpeculativeEngine(engine, head if action.uses_head else None, [action], draft_weights=weights,
                                     ngram_match=args.ngram_match)
            name = format_action(action) + {"bfloat16": " bf16 head", "float32": " f32 head"}.get(weights, "")
            rows.append(run_decoder(name, lambda ids, s=spec: s.generate(ids, gen, eos), prompts, sets,
                                    capacity_of, ar_outputs))
            print(_fmt(rows[-1]["decoder"], summary(rows[-1]["runs"]), ar), flush=True)
    ours = len(rows)
    lookups = sorted({a.ngram for a in actions if a.ngram})
    if greedy and (args.peers or not args.no_hf):
        peers = {}
        if not args.no_hf:
            peers.update(hf_decoders(args.new_tokens, eos, lookups if args.peers else [], not args.peers))
        if args.peers:
            peers.update(llama_cpp_decoders(args.new_tokens, eos, lookups, max(capacity_of(ids) for ids in prompts)))
        for name, run in peers.items():
            rows.append(run_decoder(name, run, prompts, sets, capacity_of, ar_outputs))
            print(_fmt(name, summary(rows[-1]["runs"]), ar), flush=True)

    print(f"\nSmolLM2-135M-Instruct f32" + (f" + EAGLE-3 head ({args.draft})" if head is not None else "")
          + f"; {source}, {args.new_tokens} new tokens max, temperature {args.temperature:g}, cache {args.cache}, "
          f"lookup suffix <= {args.ngram_match}")
    print(f"{'decoder':<36}{'tok/s':>8}{'tok/step':>10}{'vs AR':>8}{'identical':>11}{'step cost':>11}")
    for row in rows:
        print(_fmt(row["decoder"], summary(row["runs"]), ar))
    names = list(dict.fromkeys(sets))
    if len(names) > 1:
        for label, key in (("tokens per step", "per_step"), ("speed vs our AR", "speed"),
                           ("step cost in AR steps", "cost")):
            print(f"\n{label}, per set:")
            print(f"{'decoder':<36}" + "".join(f"{n:>11}" for n in names) + f"{'all':>11}")
            for row in rows:
                cells = [_cell(row["runs"], rows[0]["runs"], key, n) for n in names + [None]]
                print(f"{row['decoder']:<36}" + "".join(f"{c:>11}" for c in cells))
    ranked = rows[1:ours]
    if ranked:
        best = max(ranked, key=lambda r: summary(r["runs"])["tok_s"])
        print(f"\nbest static action: {best['decoder']} at {summary(best['runs'])['tok_s'] / ar['tok_s']:.2f}x our AR")
        print("cost-acceptance front (no cheaper action emits as many tokens per step): "
              + ", ".join(r["decoder"] for r in front(ranked, ar)))
    if args.json_out:
        with open(args.json_out, "w") as f:
            json.dump({"source": source, "temperature": args.temperature, "new_tokens": args.new_tokens,
                       "ngram_match": args.ngram_match, "rows": rows}, f, indent=1)


def _cell(runs: list[dict], ar_runs: list[dict], key: str, name: str | None) -> str:
    mine = summary([r for r in runs if name is None or r["set"] == name])
    base = summary([r for r in ar_runs if name is None or r["set"] == name])
    if key == "per_step":
        return f"{mine['per_step']:.2f}"
    if key == "speed":
        return f"{mine['tok_s'] / base['tok_s']:.2f}x"
    return f"{mine['step_s'] / base['step_s']:.2f}" if mine["step_s"] and base["step_s"] else "-"


def front(rows: list[dict], ar: dict) -> list[dict]:
    """The actions no cheaper action matches in tokens per step, cheapest first: the candidates
    an action set keeps (an action off the front is dominated whatever the context)."""
    costed = sorted((summary(r["runs"])["step_s"] / ar["step_s"], summary(r["runs"])["per_step"], i)
                    for i, r in enumerate(rows) if summary(r["runs"])["per_step"] > 0)
    kept, best = [], 0.0
    for _, tokens, i in costed:
        if tokens > best:
            kept.append(rows[i])
            best = tokens
    return kept


def _fmt(name: str, s: dict, ar: dict) -> str:
    """One table row: "step cost" is decode time per step over AR's (prefill apart)."""
    same = "-" if s["mismatches"] is None else ("yes" if not s["mismatches"] else f"no ({s['mismatches']})")
    line = f"{name:<36}{s['tok_s']:>8.1f}{s['per_step']:>10.2f}{s['tok_s'] / ar['tok_s']:>7.2f}x{same:>11}"
    if s["step_s"] and ar["step_s"]:
        line += f"{s['step_s'] / ar['step_s']:>10.2f}x"
    return line


if __name__ == "__main__":
    main()
