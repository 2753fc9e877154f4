"""python -m resps_jax.generate: decode prompts with a Llama target (AR or a static draft tree).

Contract (DESIGN.md): --model M [--draft D] [--policy P] --mode {ar,static,resps}
[--tree TT,d,k | ngram:L | TT,d,k+ngram:L] [--temperature T] [--seed S] [--max-new-tokens N]
(--prompt TEXT ... | --prompts FILE.jsonl) [--no-chat] [--dtype float32|bfloat16]
[--mesh DATAxMODEL] [--json]. Bad input: one `error: ...` line, exit 2.
"""

from __future__ import annotations

import argparse
import json
import sys
import time

from resps_jax.decoding.action import action_json, format_action
from resps_jax.errors import UserError, run_cli

MODES = ("ar", "static", "resps")


class _Parser(argparse.ArgumentParser):
    """argparse whose errors are one `error: ...` line (no usage dump), exit 2."""

    def error(self, message: str):
        raise UserError(message)


def build_parser() -> argparse.ArgumentParser:
    p = _Parser(prog="python -m resps_jax.generate", description=__doc__.splitlines()[0])
    p.add_argument("--model", required=True, help="HF folder, .gguf file, or 'smollm2'")
    p.add_argument("--draft", help="EAGLE-3 folder or 'smollm2' (static/resps modes)")
    p.add_argument("--policy", help="policy checkpoint: a train workdir, its checkpoints/ folder (latest), one step, or 'smollm2' (the shipped one)")
    p.add_argument("--interval", type=int, help="resps mode: steps per policy decision (default: the policy's eval interval)")
    p.add_argument("--mode", choices=MODES, default="ar")
    p.add_argument("--tree", help="--mode static's action: TT,d,k (the head's tree), ngram:L (a prompt-lookup "
                                  "chain of up to L tokens, no head needed) or TT,d,k+ngram:L (both in one verify)")
    p.add_argument("--temperature", type=float, default=0.0)
    p.add_argument("--seed", type=int, default=0)
    p.add_argument("--max-new-tokens", type=int, default=128)
    group = p.add_mutually_exclusive_group(required=True)
    group.add_argument("--prompt", nargs="+", action="extend", help="one or more prompt texts (repeatable)")
    group.add_argument("--prompts", help="a .jsonl file of prompts (first turn of each)")
    p.add_argument("--no-chat", action="store_true", help="do not wrap prompts in the chat template")
    p.add_argument("--dtype", default="float32", help="float32 or bfloat16")
    p.add_argument("--mesh", help="DATAxMODEL device mesh, e.g. 2x4")
    p.add_argument("--matmul", choices=["kernel", "xla"],
                   help="weight products, attention and norms on the package's CPU kernels (default on one CPU "
                        "device: batch-invariant, so speculation matches AR bit for bit) or XLA's own ops "
                        "(default on meshes and accelerators)")
    p.add_argument("--cache-len", type=int, help="KV cache length (default: sized per prompt)")
    p.add_argument("--truncate-prompt", action="store_true", help="left-truncate prompts that do not fit")
    p.add_argument("--json", action="store_true", help="one JSON object per prompt")
    p.add_argument("--compare-ar", action="store_true",
                   help="static/resps modes: also decode each prompt with plain AR (warm) and report its speed "
                        "beside the speculative one, and whether the tokens are identical")
    p.add_argument("--debug", action="store_true", help="show Python tracebacks")
    return p


