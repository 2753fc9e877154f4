"""The decode loops move no KV-cache-sized buffer per step: checked on the optimized HLO.

docs/results.md measured the AR loop's compiled body transposing and copying every layer's
K and V each step (17 ms per token at 1792 slots, where reading the cache once costs a few).
The cause is in how attention is written, not in the cache's [B, KVH, S, D] layout alone
(see models/llama.py Attention), so these tests compile the real loops on a small random
model with a 512-slot cache, a size no other dimension of it has, and grep every
while-loop body (and the fusions it calls) for a transpose or copy with a 512 dimension.
One test first checks that the grep does see such a move when a loop makes one.
"""

from __future__ import annotations

import re

import jax
import jax.numpy as jnp
import numpy as np
import pytest

from resps_jax.decoding.engine import Engine, SpeculativeEngine, pad_prompts
from resps_jax.models.config import LlamaConfig
from resps_jax.models.tiny import random_pair

SLOTS = 512  # the cache's slot count; vocab 96, hidden 32, MLP 64, head_dim 8, heads 4/2: none is 512
SMALL = LlamaConfig(vocab_size=96, hidden_size=32, intermediate_size=64, num_layers=8, num_heads=4, num_kv_heads=2, head_dim=8)
NO_EOS = np.asarray([-1], np.int32)

_HEADER = re.compile(r"^(?:ENTRY\s+)?%([\w.\-]+)\s+\(.*\)\s+->\s+.*\{\s*$")
_CALLED = re.compile(r"(?:calls|body|condition|to_apply|branch_computations)=\{?([%\w.\-, ]+)\}?")


def computations(hlo: str) -> dict[str, list[str]]:
    """Optimized HLO text -> {computation name: its instruction lines, metadata dropped}."""
    out: dict[str, list[str]] = {}
    current = None
    for line in hlo.splitlines():
        header = _HEADER.match(line)
        if header:
            current = header.group(1)
            out[current] = []
        elif line.strip() == "}":
            current = None
        elif current is not None:
            out[current].append(line.strip().split(", metadata=")[0])
    return out


def loop_bodies(comps: dict[str, list[str]]) -> set[str]:
    """Every computation a while body runs: the bodies and, transitively, what they call."""
    todo = [m.group(1) for lines in comps.values() for line in lines for m in re.finditer(r"body=%([\w.\-]+)", line)]
    seen: set[str] = set()
    while todo:
        name = todo.pop()
        if name in seen or name not in comps:
            continue
        seen.add(name)
        for line in comps[name]:
            for group in _CALLED.findall(line):
                todo.extend(n.strip().lstrip("%") for n in group.split(",") if n.strip())
    return seen


def loop_moves(hlo: str, slots: int) -> tuple[list[str], int]:
    """(transpose/copy lines with a `slots` dimension in loop bodies, loop-body lines naming `slots`).

    Optimized HLO prints operands by name, so the result shape is what is matched; a
    transpose or copy has its operand's dimensions. The second count shows the grep looked
    at a body that does touch the cache (it is 0 if the parse found no loop at all).
    """
    dim = re.compile(rf"\[(?:\d+,)*{slots}(?:,\d+)*\]")
    cache_sized = re.compile(rf"= (?:f32|bf16|f16)\[(?:\d+,)*{slots}(?:,\d+)*\]")  # K/V, not [B, T, S] bool masks
    comps = computations(hlo)
    lines = [line for name in loop_bodies(comps) for line in comps[name]]
    moves = [line for line in lines if re.search(r"\s(transpose|copy)\(", line) and cache_sized.search(line)]
    return moves, sum(bool(dim.search(line)) for line in lines)


def assert_no_moves(hlo: str, slots: int, what: str) -> None:
    moves, touching = loop_moves(hlo, slots)
    assert touching > 0, f"{what}: no loop body touches a {slots}-slot array; did the HLO parse fail?"
    shown = "\n".join(line[:200] for line in moves[:8])
    assert not moves, f"{what}: {len(moves)} transpose/copy of {slots}-slot arrays per step:\n{shown}"


def test_the_grep_sees_a_per_step_transpose():
    """A loop that really transposes a 512-slot buffer each step is caught (the check is live)."""

    def loop(a, b, n):
        def body(i, carry):
            a, b = carry
            a = a * 1.0001
            return a, b + a.T * i.astype(a.dtype)  # [S, D] -> [D, S] each step

        return jax.lax.fori_loop(0, n, body, (a, b))

    a, b = jnp.ones((SLOTS, 8)), jnp.ones((8, SLOTS))
    hlo = jax.jit(loop).lower(a, b, jnp.int32(3)).compile().as_text()
    moves, touching = loop_moves(hlo, SLOTS)
    assert touching and moves, "the grep missed a per-step transpose"


@pytest.fixture(scope="module", params=["kernel", "xla"])
def engine(request) -> Engine:
    """Both backends: the CPU kernels (custom calls read the cache in place) and XLA's dots."""
    target, _ = random_pair(SMALL)
    return Engine(target, matmul=request.param)


@pytest.mark.parametrize("batch", [1, 2])
def test_ar_loop_moves_no_cache_buffer(engine, batch):
    prefill, ar_loop = engine.steps_for(batch)
    tokens, lengths = pad_prompts([[1, 2, 3], [4, 5, 6, 7, 8]][:batch], SLOTS)
    zero_t, seed = np.float32(0.0), np.int32(0)
    cache, first = prefill(engine.params, engine.new_cache(batch, SLOTS), tokens, np.asarray(lengths, np.int32), zero_t, seed)
    assert cache.keys[0].shape == (batch, SMALL.num_kv_heads, SLOTS, SMALL.head_dim)
    hlo = ar_loop.lower(engine.params, cache, first, np.int32(8), NO_EOS, zero_t, seed).compile().as_text()
    assert_no_moves(hlo, SLOTS, f"AR loop, batch {batch}")


@pytest.mark.parametrize("text", ["8,3,2", "8,3,2+ngram:4"])
def test_tree_interval_moves_no_target_cache_buffer(engine, text):
    """Tree verify (T = TT new tokens, plus the chain's) and commit_path's compaction, in the
    interval's loop. (A lax.cond between a verify with and without the chain rows failed
    this: XLA copied every layer's K and V each step.)"""
    from resps_jax.decoding.action import parse_action

    _, head = random_pair(SMALL)
    action = parse_action(text)
    spec = SpeculativeEngine(engine, head, [action])
    draft_slots = SLOTS + (spec.d_max + 1) * spec.k_max
    assert draft_slots != SLOTS
    tokens, (n,) = pad_prompts([[1, 2, 3, 4, 5]], SLOTS)
    zero_t = np.float32(0.0)
    state = spec.prefill(
        engine.params, spec.params_h, engine.new_cache(1, SLOTS), spec.new_draft_cache(draft_slots), tokens,
        np.asarray([n], np.int32), zero_t, np.int32(0),
    )
    limits = [np.int32(v) for v in action]
    hlo = spec.intervals[spec.shape_key(action)].lower(
        engine.params, spec.params_h, state, *limits, np.int32(4), np.int32(16), NO_EOS, zero_t
    ).compile().as_text()
    assert_no_moves(hlo, SLOTS, "tree interval, target cache")
