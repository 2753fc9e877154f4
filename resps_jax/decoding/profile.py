"""The paper's Table 8 for our engine: where a speculative step's time goes.

A decoding interval is one compiled `lax.while_loop`, so its pieces cannot be timed from
inside. Here each piece of `spec_step` (the same functions the interval runs) is jitted
alone and timed on a real mid-decode state: drafting (the head grows the tree), lookup
(the n-gram chain found and joined to the tree), verification (the target's forward over
the tree), the walk (accepted path and bonus), compaction (the target cache moved onto the
path), the head's re-encode of the committed tokens, and the policy's call divided over its
interval. Emission and the loop's own bookkeeping are what the whole step has beyond the
pieces' sum. The target cache is donated to the pieces that write it,
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

from resps_jax.decoding.action import AR_ACTION, Action, format_action
from resps_jax.decoding.engine import GenerationConfig, SpeculativeEngine
from resps_jax.decoding.ngram import root_only
from resps_jax.decoding.spec import SpecState, draft_tree, lookup_chain, reencode, verify_tree
from resps_jax.decoding.verify import commit_path, walk_tree

PIECES = ("drafting", "lookup", "verification", "walk", "compaction", "re_encode", "policy")
NO_EOS = np.asarray((-1,), np.int32)  # profiling never stops early
NO_LIMIT = np.int32(1 << 20)


def smollm2_fixture(question: int = 3000):
    """(engine, head, prompt ids, GenerationConfig) the step probes share: SmolLM2 with the
    shipped head on the kernels, ShareGPT training question `question` of the seed-42
    shuffle (never a benchmark prompt), a 512-slot cache and room for 128 new tokens."""
    from resps_jax.data.prompts import load_training_prompts
    from resps_jax.decoding.engine import Engine
    from resps_jax.models.loading import load_eagle3, load_target, resolve_draft_folder
    from resps_jax.prompting import encode_prompt

    target = load_target("smollm2")
    head = load_eagle3(resolve_draft_folder("smollm2"), target.cfg)
    ids = encode_prompt(target.tokenizer, load_training_prompts("sharegpt", seed=42)[question][0])
    return Engine(target.model), head, ids, GenerationConfig(max_new_tokens=128, cache_len=512)


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


def decoded_state(spec: SpeculativeEngine, prompt_ids: list[int], gen: GenerationConfig, action: Action,
                  warm_steps: int = 4) -> SpecState:
    """A state `warm_steps` steps of `action` into decoding `prompt_ids` (caches as in a real run)."""
    _, state = spec.start(prompt_ids, gen)
    return spec.run_interval(state, Action(*action), np.int32(warm_steps), NO_LIMIT, NO_EOS,
                             np.float32(gen.temperature))


def interval_ms_per_step(spec: SpeculativeEngine, state: SpecState, action: Action, steps: int, temperature) -> float:
    """The compiled interval's milliseconds per step from `state` (AR_ACTION: the `ar` step)."""
    start_steps = int(np.asarray(state.steps))
    jax.block_until_ready(state)
    start = time.perf_counter()
    state = spec.run_interval(state, Action(*action), np.int32(steps), NO_LIMIT, NO_EOS, temperature)
    done = int(np.asarray(state.steps)) - start_steps  # waits for the interval
    return 1e3 * (time.perf_counter() - start) / max(1, done)


def step_breakdown(spec: SpeculativeEngine, prompt_ids: list[int], gen: GenerationConfig, action,
                   decide: Callable | None = None, interval: int = 30, calls: int = 10) -> dict:
    """Milliseconds per step of each piece for one drafting action, the whole step, and the
    no-draft `ar` step when the set has one. `gen.max_new_tokens` must leave room in the
    cache for (4 + calls) steps of the action's longest path.

    About 80 lines, on purpose: every piece is a few lines timed on the same decoded state,
    and reading them in order is reading the step in order."""
    action = Action(*(int(v) for v in action))
    shape = spec.shapes[spec.shape_key(action)]
    gt, gh = spec.engine.graphdef, spec.graphdef_h
    params_t, params_h = spec.engine.params, spec.params_h
    limits = (np.int32(action.tt), np.int32(action.depth), np.int32(action.topk))
    temperature = np.float32(gen.temperature)
    state = decoded_state(spec, prompt_ids, gen, action)
    width = shape.path_width

    @jax.jit
    def drafting(params_t, params_h, state, tt, d, k):
        if not shape.uses_head:
            return root_only(state.root)
        return draft_tree(nnx.merge(gt, params_t), nnx.merge(gh, params_h), state, tt, d, k, shape)

    @jax.jit
    def lookup(state, tree):
        return lookup_chain(state, tree, np.int32(action.ngram), shape) if shape.chain_bucket else tree

    def verify(params_t, state, tree, target_cache):
        return verify_tree(nnx.merge(gt, params_t), dataclasses.replace(state, target_cache=target_cache), tree)

    verification = jax.jit(verify, donate_argnames=("target_cache",))

    @jax.jit
    def walk(tree, logits, key):
        return walk_tree(tree, logits, temperature, key, width)

    compaction = jax.jit(commit_path, donate_argnames=("cache",))

    @jax.jit
    def re_encode(params_t, params_h, draft_cache, emit, step_taps, n, count):
        embed = nnx.merge(gt, params_t).embed_tokens.weight[...]
        return reencode(nnx.merge(gh, params_h), embed, draft_cache, emit, step_taps, n, count)

    tree = lookup(state, drafting(params_t, params_h, state, *limits))
    logits, taps, _ = verification(params_t, state, tree, fresh(state.target_cache))
    path, accepted, _ = walk(tree, logits, state.key)
    count = (accepted + 1)[None]
    emit = jnp.zeros((width,), jnp.int32)
    step_taps = taps[0][jnp.maximum(path, 0)]
    ms = {  # a piece the action does not run (no head, no chain) costs 0 and is not timed
        "drafting": seconds_per_call(drafting, lambda: (params_t, params_h, state, *limits), calls)
        if shape.uses_head else 0.0,
        "lookup": seconds_per_call(lookup, lambda: (state, drafting(params_t, params_h, state, *limits)), calls)
        if shape.chain_bucket else 0.0,
        "verification": seconds_per_call(verification, lambda: (params_t, state, tree, fresh(state.target_cache)),
                                         calls),
        "walk": seconds_per_call(walk, lambda: (tree, logits, state.key), calls),
        "compaction": seconds_per_call(compaction, lambda: (fresh(state.target_cache), path, count), calls),
        "re_encode": seconds_per_call(
            re_encode, lambda: (params_t, params_h, state.draft_cache, emit, step_taps, state.target_cache.lengths,
                                count[0]), calls) if shape.uses_head else 0.0,
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
        whole.append(interval_ms_per_step(spec, decoded_state(spec, prompt_ids, gen, action), action, calls,
                                          temperature))
        if spec.ar_interval is not None:
            ar.append(interval_ms_per_step(spec, decoded_state(spec, prompt_ids, gen, action), AR_ACTION, calls,
                                           temperature))
    ms["step"] = min(whole)
    if ar:
        ms["ar_step"] = min(ar)
    return {"action": format_action(action), "interval": interval, "pieces": list(PIECES),
            "ms": {name: round(v, 4) for name, v in ms.items()}}
