"""Speculative decoding speed on the embedded default, side by side in one run.

For SmolLM2-135M-Instruct + its trained EAGLE-3 head, over held-out benchmark prompts (first
turns, chat template): our AR, static trees on a grid (EAGLE-3's GPU defaults 60/5/10 and
60/7/10, a plain chain, and CPU-sized trees), transformers' greedy generate and its assisted
generation by prompt lookup. Prints tokens/s, mean accepted tokens per step, speedup over our
AR, and whether every output is token-identical to our AR (greedy, so it must be).

    python benchmarks/spec_decode.py [--per-benchmark 4] [--new-tokens 128] [--draft smollm2]
"""

from __future__ import annotations

import argparse
import json
import time

from resps_jax.data.benchmarks import BENCHMARKS, load_benchmark
from resps_jax.decoding.engine import Engine, GenerationConfig, SpeculativeEngine, prefill_bucket
from resps_jax.models.cache import plan_cache_length
from resps_jax.models.loading import load_eagle3, load_target, resolve_draft_folder, smollm2_gguf
from resps_jax.prompting import encode_prompt, eos_token_ids
from resps_jax.runtime import setup_runtime

GRID = [
    (60, 5, 10), (60, 7, 10),  # EAGLE-3's evaluation default and its library default (GPU-sized)
    (7, 5, 1),  # a plain chain: 5 expansions of top-1 (EAGLE's depth counts expansions)
    (4, 2, 2), (6, 3, 2), (8, 3, 2), (8, 4, 2), (10, 4, 3), (12, 4, 3), (16, 4, 4), (16, 5, 4), (24, 5, 4), (32, 6, 8),
]


