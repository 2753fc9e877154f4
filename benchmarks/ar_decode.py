"""AR decoding speed on the embedded default: ours, transformers and llama.cpp in one run.

Prints, for SmolLM2-135M-Instruct and N new tokens after a chat prompt: our AR tokens/s (with
the CPU kernels and with XLA's dot),
transformers' greedy `generate` tokens/s on the same GGUF, llama.cpp's (llama-cpp-python)
greedy tokens/s, the machine's read bandwidth measured now, and the read-bandwidth roofline
(weight bytes read per token / bandwidth). Every decoder is forced to produce exactly N tokens
(EOS ignored) from the same prompt token ids, so the work is equal; prefill is timed apart
(prefill + 1 token vs prefill + N) so ms/token is the decode step alone.

The embedded GGUF is Q4_1, which we and transformers dequantize to float32. llama.cpp on that
file would run Q4_1 kernels on other weights, so it gets an F32 GGUF of exactly our float32
weights instead (`f32_gguf`, written once into the cache). Its first greedy tokens are checked
against ours. llama.cpp is an optional bench dependency (`pip install -e .[bench]`, built from
the sdist); without it, it is skipped with one line.

    python benchmarks/ar_decode.py [--new-tokens 128] [--repeats 3] [--dtype float32]
                                   [--matmul kernel,xla] [--no-hf] [--no-llama-cpp] [--threads CORES]
"""

from __future__ import annotations

import argparse
import os
import statistics
import time

import jax
import jax.numpy as jnp
import numpy as np
from flax import nnx

from resps_jax.decoding.engine import Engine, GenerationConfig
from resps_jax.models.loading import f32_gguf, load_target, parse_dtype, smollm2_gguf
from resps_jax.prompting import encode_prompt
from resps_jax.runtime import setup_runtime

PROMPT = "Explain in three sentences why the sky is blue."
AGREE_TOKENS = 20  # leading greedy tokens compared between llama.cpp and ours


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


def weight_bytes_per_token(model) -> int:
    """Every parameter is read once per token (the tied embedding as the LM head).

    Counted on the model as loaded: a kernel engine also holds the embedding's packed copy
    for the LM head, but each token still reads the table once (its lookup reads one row).
    """
    leaves = jax.tree.leaves(nnx.to_pure_dict(nnx.state(model, nnx.Param)))
    return int(sum(leaf.nbytes for leaf in leaves))


def time_ours(engine: Engine, ids: list[int], new_tokens: int, repeats: int) -> tuple[float, float]:
    """(median seconds for prefill + new_tokens, median seconds for prefill + 1 token)."""
    full, first = GenerationConfig(max_new_tokens=new_tokens), GenerationConfig(max_new_tokens=1)
    engine.generate(ids, full, eos_ids=())  # compile both executables
    fulls = [engine.generate(ids, full, eos_ids=()).seconds for _ in range(repeats)]
    firsts = [engine.generate(ids, first, eos_ids=()).seconds for _ in range(repeats)]
    return statistics.median(fulls), statistics.median(firsts)


def greedy_ours(engine: Engine, ids: list[int], new_tokens: int) -> list[int]:
    """Our greedy tokens (EOS ignored), the reference llama.cpp's tokens are checked against.

    Same config as time_ours' full run, so its compiled executable is reused.
    """
    return engine.generate(ids, GenerationConfig(max_new_tokens=new_tokens), eos_ids=()).token_ids


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


def llama_cpp_greedy(model, ids: list[int], new_tokens: int) -> list[int]:
    """Exactly `new_tokens` greedy tokens, EOS ignored: prefill, then one eval per new token.

    The low-level loop (eval + argmax of the last logits) rather than `generate`, which stops
    at EOS and runs a sampler chain; this does the forwards ours does: prefill + (N - 1) steps.
    With logits_all=False `Llama.eval` no longer copies logits into `scores`, so the last
    token's logits are read straight from the context (a view, no copy).
    """
    import llama_cpp

    vocab = model.n_vocab()
    model.reset()  # position 0 again; eval drops the KV cache past n_tokens
    model.eval(ids)
    tokens: list[int] = []
    while True:
        logits = np.ctypeslib.as_array(llama_cpp.llama_get_logits_ith(model.ctx, -1), shape=(vocab,))
        tokens.append(int(np.argmax(logits)))
        if len(tokens) == new_tokens:
            return tokens
        model.eval(tokens[-1:])


