"""AR decoding speed on the embedded default, side by side in one run.

Prints, for SmolLM2-135M-Instruct and N new tokens after a chat prompt: our AR tokens/s,
transformers' greedy `generate` tokens/s on the same GGUF, the machine's read bandwidth
measured now, and the read-bandwidth roofline (weight bytes read per token / bandwidth).
Both decoders are forced to produce exactly N tokens (EOS ignored) so the work is equal.

    python benchmarks/ar_decode.py [--new-tokens 128] [--repeats 3] [--dtype float32]
"""

from __future__ import annotations

import argparse
import statistics
import time

import jax
import jax.numpy as jnp
from flax import nnx

from resps_jax.decoding.engine import Engine, GenerationConfig
from resps_jax.models.loading import load_target, parse_dtype, smollm2_gguf
from resps_jax.prompting import encode_prompt
from resps_jax.runtime import setup_runtime

PROMPT = "Explain in three sentences why the sky is blue."


def read_bandwidth_gbs(gib: float = 1.0, repeats: int = 7) -> float:
    """Best-of-N GB/s of a jitted sum over a large float32 array (a pure streaming read)."""
    x = jnp.ones((int(gib * 2**30) // 4,), jnp.float32)
    total = jax.jit(jnp.sum)
    total(x).block_until_ready()
    best = float("inf")
    for _ in range(repeats):
        start = time.perf_counter()
        total(x).block_until_ready()
        best = min(best, time.perf_counter() - start)
    return x.nbytes / best / 1e9


def weight_bytes_per_token(engine: Engine) -> int:
    """Every parameter is read once per token (the tied embedding as the LM head)."""
    leaves = jax.tree.leaves(nnx.to_pure_dict(engine.params))
    return int(sum(leaf.nbytes for leaf in leaves))


def time_ours(engine: Engine, ids: list[int], new_tokens: int, repeats: int) -> tuple[float, float]:
    """(median seconds for prefill + new_tokens, median seconds for prefill + 1 token)."""
    full, first = GenerationConfig(max_new_tokens=new_tokens), GenerationConfig(max_new_tokens=1)
    engine.generate(ids, full, eos_ids=())  # compile both executables
    fulls = [engine.generate(ids, full, eos_ids=()).seconds for _ in range(repeats)]
    firsts = [engine.generate(ids, first, eos_ids=()).seconds for _ in range(repeats)]
    return statistics.median(fulls), statistics.median(firsts)


def time_transformers(ids: list[int], new_tokens: int, repeats: int) -> tuple[float, float] | None:
    try:
        import torch
        from transformers import AutoModelForCausalLM
    except ImportError:
        return None
    gguf = smollm2_gguf()
    model = AutoModelForCausalLM.from_pretrained(str(gguf.parent), gguf_file=gguf.name, dtype=torch.float32).eval()
    inputs = torch.tensor([ids])

    def run(n: int) -> float:
        start = time.perf_counter()
        with torch.no_grad():
            out = model.generate(inputs, max_new_tokens=n, min_new_tokens=n, do_sample=False, pad_token_id=0)
        assert out.shape[1] - len(ids) == n
        return time.perf_counter() - start

    run(new_tokens)
    fulls = [run(new_tokens) for _ in range(repeats)]
    firsts = [run(1) for _ in range(repeats)]
    return statistics.median(fulls), statistics.median(firsts)


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--new-tokens", type=int, default=128)
    parser.add_argument("--repeats", type=int, default=3)
    parser.add_argument("--dtype", default="float32")
    parser.add_argument("--no-hf", action="store_true", help="skip transformers")
    args = parser.parse_args()
    setup_runtime()

    target = load_target("smollm2", parse_dtype(args.dtype))
    engine = Engine(target.model)
    ids = encode_prompt(target.tokenizer, PROMPT)
    n = args.new_tokens

    bandwidth = read_bandwidth_gbs()
    weight_bytes = weight_bytes_per_token(engine)
    roofline_ms = weight_bytes / (bandwidth * 1e9) * 1e3

    rows = []
    ours_full, ours_first = time_ours(engine, ids, n, args.repeats)
    rows.append(("resps_jax AR", ours_full, ours_first))
    if not args.no_hf:
        hf = time_transformers(ids, n, args.repeats)
        if hf is not None:
            rows.append(("transformers generate", *hf))

    print(f"SmolLM2-135M-Instruct ({args.dtype}), prompt {len(ids)} tokens, {n} new tokens, "
          f"{jax.device_count()} {jax.default_backend()} device(s), median of {args.repeats}")
    print(f"read bandwidth (jitted 1 GiB sum): {bandwidth:.1f} GB/s; weights read per token: "
          f"{weight_bytes / 1e6:.0f} MB; roofline {roofline_ms:.1f} ms/token ({1e3 / roofline_ms:.1f} tok/s)")
    print()
    header = f"{'decoder':<24}{'tok/s (all)':>12}{'ms/token':>10}{'decode tok/s':>14}{'% roofline':>12}"
    print(header)
    print("-" * len(header))
    speeds = {}
    for name, full, first in rows:
        per_token_ms = (full - first) / (n - 1) * 1e3
        speeds[name] = n / full
        print(f"{name:<24}{n / full:>12.1f}{per_token_ms:>10.2f}{1e3 / per_token_ms:>14.1f}"
              f"{100 * roofline_ms / per_token_ms:>11.0f}%")
    if len(rows) == 2:
        a, b = rows[0], rows[1]
        decode_ratio = ((b[1] - b[2]) / (a[1] - a[2]))
        print(f"\nresps_jax / transformers: {speeds[a[0]] / speeds[b[0]]:.2f}x end to end, "
              f"{decode_ratio:.2f}x per decoded token")


if __name__ == "__main__":
    main()