def run_decoder(name, generate, prompts, capacity_of, reference=None) -> dict:
    for ids in warmup_prompts(prompts, capacity_of):  # compile every (prefill bucket, cache) outside the timed runs
        generate(ids)
    tokens = seconds = steps = drafted = 0
    mismatches = []
    for i, ids in enumerate(prompts):
        result = generate(ids)
        tokens += result.new_tokens
        seconds += result.seconds
        steps += result.steps
        drafted += result.new_tokens - 1
        if reference is not None and result.token_ids != reference[i]:
            mismatches.append(i)
    return {
        "decoder": name, "tokens": tokens, "seconds": round(seconds, 3), "tok_s": tokens / seconds,
        "mean_accepted": drafted / steps if steps else 0.0, "mismatches": mismatches,
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


def hf_decoders(prompts, new_tokens: int, eos: tuple[int, ...]):
    import torch
    from transformers import AutoModelForCausalLM

    gguf = smollm2_gguf()
    model = AutoModelForCausalLM.from_pretrained(str(gguf.parent), gguf_file=gguf.name, dtype=torch.float32).eval()

    def timed(**kwargs):
        def run(ids):
            start = time.perf_counter()
            with torch.no_grad():
                out = model.generate(torch.tensor([ids]), max_new_tokens=new_tokens, do_sample=False,
                                     eos_token_id=list(eos), pad_token_id=eos[0], **kwargs)
            new = out[0, len(ids):].tolist()
            return _Result(new, time.perf_counter() - start)
        return run

    return {"transformers greedy": timed(), "transformers prompt lookup (10)": timed(prompt_lookup_num_tokens=10)}


class _Result:
    def __init__(self, token_ids, seconds):
        self.token_ids, self.seconds = token_ids, seconds
        self.new_tokens, self.steps = len(token_ids), 0


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--per-benchmark", type=int, default=4)
    parser.add_argument("--new-tokens", type=int, default=128)
    parser.add_argument("--draft", default="smollm2")
    parser.add_argument("--trees", help="semicolon-separated TT,d,k list replacing the grid")
    parser.add_argument("--cache", choices=("fit", "fixed"), default="fit",
                        help="fit: each prompt's cache sized as generate sizes it (prompt + new tokens + the "
                             "grid's largest tree margin, rounded up to 128), the same for every decoder; "
                             "fixed: one length for all, from the longest prompt")
    parser.add_argument("--no-hf", action="store_true")
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
    parser.add_argument("--json-out", help="write the rows here too")
    args = parser.parse_args()
    setup_runtime()

    target = load_target("smollm2")
    head = load_eagle3(resolve_draft_folder(args.draft), target.cfg)
    engine = Engine(target.model, matmul=args.matmul)
    eos = eos_token_ids(target.tokenizer, target.cfg.eos_token_ids)
    if args.training_prompts > 0:
        from resps_jax.data.prompts import load_training_prompts

        conversations = load_training_prompts("sharegpt", seed=42)[args.training_offset:]
        prompts = [ids for ids in (encode_prompt(target.tokenizer, c[0]) for c in conversations[:4 * args.training_prompts])
                   if len(ids) <= 256][: args.training_prompts]
        source = f"{len(prompts)} ShareGPT training questions from #{args.training_offset}"
    else:
        questions = [q for name in BENCHMARKS for q in load_benchmark(name, limit=args.per_benchmark)]
        prompts = [encode_prompt(target.tokenizer, q.turns[0]) for q in questions]
        source = f"{len(prompts)} held-out prompts ({args.per_benchmark} per benchmark, first turn)"
    grid = [tuple(int(v) for v in t.split(",")) for t in args.trees.split(";")] if args.trees else GRID
    margin = max(tt for tt, _, _ in grid) + max(d for _, d, _ in grid) + 2
    limit = target.cfg.max_position_embeddings
    fixed = plan_cache_length(max(len(ids) for ids in prompts), args.new_tokens, margin, limit)

    def capacity_of(ids: list[int]) -> int:
        return fixed if args.cache == "fixed" else plan_cache_length(len(ids), args.new_tokens, margin, limit)

    gen = GenerationConfig(max_new_tokens=args.new_tokens, tree_margin=margin,
                           cache_len=fixed if args.cache == "fixed" else None)

    ar_outputs = [engine.generate(ids, gen, eos).token_ids for ids in prompts]
    rows = [run_decoder("resps_jax AR", lambda ids: engine.generate(ids, gen, eos), prompts, capacity_of, ar_outputs)]
    draft_weights = ["float32", "bfloat16"] if args.draft_weights == "both" else [args.draft_weights]
    for tree in grid:
        for weights in draft_weights:
            spec = SpeculativeEngine(engine, head, [tree], draft_weights=weights)
            name = f"static {tree[0]}/{tree[1]}/{tree[2]}" + {"bfloat16": " bf16 head", "float32": " f32 head"}.get(
                weights, "")
            rows.append(run_decoder(name, lambda ids, s=spec: s.generate(ids, gen, eos), prompts, capacity_of,
                                    ar_outputs))
            print(_fmt(rows[-1], rows[0]["tok_s"]), flush=True)
    if not args.no_hf:
        for name, run in hf_decoders(prompts, args.new_tokens, eos).items():
            rows.append(run_decoder(name, run, prompts, capacity_of, ar_outputs))

    print(f"\nSmolLM2-135M-Instruct f32 + EAGLE-3 head ({args.draft}); {source}, "
          f"{args.new_tokens} new tokens max, greedy, cache {args.cache}")
    print(f"{'decoder':<34}{'tok/s':>8}{'mean acc':>10}{'vs AR':>8}{'identical':>11}{'step cost':>11}{'2x needs':>10}")
    for row in rows:
        print(_fmt(row, rows[0]["tok_s"]))
    tree_rows = rows[1 : 1 + len(grid) * len(draft_weights)]
    best = max(tree_rows, key=lambda r: r["tok_s"])
    print(f"\nbest static tree: {best['decoder']} at {best['tok_s'] / rows[0]['tok_s']:.2f}x our AR")
    print("cost-acceptance front (no cheaper tree emits as many tokens per step): "
          + ", ".join(r["decoder"] for r in front(tree_rows, rows[0]["tok_s"])))
    if args.json_out:
        with open(args.json_out, "w") as f:
            json.dump(rows, f, indent=2)


def front(rows: list[dict], ar_tok_s: float) -> list[dict]:
    """The trees no cheaper tree matches in tokens per step, cheapest first: the candidates
    an action set keeps (a tree off the front is dominated whatever the context)."""
    costed = sorted((r["mean_accepted"] * ar_tok_s / r["tok_s"], r["mean_accepted"], i) for i, r in enumerate(rows)
                    if r["mean_accepted"] > 0)
    kept, best = [], 0.0
    for _, tokens, i in costed:
        if tokens > best:
            kept.append(rows[i])
            best = tokens
    return kept


def _fmt(row: dict, ar_tok_s: float) -> str:
    """One table row. For our decoders, "step cost" is a verify step's time in AR steps
    (mean accepted x AR tok/s / tok/s, prefill amortised alike) and "2x needs" the mean
    accepted length that cost would need for 2x our AR."""
    same = "yes" if not row["mismatches"] else f"no ({len(row['mismatches'])})"
    line = (f"{row['decoder']:<34}{row['tok_s']:>8.1f}{row['mean_accepted']:>10.2f}"
            f"{row['tok_s'] / ar_tok_s:>7.2f}x{same:>11}")
    if row["mean_accepted"] > 0:
        cost = row["mean_accepted"] * ar_tok_s / row["tok_s"]
        line += f"{cost:>10.2f}x{2 * cost:>10.2f}"
    return line


if __name__ == "__main__":
    main()