def time_llama_cpp(
    ids: list[int], new_tokens: int, repeats: int, threads: int
) -> tuple[tuple[float, float], list[int]] | None:
    """((median s for prefill + N, median s for prefill + 1), greedy tokens); None if absent.

    Runs on the F32 GGUF of our weights, on `threads` CPU threads for prefill and decode.
    """
    try:
        from llama_cpp import Llama
    except ImportError:
        return None
    model = Llama(
        model_path=str(f32_gguf(smollm2_gguf())), n_ctx=len(ids) + new_tokens,
        n_threads=threads, n_threads_batch=threads, logits_all=False, verbose=False,
    )

    def run(n: int) -> float:
        start = time.perf_counter()
        llama_cpp_greedy(model, ids, n)
        return time.perf_counter() - start

    tokens = llama_cpp_greedy(model, ids, new_tokens)  # warm-up, and the tokens to compare
    fulls = [run(new_tokens) for _ in range(repeats)]
    firsts = [run(1) for _ in range(repeats)]
    return (statistics.median(fulls), statistics.median(firsts)), tokens


def leading_agreement(a: list[int], b: list[int]) -> int:
    """How many leading tokens two greedy runs share (f32 both: they should share most)."""
    n = 0
    for x, y in zip(a, b):
        if x != y:
            break
        n += 1
    return n


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--new-tokens", type=int, default=128)
    parser.add_argument("--repeats", type=int, default=3)
    parser.add_argument("--dtype", default="float32")
    parser.add_argument("--matmul", default="kernel,xla", help="our backends to time: kernel, xla or both")
    parser.add_argument("--no-hf", action="store_true", help="skip transformers")
    parser.add_argument("--no-llama-cpp", action="store_true", help="skip llama.cpp")
    parser.add_argument("--threads", type=int, default=len(os.sched_getaffinity(0)),
                        help="llama.cpp CPU threads (default: the cores this process may use; use fewer "
                             "when another process is busy, as llama.cpp's threads spin-wait on each other)")
    args = parser.parse_args()
    setup_runtime()

    target = load_target("smollm2", parse_dtype(args.dtype))
    engines = {m: Engine(target.model, matmul=m) for m in args.matmul.split(",")}
    engine = next(iter(engines.values()))
    ids = encode_prompt(target.tokenizer, PROMPT)
    n = args.new_tokens

    bandwidth = read_bandwidth_gbs()
    weight_bytes = weight_bytes_per_token(target.model)
    roofline_ms = weight_bytes / (bandwidth * 1e9) * 1e3

    rows = []
    for matmul, each in engines.items():
        ours_full, ours_first = time_ours(each, ids, n, args.repeats)
        rows.append((f"resps_jax AR ({matmul})", ours_full, ours_first))
    if not args.no_hf:
        hf = time_transformers(ids, n, args.repeats)
        if hf is not None:
            rows.append(("transformers generate", *hf))
    agreement = None
    if not args.no_llama_cpp:
        lc = time_llama_cpp(ids, n, args.repeats, args.threads)
        if lc is None:
            print("llama.cpp: skipped (llama-cpp-python not installed; pip install -e .[bench])")
        else:
            rows.append(("llama.cpp (F32 GGUF)", *lc[0]))
            compared = min(AGREE_TOKENS, n)
            agreement = (leading_agreement(greedy_ours(engine, ids, n)[:compared], lc[1][:compared]), compared)

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
    ours = rows[0]
    if len(rows) > 1:
        print()
    for name, full, first in rows[1:]:
        decode_ratio = (full - first) / (ours[1] - ours[2])
        print(f"resps_jax / {name}: {speeds[ours[0]] / speeds[name]:.2f}x end to end, "
              f"{decode_ratio:.2f}x per decoded token")
    if agreement is not None:
        print(f"llama.cpp greedy tokens agreeing with ours from the start: {agreement[0]} of {agreement[1]}")


if __name__ == "__main__":
    main()
