"""Does the AR decode loop move whole KV-cache buffers each step? HLO census + ms per token.

Builds the SmolLM2-135M architecture (vocab 49152, hidden 576, MLP 1536, 30 layers, 9 heads,
3 KV heads, head_dim 64, float32) with RANDOM weights, so it needs no checkpoint, and jits
the AR loop exactly as `Engine` does (cache donated, one `lax.while_loop`). Then:

  (a) compiles the AR loop at one cache length, dumps its optimized HLO to a file, and
      counts transpose and copy instructions whose shape has the cache's slot dimension,
      inside while bodies (what runs per token) and in the whole module, twice: any such
      shape, and only cache-sized ones (>= slots x head_dim elements: whole K/V buffers);
  (b) times the AR loop alone (prefill excluded) in ms per token at each cache length.

Both numbers matter because XLA:CPU is free to insert layout changes and copies: a cache
stored as [B, KVH, S, D] was still transposed and copied every step, because of the
einsums' operand order, and would be copied if a dot read the result of the in-place write
or if nothing ordered the write after the reads (see models/llama.py Attention). The
census says whether that happens; the timing says what it costs (reading a 1792-slot f32
cache is 30 layers x 2 x 3 x 1792 x 64 x 4 B = 83 MB per token).

    python benchmarks/probes/attention_probe.py [--hlo-slots 1792] [--slots 256,1792] [--new-tokens 64]
        [--fill] [--matmul kernel|xla]
"""

from __future__ import annotations

import argparse
import math
import re
import statistics
import time
from pathlib import Path

import jax
import numpy as np

from resps_jax.decoding.engine import Engine, GenerationConfig, pad_prompts
from resps_jax.models.config import LlamaConfig
from resps_jax.models.tiny import random_pair

SMOLLM2 = LlamaConfig(
    vocab_size=49152, hidden_size=576, intermediate_size=1536, num_layers=30, num_heads=9,
    num_kv_heads=3, head_dim=64, max_position_embeddings=8192,
)
PROMPT_TOKENS = 16

_COMPUTATION = re.compile(r"^(?:ENTRY\s+)?%?([\w.\-]+)\s.*\{\s*$")
_CALLS = re.compile(r"(?:calls|body|condition|to_apply|branch_computations)=\{?([%\w.\-, ]+)\}?")


def computations(hlo: str) -> dict[str, list[str]]:
    """Optimized HLO text -> {computation name: its instruction lines}."""
    out: dict[str, list[str]] = {}
    current = None
    for line in hlo.splitlines():
        match = _COMPUTATION.match(line)
        if match and "=" not in line.split("{")[0].split("(")[0]:
            current = match.group(1)
            out[current] = []
        elif line.strip() == "}":
            current = None
        elif current is not None:
            out[current].append(line.strip())
    return out


def while_bodies(comps: dict[str, list[str]]) -> set[str]:
    """Every computation reachable from a while loop's body (fusions and calls included)."""
    roots = {m.group(1) for lines in comps.values() for line in lines for m in [re.search(r"body=%?([\w.\-]+)", line)] if m}
    seen: set[str] = set()
    todo = list(roots)
    while todo:
        name = todo.pop()
        if name in seen or name not in comps:
            continue
        seen.add(name)
        for line in comps[name]:
            for group in _CALLS.findall(line):
                todo.extend(n.strip().lstrip("%") for n in group.split(",") if n.strip())
    return seen


def moves_of_slots(lines: list[str], slots: int, min_elements: int = 0) -> list[str]:
    """transpose/copy instructions whose shape has `slots` as a dimension.

    Optimized HLO prints operands by name only, so this reads the result shape (a transpose
    or copy has its operand's dimensions, permuted or not). With `min_elements`, only
    shapes at least that large count: slots x head_dim singles out moves of whole K/V
    buffers from moves of the attention scores (head_dim / (G x T) times smaller).
    """
    dim = re.compile(rf"\[((?:\d+,)*{slots}(?:,\d+)*)\]")
    found = []
    for line in lines:
        text = line.split(", metadata=")[0]
        if not re.search(r"\s(transpose|copy)\(", text):
            continue
        sizes = [math.prod(int(n) for n in m.group(1).split(",")) for m in dim.finditer(text)]
        if sizes and max(sizes) >= min_elements:
            found.append(line)
    return found


