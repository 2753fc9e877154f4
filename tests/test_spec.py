"""Tree speculative decoding: greedy losslessness, exact sampling, the walk, compile counts."""

from __future__ import annotations

import itertools

import jax
import jax.numpy as jnp
import numpy as np
import pytest
from flax import nnx
from scipy import stats

from resps_jax.decoding.action import Action
from resps_jax.decoding.engine import Engine, GenerationConfig, SpeculativeEngine
from resps_jax.decoding.spec import CATCH_UP, ar_interval, catch_up_head, spec_interval, spec_prefill
from resps_jax.decoding.tree import AR_ACTION, DraftTree, TreeShape, grow_tree, max_tree_tokens, validate_actions
from resps_jax.decoding.verify import commit_path, walk_tree
from resps_jax.errors import UserError
from resps_jax.models.cache import KVCache
from resps_jax.models.config import LlamaConfig
from resps_jax.models.tiny import random_pair
from resps_jax.rl.actions import paper_actions

SMALL = LlamaConfig(vocab_size=96, hidden_size=32, intermediate_size=64, num_layers=8, num_heads=4, num_kv_heads=2, head_dim=8)


def make_tree(tokens, parents, depths) -> DraftTree:
    tt = len(tokens)
    anc = np.eye(tt, dtype=bool)
    for i in range(tt):
        j = i
        while j != 0:
            j = parents[j]
            anc[i, j] = True
    return DraftTree(jnp.asarray(tokens, jnp.int32), jnp.asarray(parents, jnp.int32), jnp.asarray(depths, jnp.int32),
                     jnp.ones((tt,), bool), jnp.asarray(anc))


def chi2_pvalue(observed: np.ndarray, probs: np.ndarray) -> float:
    probs = np.asarray(probs, np.float64)
    return float(stats.chisquare(observed, probs / probs.sum() * observed.sum()).pvalue)


# ------------------------------------------------------------------ the walk, by hand

TREE = make_tree(tokens=[0, 5, 7, 9, 3, 4], parents=[0, 0, 0, 1, 2, 4], depths=[0, 1, 1, 2, 2, 3])


def test_greedy_walk_takes_the_matching_path_and_the_bonus():
    logits = np.full((6, 16), -5.0, np.float32)
    logits[0, 7] = logits[2, 3] = logits[4, 4] = logits[5, 11] = 5.0  # root->7->3->4, then 11
    logits[1, 9] = 5.0  # a matching grandchild under the rejected branch must not count
    path, accepted, bonus = walk_tree(TREE, jnp.asarray(logits), jnp.float32(0.0), jax.random.key(0), 5)
    assert np.asarray(path).tolist() == [0, 2, 4, 5, -1]
    assert int(accepted) == 3 and int(bonus) == 11


def test_greedy_walk_rejects_at_the_root():
    logits = np.zeros((6, 16), np.float32)
    logits[0, 12] = 1.0
    path, accepted, bonus = walk_tree(TREE, jnp.asarray(logits), jnp.float32(0.0), jax.random.key(0), 5)
    assert int(accepted) == 0 and int(bonus) == 12 and np.asarray(path).tolist() == [0, -1, -1, -1, -1]


def test_sampling_walk_emits_the_target_distribution():
    """First token ~ p(root); given the walk went to 7, the next token ~ p(node 7) (50k walks)."""
    rng = np.random.RandomState(0)
    logits = rng.normal(size=(6, 16)) * 0.5
    logits[0, [5, 7]] += 2.0  # most of the mass on the root's two children, so order matters
    logits[2, [3]] += 2.0
    logits = jnp.asarray(logits, jnp.float32)
    keys = jax.random.split(jax.random.key(1), 50_000)
    walk = jax.jit(jax.vmap(lambda key: walk_tree(TREE, logits, jnp.float32(1.0), key, 5)))
    path, accepted, bonus = (np.asarray(x) for x in walk(keys))
    tokens = np.asarray(TREE.tokens)
    first = np.where(accepted >= 1, tokens[np.maximum(path[:, 1], 0)], bonus)
    p_root = np.asarray(jax.nn.softmax(logits[0]))
    assert chi2_pvalue(np.bincount(first, minlength=16), p_root) > 1e-3
    went7 = (accepted >= 1) & (path[:, 1] == 2)
    second = np.where(accepted[went7] >= 2, tokens[np.maximum(path[went7, 2], 0)], bonus[went7])
    p7 = np.asarray(jax.nn.softmax(logits[2]))
    assert chi2_pvalue(np.bincount(second, minlength=16), p7) > 1e-3


