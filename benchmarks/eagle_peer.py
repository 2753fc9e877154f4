"""Our static trees beside EAGLE's own reference code: same target, head, prompts and trees.

Why: our accepted lengths are only credible if EAGLE's implementation, given the same
SmolLM2-135M target, the same EAGLE-3 head and the same chat-formatted prompt ids, accepts
as many tokens per verify step. This runs SafeAILab/EAGLE's `EaModel.eagenerate` in its own
python (benchmarks/eagle_worker.py, a subprocess: EAGLE is never imported into our venv)
and our SpeculativeEngine here, greedy on both, and prints per tree the mean tokens per
verify step (accepted drafts + the bonus token, the prefill's token excluded), tok/s, and
how many outputs are token-identical.

Both sides are scored by our engine's rule: a budget of --new-tokens counting the prefill's
token, stopping at (and keeping) the first EOS. EAGLE's loop stops one step later than that
(`new_token > max_new_tokens`), so its per-step accepted lengths are cut by the same rule;
its tok/s is over everything it decoded in its timed call.

    python benchmarks/eagle_peer.py [--eagle-python ../eagle_env/bin/python] [--eagle-repo ../eagle_src]
        [--eagle-threads 0] [--draft smollm2] [--trees "60,5,10;60,7,10;4,2,2"] [--per-benchmark 2] [--new-tokens 128]

EAGLE's side, set up once beside the checkout (CPU torch; EAGLE's Qwen3 module needs
transformers < 4.54, its requirements ask >= 4.53.1):

    git clone https://github.com/SafeAILab/EAGLE ../eagle_src
    python3.11 -m venv ../eagle_env
    ../eagle_env/bin/pip install torch --index-url https://download.pytorch.org/whl/cpu
    ../eagle_env/bin/pip install "transformers==4.53.3" accelerate safetensors sentencepiece protobuf

Without that python or repo, our numbers are printed alone (exit 0).
"""

from __future__ import annotations

import argparse
import json
import os
import subprocess
import sys
import tempfile
from pathlib import Path

from resps_jax.data.benchmarks import BENCHMARKS, load_benchmark
from resps_jax.decoding.action import Action
from resps_jax.decoding.engine import Engine, GenerationConfig, SpeculativeEngine
from resps_jax.decoding.tree import tree_margin
from resps_jax.models.cache import plan_cache_length, prefill_bucket
from resps_jax.models.loading import load_eagle3, load_target, resolve_draft_folder
from resps_jax.prompting import encode_prompt, eos_token_ids
from resps_jax.runtime import setup_runtime

Tree = tuple[int, int, int]
HERE = Path(__file__).resolve().parent
SIBLING = HERE.parent.parent  # the folder holding this checkout, where the setup above puts EAGLE


def score(step_tokens: list[int], output_ids: list[int], budget: int, eos: set[int]) -> tuple[int, int]:
    """(new tokens, verify steps) by our engine's rule, from per-step counts and the output.

    The prefill's token comes first; step i then emits step_tokens[i] tokens, cut at the
    first EOS (kept) or at `budget` tokens in all. Mean tokens per step is (new - 1) / steps.
    """
    if not output_ids:
        return 0, 0
    count, steps = 1, 0
    if output_ids[0] in eos:
        return count, steps
    for tokens in step_tokens:
        if count >= budget:
            break
        want = min(tokens, budget - count)
        emitted = output_ids[count : count + want]
        hit = next((j for j, t in enumerate(emitted) if t in eos), None)
        count += len(emitted) if hit is None else hit + 1
        steps += 1
        if hit is not None or len(emitted) < want:
            break
    return count, steps


def run_ours(engine: Engine, head, trees: list[Tree], prompts: list[list[int]], gen: GenerationConfig,
             eos: tuple[int, ...]) -> dict[Tree, list]:
    """Our SpeculativeEngine per tree; every prefill bucket is compiled before the timed runs."""
    results = {}
    for tree in trees:
        spec = SpeculativeEngine(engine, head, [tree])
        buckets = {prefill_bucket(len(ids), gen.cache_len): ids for ids in prompts}
        for ids in buckets.values():
            spec.generate(ids, gen, eos)
        results[tree] = [spec.generate(ids, gen, eos) for ids in prompts]
        print(f"ours: {tree[0]},{tree[1]},{tree[2]} done", file=sys.stderr, flush=True)
    return results


