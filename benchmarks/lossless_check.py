"""Greedy losslessness on the benchmark files: static trees vs our AR, token by token.

For every prompt (first turn) of the five benchmark sets, decodes with AR and with each
tree shape and compares the tokens. A divergence is explained or not: the target's top-2
logit gap at the first differing position is computed, and one below 1e-4 is a
floating-point near-tie (tree verification batches the same math differently); anything
else would be a bug. Prints counts per benchmark and tree, and the worst gap.

    python benchmarks/lossless_check.py [--per-benchmark 80] [--trees "8,3,2;16,4,4;7,5,1"]
        [--benchmarks mt_bench,sum] [--log docs/lossless_log.jsonl]   # resumable, across sessions
"""

from __future__ import annotations

import argparse
import json
from pathlib import Path

import jax.numpy as jnp
import numpy as np

from resps_jax.data.benchmarks import BENCHMARKS, load_benchmark
from resps_jax.decoding.engine import Engine, GenerationConfig, SpeculativeEngine
from resps_jax.models.cache import KVCache
from resps_jax.models.llama import causal_mask
from resps_jax.models.loading import load_eagle3, load_target, resolve_draft_folder
from resps_jax.prompting import encode_prompt, eos_token_ids
from resps_jax.runtime import setup_runtime

NEAR_TIE = 1e-4


def top2_gap(target, ids: list[int]) -> float:
    """Target logit gap between the best and second-best next token after `ids`."""
    cfg = target.cfg
    cache = KVCache.create(cfg.num_layers, 1, len(ids), cfg.num_kv_heads, cfg.head_dim, jnp.float32)
    hidden, _, _ = target(jnp.asarray([ids]), jnp.arange(len(ids))[None], cache, causal_mask(1, len(ids)))
    top = np.sort(np.asarray(target.logits(hidden[0, -1])))[-2:]
    return float(top[1] - top[0])


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--per-benchmark", type=int, default=80)
    parser.add_argument("--benchmarks", default=",".join(BENCHMARKS), help="comma-separated subset")
    parser.add_argument("--new-tokens", type=int, default=128)
    parser.add_argument("--trees", default="8,3,2;16,4,4;7,5,1")
    parser.add_argument("--draft", default="smollm2")
    parser.add_argument("--log", help="JSONL of per-prompt results; prompts already in it are skipped (resume)")
    parser.add_argument("--json-out")
    args = parser.parse_args()
    setup_runtime()
    target = load_target("smollm2")
    engine = Engine(target.model)
    head = load_eagle3(resolve_draft_folder(args.draft), target.cfg)
    trees = [tuple(int(v) for v in t.split(",")) for t in args.trees.split(";")]
    specs = {tree: SpeculativeEngine(engine, head, [tree]) for tree in trees}
    eos = eos_token_ids(target.tokenizer, target.cfg.eos_token_ids)
    gen = GenerationConfig(max_new_tokens=args.new_tokens, tree_margin=max(t[0] for t in trees) + max(t[1] for t in trees) + 2)
    records = []
    if args.log and Path(args.log).is_file():
        records = [json.loads(line) for line in Path(args.log).read_text().splitlines() if line.strip()]
    done = {(r["benchmark"], r["question_id"], tuple(r["tree"])) for r in records}
    for name in args.benchmarks.split(","):
        for q in load_benchmark(name, limit=args.per_benchmark):
            todo = [tree for tree in trees if (name, q.question_id, tree) not in done]
            if not todo:
                continue
            ids = encode_prompt(target.tokenizer, q.turns[0])
            ar = engine.generate(ids, gen, eos).token_ids
            for tree in todo:
                out = specs[tree].generate(ids, gen, eos).token_ids
                record = {"benchmark": name, "question_id": q.question_id, "tree": list(tree), "identical": out == ar}
                if out != ar:
                    first = next((i for i, (a, b) in enumerate(zip(ar, out)) if a != b), min(len(ar), len(out)))
                    record.update(position=first, gap=top2_gap(target.model, ids + ar[:first]))
                records.append(record)
                if args.log:
                    with open(args.log, "a") as f:
                        f.write(json.dumps(record) + "\n")
    report = summarize(records)
    for key, row in report.items():
        print(f"{key:<24}: {row['identical']}/{row['prompts']} identical, {row['near_ties']} near-ties, "
              f"{row['other']} other", flush=True)
    total = sum(r["prompts"] for r in report.values())
    same = sum(r["identical"] for r in report.values())
    other = sum(r["other"] for r in report.values())
    print(f"\n{same}/{total} identical; {total - same - other} near-ties (top-2 gap < {NEAR_TIE}); {other} other divergences")
    if args.json_out:
        with open(args.json_out, "w") as f:
            json.dump(report, f, indent=2)


def summarize(records: list[dict]) -> dict[str, dict]:
    """Counts per (benchmark, tree): prompts, identical, near-ties, other divergences, gaps."""
    report: dict[str, dict] = {}
    for r in records:
        row = report.setdefault(f"{r['benchmark']} {tuple(r['tree'])}",
                                {"prompts": 0, "identical": 0, "near_ties": 0, "other": 0, "gaps": []})
        row["prompts"] += 1
        if r["identical"]:
            row["identical"] += 1
        else:
            row["gaps"].append(r["gap"])
            row["near_ties" if r["gap"] < NEAR_TIE else "other"] += 1
    return report


if __name__ == "__main__":
    main()