def census(hlo: str, slots: int, min_elements: int = 0) -> tuple[list[str], list[str]]:
    """(slot-dimension moves inside the while body, slot-dimension moves anywhere)."""
    comps = computations(hlo)
    body = while_bodies(comps)
    in_body = [line for name in body for line in moves_of_slots(comps[name], slots, min_elements)]
    anywhere = [line for lines in comps.values() for line in moves_of_slots(lines, slots, min_elements)]
    return in_body, anywhere


def kinds(lines: list[str]) -> dict[str, int]:
    return {k: sum(f" {k}(" in line for line in lines) for k in ("transpose", "copy")}


def ar_inputs(engine: Engine, slots: int, new_tokens: int, fill: bool = False):
    """Prefill a prompt into a fresh `slots` cache; the AR loop's arguments.

    The prompt has 16 tokens, or with `fill` as many as leave room for the new ones (a long
    prompt: the CPU attention kernel reads only the committed slots, so a short prompt in a
    large cache costs what it costs in a small one).
    """
    prefill, ar_loop = engine.steps_for(1)
    length = slots - new_tokens - 8 if fill else PROMPT_TOKENS
    ids = [int(t) for t in np.random.default_rng(0).integers(0, engine.cfg.vocab_size, length)]
    tokens, lengths = pad_prompts([ids], slots)
    seed, temperature = np.int32(0), np.float32(0.0)
    cache, first = prefill(engine.params, engine.new_cache(1, slots), tokens, np.asarray(lengths, np.int32), temperature, seed)
    eos = np.asarray((-1,), np.int32)  # never stops early: exactly new_tokens per run
    return ar_loop, (engine.params, cache, first, np.int32(new_tokens), eos, temperature, seed)


def optimized_hlo(engine: Engine, slots: int, new_tokens: int) -> str:
    ar_loop, args = ar_inputs(engine, slots, new_tokens)
    return ar_loop.lower(*args).compile().as_text()


def ms_per_token(engine: Engine, slots: int, new_tokens: int, repeats: int, fill: bool) -> tuple[float, float]:
    """(best, median) ms per generated token of the AR loop alone, compile excluded."""
    times = []
    for run in range(repeats + 1):
        ar_loop, args = ar_inputs(engine, slots, new_tokens, fill)
        jax.block_until_ready(args)
        start = time.perf_counter()
        _, out, count = ar_loop(*args)
        jax.block_until_ready((out, count))
        if run:  # the first run compiles
            times.append((time.perf_counter() - start) * 1e3 / (new_tokens - 1))
    return min(times), statistics.median(times)


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--hlo-slots", type=int, default=1792)
    parser.add_argument("--slots", default="256,1792")
    parser.add_argument("--new-tokens", type=int, default=64)
    parser.add_argument("--repeats", type=int, default=3)
    parser.add_argument("--hlo-out", default="/tmp/ar_loop_hlo.txt")
    parser.add_argument("--show", type=int, default=6, help="print this many offending HLO lines")
    parser.add_argument("--fill", action="store_true", help="prompts that fill each cache (long contexts)")
    parser.add_argument("--matmul", choices=["kernel", "xla"], help="backend (default: the kernels on one CPU device)")
    args = parser.parse_args()

    target, _ = random_pair(SMOLLM2, scale=1.0)
    engine = Engine(target, matmul=args.matmul)
    print(f"jax {jax.__version__}, {jax.devices()[0].platform}; SmolLM2-shaped random weights, f32")

    hlo = optimized_hlo(engine, args.hlo_slots, args.new_tokens)
    Path(args.hlo_out).write_text(hlo)
    print(f"optimized HLO of the AR loop at S={args.hlo_slots} -> {args.hlo_out}")
    cache_sized = args.hlo_slots * SMOLLM2.head_dim
    for label, floor in (("any shape with the slot dim", 0), (f"cache-sized (>= S x D = {cache_sized} elements)", cache_sized)):
        in_body, anywhere = census(hlo, args.hlo_slots, floor)
        print(f"  transpose/copy, {label}: {len(in_body)} in the while body {kinds(in_body)}, {len(anywhere)} in the module")
        for line in in_body[: args.show]:
            line = line.split(", metadata=")[0]
            print("    " + (line if len(line) < 200 else line[:200] + " ..."))

    for slots in (int(s) for s in args.slots.split(",")):
        best, median = ms_per_token(engine, slots, args.new_tokens, args.repeats, args.fill)
        prompt = slots - args.new_tokens - 8 if args.fill else PROMPT_TOKENS
        print(f"AR loop S={slots:<5} prompt {prompt:<5} {args.new_tokens} new tokens: {best:7.2f} ms/token best, "
              f"{median:7.2f} median")


if __name__ == "__main__":
    main()