def check_args(args):
    """Every flag's value, checked before any weights load; the parsed static action."""
    from resps_jax.decoding.action import AR_ACTION, parse_action
    from resps_jax.decoding.tree import DEFAULT_TREE
    from resps_jax.models.loading import parse_dtype

    parse_dtype(args.dtype)
    if args.temperature < 0:
        raise UserError(f"--temperature must be >= 0 (got {args.temperature})")
    if args.max_new_tokens < 1:
        raise UserError(f"--max-new-tokens must be >= 1 (got {args.max_new_tokens})")
    if args.cache_len is not None and args.cache_len < 1:
        raise UserError(f"--cache-len must be >= 1 (got {args.cache_len})")
    if args.mode == "resps" and not (args.policy and args.draft):
        raise UserError("--mode resps needs --draft (an EAGLE-3 folder, or 'smollm2') and --policy (a checkpoint folder, or 'smollm2')")
    if args.interval is not None and args.interval < 1:
        raise UserError(f"--interval must be >= 1 (got {args.interval})")
    tree = parse_action(args.tree) if args.tree else DEFAULT_TREE
    if args.mode == "static" and tree == AR_ACTION:
        raise UserError("--tree ar drafts nothing: use --mode ar")
    if args.mode == "static" and tree.uses_head and not args.draft:
        raise UserError(f"--mode static with --tree {format_action(tree)} needs --draft (an EAGLE-3 folder, or "
                        "'smollm2'); --tree ngram:L needs none")
    return tree


def build_decoder(args, tree, target, engine, dtype):
    """(the decoder, its policy or None, the policy's interval) that --mode asks for."""
    from resps_jax.decoding.engine import SpeculativeEngine
    from resps_jax.models.loading import load_head

    if args.mode == "static":
        head = load_head(args.draft, target.cfg, dtype) if tree.uses_head else None
        return SpeculativeEngine(engine, head, [tree]), None, 30
    if args.mode == "resps":
        from resps_jax.rl.actions import parse_actions
        from resps_jax.rl.checkpoint import load_policy
        from resps_jax.rl.policy import state_dim

        agent, meta = load_policy(args.policy)
        agent.use_tokenizer(target.tokenizer)
        if agent.cfg.obs_dim != state_dim(target.cfg.hidden_size, agent.cfg.state):
            raise UserError(f"the policy's state size {agent.cfg.obs_dim} does not fit this target "
                            f"(hidden size {target.cfg.hidden_size}, state {agent.cfg.state})")
        head = load_head(args.draft, target.cfg, dtype)
        decoder = SpeculativeEngine(engine, head, parse_actions(";".join(meta["actions"])))
        return decoder, agent, args.interval or int(meta["interval_eval"])
    return engine, None, 30


def decode_warm(decoder, policy, interval: int, ids: list[int], gen, eos, hidden_size: int):
    """(the result of a decode that compiled nothing, the seconds spent compiling apart): a
    first call per new shape compiles, so it is timed apart and the request decoded again."""
    from resps_jax.pipeline import compile_policy

    def run():
        if policy is not None:
            return decoder.generate(ids, gen, eos, policy=policy, interval=interval)
        return decoder.generate(ids, gen, eos)

    before = decoder.executables()
    compile_seconds = 0.0
    if policy is not None:  # any action may come up: compile them all for this shape first
        seconds = decoder.warm_up(ids, gen, eos)
        start = time.perf_counter()
        compile_policy(policy, hidden_size)
        seconds += time.perf_counter() - start
        compile_seconds = seconds if decoder.executables() != before else 0.0
        before = decoder.executables()
    result = run()
    if decoder.executables() != before:
        compile_seconds = result.seconds
        result = run()
        compile_seconds = max(0.0, compile_seconds - result.seconds)
    return result, compile_seconds


def json_record(args, text: str, answer: str, result, compile_seconds: float, ar_result) -> dict:
    """--json's object for one prompt (the contract tests/test_cli_errors.py checks)."""
    record = {
        "prompt": text,
        "text": answer,
        "token_ids": result.token_ids,
        "new_tokens": result.new_tokens,
        "prompt_tokens": result.prompt_tokens,
        "seconds": round(result.seconds, 6),
        "tokens_per_second": round(result.tokens_per_second, 2),
        "prefill_seconds": round(result.prefill_seconds, 6),
        "decode_tokens_per_second": round(result.decode_tokens_per_second, 2),
        "steps": result.steps,
        "mean_accepted": round(result.mean_accepted, 4),
        "actions": [action_json(a) for a in result.actions],
        "compile_seconds": round(compile_seconds, 3),
        "mode": args.mode,
    }
    if ar_result is not None:
        record["ar_tokens_per_second"] = round(ar_result.tokens_per_second, 2)
        if args.temperature == 0:  # sampled runs draw other random numbers: only their law is AR's
            record["identical_to_ar"] = ar_result.token_ids == result.token_ids
    return record