def test_commit_path_moves_the_accepted_slots():
    cache = KVCache.create(2, 1, 16, 1, 2, jnp.float32)
    marker = jnp.arange(16, dtype=jnp.float32)[None, None, :, None] * jnp.ones((1, 1, 16, 2))
    cache = KVCache(keys=[marker, marker + 100], values=[marker + 200, marker + 300], lengths=jnp.array([4]))
    moved = commit_path(cache, jnp.array([0, 2, 5, -1]), jnp.array([3]))
    assert int(moved.lengths[0]) == 7
    np.testing.assert_array_equal(np.asarray(moved.keys[0])[0, 0, :7, 0], [0, 1, 2, 3, 4, 6, 9])
    np.testing.assert_array_equal(np.asarray(moved.values[1])[0, 0, 4:7, 0], [304, 306, 309])


# --------------------------------------------------------- greedy: identical to AR


# the default suite keeps the chain and a depth-4 tree; `make test-all` runs the rest too
@pytest.mark.parametrize("tree", [(3, 1, 1), pytest.param((8, 3, 2), marks=pytest.mark.slow), (16, 4, 4),
                                  pytest.param((32, 5, 8), marks=pytest.mark.slow),
                                  pytest.param((24, 6, 3), marks=pytest.mark.slow)])
def test_static_tree_greedy_equals_ar(tree):
    target, head = random_pair(SMALL, seed=3, draft_vocab=64)
    engine = Engine(target)
    spec = SpeculativeEngine(engine, head, [tree])
    gen = GenerationConfig(max_new_tokens=40)
    rng = np.random.RandomState(7)
    for length in (3, 17, 30):
        prompt = rng.randint(1, 96, size=length).tolist()
        ar = engine.generate(prompt, gen, eos_ids=())
        sp = spec.generate(prompt, gen, eos_ids=())
        assert sp.token_ids == ar.token_ids, (tree, length)
        assert sum(sp.accepted_per_step) == sp.new_tokens - 1 and len(sp.accepted_per_step) == sp.steps


def test_eos_and_budget_stop_exactly_like_ar():
    target, head = random_pair(SMALL, seed=4, draft_vocab=64)
    engine = Engine(target)
    spec = SpeculativeEngine(engine, head, [(16, 4, 4)])
    prompt = list(range(1, 12))
    full = engine.generate(prompt, GenerationConfig(max_new_tokens=30), eos_ids=())
    eos = (full.token_ids[9],)
    for gen in (GenerationConfig(max_new_tokens=30), GenerationConfig(max_new_tokens=7)):
        assert spec.generate(prompt, gen, eos).token_ids == engine.generate(prompt, gen, eos).token_ids


# ------------------------------------------------- sampling: exactly plain sampling


SAMPLING_SCALE = 2.0  # a target that is far from one-hot, so every rule of the walk matters


def _three_sampled_tokens_vs_exact_law(schedule) -> tuple[float, float, np.ndarray]:
    """20k seeded speculative samples of 3 tokens against the exact 3-token law of the target.

    `schedule(spec, engine, state)` runs the intervals after prefill (a static tree, or a
    policy switching between `ar` and trees). Vocabulary 6, so the 216 joint outcomes are
    enumerated exactly with the target itself; chi-square over cells with expectation >= 5.
    Returns (p-value, total variation, steps per sample).
    """
    cfg = LlamaConfig(vocab_size=6, hidden_size=32, intermediate_size=64, num_layers=8, num_heads=4, num_kv_heads=2, head_dim=8)
    target, head = random_pair(cfg, seed=11, scale=SAMPLING_SCALE)
    engine = Engine(target)
    spec = SpeculativeEngine(engine, head, [(8, 3, 3), AR_ACTION])
    prompt = [1, 4, 2, 5, 3]
    temperature = jnp.float32(1.0)
    capacity = 64

    def sample(key):
        state = spec_prefill(
            engine.graphdef, spec.graphdef_h, engine.params, spec.params_h,
            engine.new_cache(1, capacity), KVCache.create(1, 1, capacity + 40, 2, 8, jnp.float32),
            jnp.asarray([prompt + [0] * 11], jnp.int32), jnp.array([5], jnp.int32), temperature, key, out_width=5,
        )
        state = schedule(spec, engine, state, temperature)
        return state.context[5:8], state.steps  # the first three tokens after the 5-token prompt

    run = jax.jit(jax.vmap(sample))
    keys = jax.random.split(jax.random.key(2024), 20_000)
    outs, steps = zip(*(run(keys[i : i + 5000]) for i in range(0, 20_000, 5000)))
    outs, steps = np.concatenate([np.asarray(o) for o in outs]), np.concatenate([np.asarray(s) for s in steps])

    return (*fit_to_law(outs, exact_three_token_law(engine, target, prompt)), steps)


