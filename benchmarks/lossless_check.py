"""Greedy losslessness on the benchmark files: static actions vs our AR, token by token.

For every prompt (first turn) of the five benchmark sets, decodes with AR and with each
static action (head trees, n-gram chains, both) and compares the tokens. A divergence is explained or not: the target's top-2
logit gap at the first differing position is computed, and one below 1e-4 is a
floating-point near-tie (with XLA's dot, tree verification batches the same math
differently; the CPU kernels are batch-invariant, so there a divergence of any kind is a
bug); anything else would be a bug. Prints counts per benchmark and tree, and the worst gap.

    python benchmarks/lossless_check.py [--per-benchmark 80] [--trees "8,3,2;ngram:4;3,1,2+ngram:4"]
        [--benchmarks mt_bench,sum] [--log docs/results/lossless/kernel-f32.jsonl]   # resumable: a rerun skips what the log holds
        [--policy WORKDIR] [--cycle "ar;4,2,2;8,3,2"] [--interval 4] [--matmul kernel|xla] [--dtype bfloat16]

Policy-driven decoders switch actions between intervals: `--policy` runs a trained Re-SpS
policy (sampled at its inference temperature), `--cycle` a round-robin over an action set
(`ar` included), so every switch, to and from `ar`, is exercised on real prompts.
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
from resps_jax.decoding.action import action_json, format_action
from resps_jax.prompting import encode_prompt, eos_token_ids
from resps_jax.rl.actions import parse_actions
from resps_jax.rl.checkpoint import load_policy
from resps_jax.runtime import setup_runtime

NEAR_TIE = 1e-4


def top2_gap(target, ids: list[int]) -> float:
    """Target logit gap between the best and second-best next token after `ids`."""
    cfg = target.cfg
    dtype = target.embed_tokens.weight[...].dtype
    cache = KVCache.create(cfg.num_layers, 1, len(ids), cfg.num_kv_heads, cfg.head_dim, dtype)
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
    parser.add_argument("--policy", help="a trained policy (train workdir or checkpoint): adds decoder 'resps'")
    parser.add_argument("--cycle", help="an action set ('ar;4,2,2;...') run round-robin: adds decoder 'cycle'")
    parser.add_argument("--interval", type=int, default=4, help="steps per decision for --policy / --cycle")
    parser.add_argument("--matmul", choices=["kernel", "xla"], help="backend (default: the kernels on one CPU device)")
    parser.add_argument("--dtype", default="float32", choices=["float32", "bfloat16"])
    args = parser.parse_args()
    setup_runtime()
    target = load_target("smollm2", jnp.dtype(args.dtype))
    engine = Engine(target.model, matmul=args.matmul)
    head = load_eagle3(resolve_draft_folder(args.draft), target.cfg)
    decoders = {label(action_json(a)): (SpeculativeEngine(engine, head if a.uses_head else None, [a]), None)
                for a in parse_actions(args.trees)}
    if args.policy:
        agent, meta = load_policy(args.policy)
        decoders["resps"] = (SpeculativeEngine(engine, head, parse_actions(";".join(meta["actions"]))), agent)
    if args.cycle:
        actions = parse_actions(args.cycle)
        calls = []
        decoders["cycle"] = (SpeculativeEngine(engine, head, actions),
                             lambda _taps: calls.append(0) or (len(calls) % len(actions)))
    eos = eos_token_ids(target.tokenizer, target.cfg.eos_token_ids)
    margin = max(spec.tree_margin for spec, _ in decoders.values())
    gen = GenerationConfig(max_new_tokens=args.new_tokens, tree_margin=margin)
    records = []
    if args.log and Path(args.log).is_file():
        records = [json.loads(line) for line in Path(args.log).read_text().splitlines() if line.strip()]
    done = {(r["benchmark"], r["question_id"], label(r["tree"])) for r in records}
    for name in args.benchmarks.split(","):
        for q in load_benchmark(name, limit=args.per_benchmark):
            todo = [key for key in decoders if (name, q.question_id, key) not in done]
            if not todo:
                continue
            ids = encode_prompt(target.tokenizer, q.turns[0])
            ar = engine.generate(ids, gen, eos).token_ids
            for key in todo:
                spec, policy = decoders[key]
                if policy is None:
                    result = spec.generate(ids, gen, eos)
                else:
                    result = spec.generate(ids, gen, eos, policy=policy, interval=args.interval)
                out = result.token_ids
                record = {"benchmark": name, "question_id": q.question_id,
                          "tree": key if policy is not None else action_json(spec.actions[0]), "identical": out == ar}
                if policy is not None:
                    record["actions"] = [format_action(a) for a in result.actions]
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


def label(tree) -> str:
    """A decoder's name in logs and reports: '(8, 3, 2)' for a head tree alone (a logged
    [TT, d, k]), else its name ('ngram:4', '3,1,2+ngram:4', 'resps', 'cycle')."""
    return tree if isinstance(tree, str) else str(tuple(tree))


def summarize(records: list[dict]) -> dict[str, dict]:
    """Counts per (benchmark, tree): prompts, identical, near-ties, other divergences, gaps."""
    report: dict[str, dict] = {}
    for r in records:
        row = report.setdefault(f"{r['benchmark']} {label(r['tree'])}",
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
