"""The paper's Table 8 for our engine: where a speculative step's time goes.

A decoding interval is one compiled `lax.while_loop`, so its pieces cannot be timed from
inside. Here each piece of `spec_step` (the same functions the interval runs) is jitted
alone and timed on a real mid-decode state: drafting (the head grows the tree),
verification (the target's forward over the tree), tree management (walk, cache
compaction, emission, the head's re-encode of the committed tokens), and the policy's
call divided over its interval. The target cache is donated to the pieces that write it,
as the interval's loop carry updates it in place, so no piece pays a cache copy the real
step does not. The whole step is the interval executable's own time per step, so the sum
of the pieces can be checked against it.
"""

from __future__ import annotations

import dataclasses
import time
from typing import Callable

import jax
import jax.numpy as jnp
import numpy as np
from flax import nnx

from resps_jax.decoding.engine import GenerationConfig, SpeculativeEngine
from resps_jax.decoding.spec import SpecState, accept_and_commit, draft_tree, verify_tree

PIECES = ("drafting", "verification", "tree_management", "policy")
NO_EOS = np.asarray((-1,), np.int32)  # profiling never stops early
NO_LIMIT = np.int32(1 << 20)


def seconds_per_call(fn: Callable, make_args: Callable[[], tuple], calls: int) -> float:
    """Best of 3 mean seconds over `calls` back-to-back calls, each on its own fresh inputs
    (made before the clock starts, so donated buffers are never shared)."""
    jax.block_until_ready(fn(*make_args()))  # compile and warm
    best = float("inf")
    for _ in range(3):
        inputs = [make_args() for _ in range(calls)]
        jax.block_until_ready(inputs)
        start = time.perf_counter()
        for args in inputs:
            out = fn(*args)
        jax.block_until_ready(out)
        best = min(best, (time.perf_counter() - start) / calls)
    return best


def fresh(tree):
    return jax.tree.map(jnp.copy, tree)


def decoded_state(spec: SpeculativeEngine, prompt_ids: list[int], gen: GenerationConfig, action,
                  warm_steps: int = 4) -> SpecState:
    """A state `warm_steps` tree steps into decoding `prompt_ids` (caches as in a real run)."""
    _, state = spec.start(prompt_ids, gen)
    temperature = np.float32(gen.temperature)
    tt, d, k = action
    return spec.intervals[spec.bucket_for(tt)](
        spec.engine.params, spec.params_h, state, np.int32(tt), np.int32(d), np.int32(k), np.int32(warm_steps),
        NO_LIMIT, NO_EOS, temperature)


def interval_ms_per_step(spec: SpeculativeEngine, state: SpecState, action, steps: int, temperature) -> float:
    """The compiled interval's milliseconds per step from `state` (action None: the `ar` step)."""
    start_steps = int(np.asarray(state.steps))
    jax.block_until_ready(state)
    start = time.perf_counter()
    if action is None:
        state = spec.ar_interval(spec.engine.params, spec.params_h, state, np.int32(steps), NO_LIMIT, NO_EOS,
                                 temperature)
    else:
        tt, d, k = action
        state = spec.intervals[spec.bucket_for(tt)](
            spec.engine.params, spec.params_h, state, np.int32(tt), np.int32(d), np.int32(k), np.int32(steps),
            NO_LIMIT, NO_EOS, temperature)
    done = int(np.asarray(state.steps)) - start_steps  # waits for the interval
    return 1e3 * (time.perf_counter() - start) / max(1, done)


def step_breakdown(spec: SpeculativeEngine, prompt_ids: list[int], gen: GenerationConfig, action,
                   decide: Callable | None = None, interval: int = 30, calls: int = 10) -> dict:
    """Milliseconds per step of each piece for one tree action, the whole step, and the
    no-draft `ar` step when the set has one. `gen.max_new_tokens` must leave room in the
    cache for (4 + calls) steps of the tree's longest path."""
    tt, d, k = (int(v) for v in action)
    shape = spec.shapes[spec.bucket_for(tt)]
    gt, gh = spec.engine.graphdef, spec.graphdef_h
    params_t, params_h = spec.engine.params, spec.params_h
    limits = (np.int32(tt), np.int32(d), np.int32(k))
    temperature = np.float32(gen.temperature)
    state = decoded_state(spec, prompt_ids, gen, (tt, d, k))

    @jax.jit
    def drafting(params_t, params_h, state, tt, d, k):
        return draft_tree(nnx.merge(gt, params_t), nnx.merge(gh, params_h), state, tt, d, k, shape)

    def verify(params_t, state, tree, target_cache):
        return verify_tree(nnx.merge(gt, params_t), dataclasses.replace(state, target_cache=target_cache), tree)

    verification = jax.jit(verify, donate_argnames=("target_cache",))

    def manage(params_t, params_h, state, tree, logits, taps, cache):
        return accept_and_commit(nnx.merge(gt, params_t), nnx.merge(gh, params_h), state, tree, logits, taps, cache,
                                 NO_LIMIT, NO_EOS, temperature, shape)

    management = jax.jit(manage, donate_argnames=("cache",))
    tree = drafting(params_t, params_h, state, *limits)
    logits, taps, _ = verification(params_t, state, tree, fresh(state.target_cache))
    ms = {
        "drafting": seconds_per_call(drafting, lambda: (params_t, params_h, state, *limits), calls),
        "verification": seconds_per_call(verification, lambda: (params_t, state, tree, fresh(state.target_cache)),
                                         calls),
        "tree_management": seconds_per_call(
            management,
            lambda: (params_t, params_h, state, tree, logits, taps,
                     verification(params_t, state, tree, fresh(state.target_cache))[2]),
            calls),
    }
    ms = {name: 1e3 * seconds for name, seconds in ms.items()}
    ms["policy"] = 0.0
    if decide is not None:  # one call per interval, spread over its steps
        taps_host = np.asarray(state.last_taps)
        decide(taps_host)
        ticks = []
        for _ in range(5 * calls):
            start = time.perf_counter()
            decide(taps_host)
            ticks.append(time.perf_counter() - start)
        ms["policy"] = 1e3 * float(np.median(ticks)) / interval
    whole, ar = [], []
    for _ in range(3):
        whole.append(interval_ms_per_step(spec, decoded_state(spec, prompt_ids, gen, (tt, d, k)), (tt, d, k), calls,
                                          temperature))
        if spec.ar_interval is not None:
            ar.append(interval_ms_per_step(spec, decoded_state(spec, prompt_ids, gen, (tt, d, k)), None, calls,
                                           temperature))
    ms["step"] = min(whole)
    if ar:
        ms["ar_step"] = min(ar)
    return {"action": f"{tt},{d},{k}", "interval": interval, "pieces": list(PIECES), "ms": {name: round(v, 4) for name, v in ms.items()}}