def fit_to_law(outs: np.ndarray, exact: np.ndarray) -> tuple[float, float]:
    """[N, 3] sampled tokens (vocabulary 6) against the exact [216] law: (chi-square p-value
    over cells with expectation >= 5, the rare ones pooled into one; total variation)."""
    cells = outs[:, 0] * 36 + outs[:, 1] * 6 + outs[:, 2]
    observed = np.bincount(cells, minlength=216)
    expected = exact * len(cells)
    big = expected >= 5
    obs, exp = observed[big], expected[big]
    if (~big).any():  # pool the rare outcomes into one cell
        obs, exp = np.append(obs, observed[~big].sum()), np.append(exp, expected[~big].sum())
    return chi2_pvalue(obs, exp), 0.5 * float(np.abs(observed / len(cells) - exact).sum())


def exact_three_token_law(engine, target, prompt: list[int]) -> np.ndarray:
    """[216] the exact law of the next 3 tokens on a vocabulary of 6: p(x1) p(x2|x1) p(x3|x1,x2),
    from one batched target forward over every continuation."""
    from resps_jax.models.llama import causal_mask

    n = len(prompt)
    seqs = np.array([prompt + list(c) for c in itertools.product(range(6), repeat=3)], np.int32)
    cache = engine.new_cache(len(seqs), 16)
    hidden, _, _ = target(jnp.asarray(seqs), jnp.broadcast_to(jnp.arange(n + 3), seqs.shape), cache,
                          causal_mask(len(seqs), n + 3))
    logp = np.asarray(jax.nn.log_softmax(target.logits(hidden), -1))  # [216, n + 3, 6]
    exact = np.exp(sum(logp[np.arange(216), n - 1 + i, seqs[:, n + i]] for i in range(3)))
    assert abs(exact.sum() - 1.0) < 1e-4
    return exact


def _tree(spec, engine, state, temperature, n_steps=8):
    return spec_interval(engine.graphdef, spec.graphdef_h, engine.params, spec.params_h, state,
                         jnp.int32(8), jnp.int32(3), jnp.int32(3), jnp.int32(0), jnp.int32(n_steps), jnp.int32(3),
                         jnp.array([-1], jnp.int32), temperature, shape=spec.shapes[8, 0])


def _ar(spec, engine, state, temperature, n_steps=1):
    return ar_interval(engine.graphdef, spec.graphdef_h, engine.params, spec.params_h, state,
                       jnp.int32(n_steps), jnp.int32(3), jnp.array([-1], jnp.int32), temperature)


def test_first_three_sampled_tokens_follow_plain_sampling():
    """A static tree: a correct sampler fails this with probability 1e-3 over seeds (measured
    p = 0.34, TV 0.038), while accepting a later sibling with p(x) instead of p(x)
    renormalised after the rejected ones was measured at p = 3e-53 (TV 0.078), same seeds."""
    pvalue, tv, steps = _three_sampled_tokens_vs_exact_law(_tree)
    assert (steps < 3).mean() > 0.3  # trees did accept drafts: the multi-token path was exercised
    assert pvalue > 1e-3 and tv < 0.05