def status_line(args, result, compile_seconds: float, ar_result) -> str:
    """The line printed to stderr after an answer: tokens, speed, actions, and AR beside it."""
    line = (f"[{result.new_tokens} tokens in {result.seconds:.2f}s, "
            f"{result.tokens_per_second:.1f} tok/s, mode {args.mode}"
            + (f", {compile_seconds:.1f}s compiling apart" if compile_seconds else "")
            + (f", action {format_action(result.actions[0])}" if args.mode == "static" else "")
            + (f", actions {' '.join(format_action(a) for a in result.actions)}" if args.mode == "resps" else ""))
    if ar_result is not None:
        line += (f"; AR {ar_result.tokens_per_second:.1f} tok/s, "
                 f"{result.tokens_per_second / ar_result.tokens_per_second:.2f}x")
        if args.temperature == 0:
            line += f", {'identical to' if ar_result.token_ids == result.token_ids else 'differs from'} AR"
    return line + "]"


def main(argv: list[str] | None = None) -> int:
    args = build_parser().parse_args(argv)
    tree = check_args(args)
    from resps_jax.models.loading import parse_dtype
    from resps_jax.models.sharding import parse_mesh

    dtype = parse_dtype(args.dtype)
    mesh_shape = parse_mesh(args.mesh)

    from resps_jax.distributed import agree, initialize, is_writer
    from resps_jax.prompting import encode_prompt, eos_token_ids, read_prompts_jsonl
    from resps_jax.runtime import setup_runtime

    initialize()  # joins a multi-process run when JAX_COORDINATOR_ADDRESS etc. are set
    setup_runtime()
    prompts = args.prompt if args.prompt else read_prompts_jsonl(args.prompts)
    tree = agree(tree)  # process 0's tree for every process: compiled shapes must agree

    from resps_jax.decoding.engine import Engine, GenerationConfig
    from resps_jax.models.loading import load_target
    from resps_jax.models.sharding import Placement, make_mesh

    placement = Placement(make_mesh(mesh_shape))
    target = load_target(args.model, dtype, placement=placement)
    engine = Engine(target.model, placement, matmul=args.matmul)
    decoder, policy, interval = build_decoder(args, tree, target, engine, dtype)
    gen = GenerationConfig(max_new_tokens=args.max_new_tokens, temperature=args.temperature, seed=args.seed,
                           cache_len=args.cache_len, truncate_prompt=args.truncate_prompt)
    eos = eos_token_ids(target.tokenizer, target.cfg.eos_token_ids)
    for text in prompts:
        ids = encode_prompt(target.tokenizer, text, chat=not args.no_chat)
        result, compile_seconds = decode_warm(decoder, policy, interval, ids, gen, eos, target.cfg.hidden_size)
        answer = target.tokenizer.decode(result.token_ids, skip_special_tokens=True)
        ar_result = None
        if args.compare_ar and decoder is not engine:
            engine.generate(ids, gen, eos)  # compiles here: the first call is not the one timed
            ar_result = engine.generate(ids, gen, eos)
        if not is_writer():
            continue
        if args.json:
            print(json.dumps(json_record(args, text, answer, result, compile_seconds, ar_result)), flush=True)
        else:
            print(answer, flush=True)
            print(status_line(args, result, compile_seconds, ar_result), file=sys.stderr)
    return 0


if __name__ == "__main__":
    run_cli(main)