def run_eagle(python: Path, repo: Path, target: Path, draft: Path, trees: list[Tree], prompts: list[list[int]],
              new_tokens: int, eos: tuple[int, ...], threads: int) -> dict:
    """EAGLE's eagenerate through benchmarks/eagle_worker.py under EAGLE's own python."""
    request = {"eagle_repo": str(repo), "target": str(target), "draft": str(draft), "trees": [list(t) for t in trees],
               "prompts": prompts, "new_tokens": new_tokens, "eos": list(eos),
               "threads": threads}
    with tempfile.NamedTemporaryFile("w", suffix=".json") as f:
        json.dump(request, f)
        f.flush()
        proc = subprocess.run([str(python), str(HERE / "eagle_worker.py"), f.name], capture_output=True, text=True)
    if proc.returncode != 0:
        sys.exit(f"EAGLE worker failed ({proc.returncode}):\n{proc.stderr[-3000:]}")
    return json.loads(proc.stdout.strip().splitlines()[-1])


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--eagle-python", default=os.environ.get("EAGLE_PYTHON", SIBLING / "eagle_env/bin/python"))
    parser.add_argument("--eagle-repo", default=os.environ.get("EAGLE_REPO", SIBLING / "eagle_src"))
    parser.add_argument("--eagle-threads", type=int, default=0,
                        help="torch threads for EAGLE (0: torch's default); 1 avoids spin-waiting on a busy machine")
    parser.add_argument("--draft", default="smollm2")
    parser.add_argument("--trees", default="60,5,10;60,7,10;4,2,2", help="semicolon-separated TT,d,k")
    parser.add_argument("--per-benchmark", type=int, default=2)
    parser.add_argument("--new-tokens", type=int, default=128)
    args = parser.parse_args()
    setup_runtime()  # also puts HF offline for the worker, which inherits the environment

    target = load_target("smollm2")
    draft = resolve_draft_folder(args.draft)
    head = load_eagle3(draft, target.cfg)
    engine = Engine(target.model)
    eos = eos_token_ids(target.tokenizer, target.cfg.eos_token_ids)
    questions = [q for name in BENCHMARKS for q in load_benchmark(name, limit=args.per_benchmark)]
    prompts = [encode_prompt(target.tokenizer, q.turns[0]) for q in questions]
    trees: list[Tree] = [tuple(int(v) for v in t.split(",")) for t in args.trees.split(";") if t.strip()]
    margin = tree_margin([Action(*t) for t in trees])
    cache_len = plan_cache_length(max(map(len, prompts)), args.new_tokens, margin, target.cfg.max_position_embeddings)
    gen = GenerationConfig(max_new_tokens=args.new_tokens, tree_margin=margin, cache_len=cache_len)

    ours = run_ours(engine, head, trees, prompts, gen, eos)
    python, repo = Path(args.eagle_python), Path(args.eagle_repo)
    eagle = None
    if python.is_file() and (repo / "eagle/model/ea_model.py").is_file():
        eagle = run_eagle(python, repo, target.folder, draft, trees, prompts, args.new_tokens, eos, args.eagle_threads)
    else:
        print(f"EAGLE reference not found (python {python}, repo {repo}): see the setup in this script's "
              "docstring or pass --eagle-python/--eagle-repo; printing our numbers alone")

    print(f"\nSmolLM2-135M-Instruct f32 + EAGLE-3 head {draft}; {len(prompts)} prompts ({args.per_benchmark} per "
          f"benchmark, first turn, chat template), {args.new_tokens} new tokens max, greedy, stop at EOS {list(eos)}")
    if eagle:
        versions = eagle["versions"]
        print(f"EAGLE: {repo} under torch {versions['torch']}, transformers {versions['transformers']}, "
              f"torch threads {args.eagle_threads or 'default'}")
    print(f"{'tree':<10}{'ours tok/step':>14}{'EAGLE tok/step':>15}{'ratio':>7}{'ours tok/s':>11}{'EAGLE tok/s':>12}"
          f"{'identical':>11}")
    eagle_by_tree = {tuple(t["tree"]): t["runs"] for t in eagle["trees"]} if eagle else {}
    for tree in trees:
        results = ours[tree]
        o_tokens = sum(r.new_tokens for r in results)
        o_per_step = sum(r.new_tokens - 1 for r in results) / max(1, sum(r.steps for r in results))
        o_tok_s = o_tokens / sum(r.seconds for r in results)
        line = f"{'/'.join(map(str, tree)):<10}{o_per_step:>14.2f}"
        if any(score(r.accepted_per_step, r.token_ids, args.new_tokens, set(eos)) != (r.new_tokens, r.steps)
               for r in results):  # the rule EAGLE is scored by must be our engine's own
            print(f"warning: score() does not reproduce our engine's counts at {tree}", file=sys.stderr)
        if tree in eagle_by_tree:
            runs = eagle_by_tree[tree]
            scored = [score(r["step_tokens"], r["output_ids"], args.new_tokens, set(eos)) for r in runs]
            e_per_step = sum(n - 1 for n, _ in scored) / max(1, sum(s for _, s in scored))
            e_tok_s = sum(r["new_token"] for r in runs) / sum(r["seconds"] for r in runs)
            same = sum(r.token_ids == e["output_ids"][:n] for r, e, (n, _) in zip(results, runs, scored))
            line += (f"{e_per_step:>15.2f}{o_per_step / e_per_step:>7.3f}{o_tok_s:>11.1f}{e_tok_s:>12.1f}"
                     f"{f'{same}/{len(runs)}':>11}")
        else:
            line += f"{'-':>15}{'-':>7}{o_tok_s:>11.1f}{'-':>12}{'-':>11}"
        print(line)


if __name__ == "__main__":
    main()