@pytest.mark.parametrize("order", ["ar-then-tree", pytest.param("tree-then-ar", marks=pytest.mark.slow)])
def test_sampling_law_holds_with_a_policy_switching_to_and_from_ar(order):
    """A policy that switches between the no-draft action and a tree, one step each, in
    either order: still exactly plain sampling (the head's cache stays usable after `ar`)."""
    if order == "ar-then-tree":
        schedule = lambda spec, engine, state, t: _tree(spec, engine, _ar(spec, engine, state, t), t)  # noqa: E731
    else:
        schedule = lambda spec, engine, state, t: _ar(spec, engine, _tree(spec, engine, state, t, 1), t, 8)  # noqa: E731
    pvalue, tv, steps = _three_sampled_tokens_vs_exact_law(schedule)
    assert pvalue > 1e-3 and tv < 0.05, (pvalue, tv)


# ------------------------------------------------------------------ compile counts


def test_paper_action_space_compiles_at_most_twelve_step_executables():
    """All 177 valid paper actions, each run for one interval: <= 12 executables; a rerun adds none."""
    actions = paper_actions()
    assert len(actions) == 177
    target, head = random_pair(SMALL, seed=5, draft_vocab=64)
    spec = SpeculativeEngine(Engine(target), head, actions)
    prompt = list(range(1, 20))

    def run_all() -> set:
        used: set = set()
        pending = list(range(len(actions)))
        while pending:
            queue = iter(list(pending))
            result = spec.generate(prompt, GenerationConfig(max_new_tokens=48), eos_ids=(),
                                   policy=lambda _state: next(queue, 0), interval=1)
            used.update(result.actions)
            pending = [i for i in pending if actions[i] not in used]
        return used

    assert run_all() == set(actions)
    compiled = spec.executables()
    assert compiled <= 12, compiled  # 6 TT buckets + prefill
    assert run_all() == set(actions)
    assert spec.executables() == compiled


def test_invalid_action_sets_are_refused():
    for bad in ([], [(1, 3, 4)], [(16, 0, 4)], [(16, 3, 4), (16, 3, 4)], [(16, 3)]):
        with pytest.raises(UserError):
            validate_actions(bad)


@pytest.mark.parametrize("depth,k", [(1, 1), (2, 2), (3, 2)])
def test_max_tree_tokens_is_what_the_engine_grows(depth, k):
    """A TT of `max_tree_tokens(d, k)` fills every slot; one more is refused, not padded."""
    target, head = random_pair(SMALL, seed=4, draft_vocab=64)
    most = max_tree_tokens(depth, k)
    cfg = head.cfg
    cache = KVCache.create(1, 1, 64, cfg.num_kv_heads, cfg.head_dim, jnp.float32).with_lengths(jnp.array([5], jnp.int32))
    tree = grow_tree(head, target.embed_tokens.weight[...], cache, jnp.full((cfg.hidden_size,), 0.1), jnp.array(3),
                     jnp.array(most + 5), jnp.array(depth), jnp.array(k), TreeShape(k, depth, most + 5))
    assert int(tree.valid.sum()) == most
    assert validate_actions([(most, depth, k)]) == [Action(most, depth, k)]
    with pytest.raises(UserError, match=f"at most {most}\\b"):
        validate_actions([(most + 1, depth, k)])


def test_tree_shape_sizes():
    shape = TreeShape(k_max=10, d_max=7, tt_bucket=60)
    assert shape.pool_size == 10 + 7 * 100 and shape.path_width == 9


def test_policy_sees_target_features_and_intervals_are_reported():
    target, head = random_pair(SMALL, seed=6, draft_vocab=64)
    engine = Engine(target)
    actions = [Action(8, 3, 2), Action(16, 4, 4), Action(3, 1, 1)]
    spec = SpeculativeEngine(engine, head, actions)
    seen = []

    def policy(state):
        seen.append(state.shape)
        return len(seen) % 3

    prompt = list(range(1, 14))
    gen = GenerationConfig(max_new_tokens=30)
    result = spec.generate(prompt, gen, eos_ids=(), policy=policy, interval=3)
    assert result.token_ids == engine.generate(prompt, gen, eos_ids=()).token_ids
    assert set(seen) == {(3 * SMALL.hidden_size,)}
    assert len(result.intervals) == len(result.actions) == len(seen)
    assert [actions[i] for i, *_ in result.intervals] == result.actions
    assert sum(t for _, t, _, _ in result.intervals) == result.new_tokens - 1
    assert all(s <= 3 for _, _, s, _ in result.intervals[:-1]) and sum(s for _, _, s, _ in result.intervals) == result.steps
    with pytest.raises(UserError, match="outside"):
        spec.generate(prompt, gen, eos_ids=(), policy=lambda _s: 7, interval=3)


def test_switching_policy_with_ar_is_greedy_lossless():
    """A policy cycling through `ar` and two trees, interval 2: token-identical to AR, with
    and without EOS; one executable more than the trees alone."""
    target, head = random_pair(SMALL, seed=8, draft_vocab=64)
    engine = Engine(target)
    actions = [AR_ACTION, Action(8, 3, 2), Action(3, 1, 1)]
    spec = SpeculativeEngine(engine, head, actions)
    rng = np.random.RandomState(9)
    for length in (4, 21):
        prompt = rng.randint(1, 96, size=length).tolist()
        ar = engine.generate(prompt, GenerationConfig(max_new_tokens=36), eos_ids=())
        for eos in ((), (ar.token_ids[17],)):
            calls = []
            policy = lambda _s: calls.append(0) or (len(calls) % 3)  # noqa: E731
            gen = GenerationConfig(max_new_tokens=36)
            got = spec.generate(prompt, gen, eos_ids=eos, policy=policy, interval=2)
            assert got.token_ids == engine.generate(prompt, gen, eos_ids=eos).token_ids, (length, eos)
            assert AR_ACTION in got.actions and Action(8, 3, 2) in got.actions
    ar_steps = [s for (i, t, s, _) in got.intervals if actions[i] == AR_ACTION]
    assert all(t == s for (i, t, s, _) in got.intervals if actions[i] == AR_ACTION) and ar_steps
    assert spec.ar_interval._cache_size() == 1  # `ar` is one executable, shared by every interval
    assert spec.executables() == 2 + 2 + 1  # two prompt buckets, TT buckets 3 and 8, the ar interval
    only_ar = SpeculativeEngine(engine, head, [AR_ACTION])
    prompt = list(range(1, 12))
    gen = GenerationConfig(max_new_tokens=20)
    result = only_ar.generate(prompt, gen, eos_ids=())
    assert result.token_ids == engine.generate(prompt, gen, eos_ids=()).token_ids
    assert result.steps == result.new_tokens - 1


def test_head_catches_up_after_ar_steps_as_if_it_had_kept_step():
    """`ar` leaves the head behind; the catch-up (more than one CATCH_UP chunk here) must
    leave the head's cache and last output as a prefill over the same text would."""
    target, head = random_pair(SMALL, seed=12, draft_vocab=64)
    engine = Engine(target)
    spec = SpeculativeEngine(engine, head, [AR_ACTION, (8, 3, 2)])
    prompt = list(range(3, 24))
    gen = GenerationConfig(max_new_tokens=48)
    _, state = spec.start(prompt, gen)
    ar_steps = CATCH_UP + 3
    state = spec.ar_interval(engine.params, spec.params_h, state, np.int32(ar_steps), np.int32(48),
                             np.asarray([-1], np.int32), np.float32(0.0))
    n = int(state.target_cache.lengths[0])
    assert n == len(prompt) + ar_steps and int(state.draft_cache.lengths[0]) == len(prompt)  # the head was left behind

    merge = lambda: (nnx.merge(engine.graphdef, engine.params), nnx.merge(spec.graphdef_h, spec.params_h))  # noqa: E731
    caught = jax.jit(lambda s: catch_up_head(*merge(), s))(state)
    assert int(caught.draft_cache.lengths[0]) == n

    text = np.asarray(state.context)[: len(prompt) + ar_steps].tolist()  # the committed text, prefilled at once
    _, ref = spec.start(text, gen)
    assert int(ref.root) == int(state.root)
    np.testing.assert_allclose(caught.last_out, ref.last_out, rtol=1e-4, atol=1e-4)
    for got, want in zip(caught.draft_cache.keys + caught.draft_cache.values, ref.draft_cache.keys + ref.draft_cache.values):
        np.testing.assert_allclose(got[:, :, :n], want[:, :, :n], rtol=1e-4, atol=1e-4)
