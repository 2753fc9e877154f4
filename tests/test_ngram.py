"""Prompt-lookup drafting: the lookup, the chain joined to the head's tree, greedy identity,
exact sampling, the actions' syntax and compile counts."""

from __future__ import annotations

import jax
import jax.numpy as jnp
import numpy as np
import pytest
from flax import nnx

from resps_jax.decoding.action import AR_ACTION, NGRAM_MAX, Action, format_action, parse_action, parse_actions
from resps_jax.decoding.engine import Engine, GenerationConfig, SpeculativeEngine
from resps_jax.decoding.ngram import add_chain, ngram_chain, root_only
from resps_jax.decoding.spec import draft_step, spec_interval, spec_prefill
from resps_jax.errors import UserError
from resps_jax.models.cache import KVCache
from resps_jax.models.config import LlamaConfig
from resps_jax.models.tiny import random_pair
from test_spec import exact_three_token_law, fit_to_law, make_tree

# a vocabulary of 8: a random model's greedy text repeats itself, so chains get accepted
REPEATING = LlamaConfig(vocab_size=8, hidden_size=32, intermediate_size=64, num_layers=4, num_heads=4,
                        num_kv_heads=2, head_dim=8)


# ---------------------------------------------------------------------- the lookup


def test_lookup_takes_the_longest_suffix_at_its_latest_occurrence():
    #                  0  1  2  3  4  5  6  7  8  9 10
    ctx = jnp.array([5, 1, 2, 3, 9, 1, 2, 7, 8, 1, 2, 0, 0, 0], jnp.int32)
    chain, n = ngram_chain(ctx, jnp.int32(10), 3, 4)  # suffix (1, 2): latest earlier end is 6
    assert int(n) == 4 and chain.tolist() == [7, 8, 1, 2]
    chain, n = ngram_chain(jnp.array([9, 1, 2, 4, 4, 1, 2, 6, 9, 1, 2, 0], jnp.int32), jnp.int32(10), 3, 3)
    assert int(n) == 3 and chain.tolist() == [4, 4, 1]  # (9, 1, 2) at 0..2 beats the later (1, 2) at 5..6
    chain, n = ngram_chain(jnp.array([9, 1, 2, 4, 4, 1, 2, 6, 9, 1, 2, 0], jnp.int32), jnp.int32(10), 2, 3)
    assert int(n) == 3 and chain.tolist() == [6, 9, 1]  # with matches of at most 2, the latest (1, 2) wins


def test_lookup_stops_at_known_tokens_and_finds_nothing_without_a_match():
    ctx = jnp.array([4, 4, 0, 0, 0, 0], jnp.int32)
    chain, n = ngram_chain(ctx, jnp.int32(1), 3, 4)  # (4) ends at 0: one known token follows it
    assert int(n) == 1 and int(chain[0]) == 4
    _, n = ngram_chain(jnp.array([1, 2, 3, 0], jnp.int32), jnp.int32(2), 3, 4)
    assert int(n) == 0


# ------------------------------------------------------------ the chain in the tree


def test_chain_shares_the_head_nodes_it_matches_and_branches_where_it_leaves_them():
    # head tree: root -> 5 -> 9, root -> 7 -> 3 -> 4
    head = make_tree(tokens=[0, 5, 7, 9, 3, 4], parents=[0, 0, 0, 1, 2, 4], depths=[0, 1, 1, 2, 2, 3])
    tree = add_chain(head, jnp.array([7, 3, 8, 2], jnp.int32), jnp.int32(4), longest_path=5)
    valid = np.asarray(tree.valid)
    assert valid[:6].all() and valid[6:].tolist() == [False, False, True, True]  # 7 and 3 shared
    assert np.asarray(tree.parents)[8:].tolist() == [4, 8]  # 8 under the head's 3, then 2 under 8
    assert np.asarray(tree.depths)[8:].tolist() == [3, 4]
    anc = np.asarray(tree.ancestors)
    assert anc[9].nonzero()[0].tolist() == [0, 2, 4, 8, 9]  # the branch sees root, 7, 3, 8 and itself
    assert not anc[9, 5] and not anc[5, 8]  # siblings' branches never see each other
    short = add_chain(head, jnp.array([7, 3, 8, 2], jnp.int32), jnp.int32(1), longest_path=5)
    assert not np.asarray(short.valid)[6:].any()  # one real token, shared: nothing added


def test_chain_alone_is_a_path_from_the_root():
    tree = add_chain(root_only(jnp.int32(3)), jnp.array([4, 5, 6], jnp.int32), jnp.int32(2), longest_path=4)
    assert np.asarray(tree.valid).tolist() == [True, True, True, False]
    assert np.asarray(tree.tokens)[:3].tolist() == [3, 4, 5] and np.asarray(tree.parents)[:3].tolist() == [0, 0, 1]


# ------------------------------------------------------------ greedy: identical to AR


# the default suite keeps a hybrid and the policy cycling through all kinds; `make test-all` the rest
@pytest.mark.parametrize("actions", [pytest.param("ngram:4", marks=pytest.mark.slow), "3,1,2+ngram:4",
                                     pytest.param("16,4,4+ngram:8", marks=pytest.mark.slow),
                                     "ar;ngram:2;6,2,3+ngram:4;3,1,1;ngram:8"])
def test_ngram_actions_greedy_equal_ar_and_accept_chains(actions):
    target, head = random_pair(REPEATING, seed=1, draft_vocab=8)
    engine = Engine(target)
    acts = parse_actions(actions)
    spec = SpeculativeEngine(engine, head if any(a.uses_head for a in acts) else None, acts)
    gen = GenerationConfig(max_new_tokens=40)
    rng = np.random.RandomState(5)
    accepted = []
    for length in (3, 9, 20):
        prompt = rng.randint(0, 8, size=length).tolist()
        ar = engine.generate(prompt, gen, eos_ids=())
        calls = []
        policy = (lambda _s: calls.append(0) or len(calls) % len(acts)) if len(acts) > 1 else None  # noqa: E731
        got = spec.generate(prompt, gen, eos_ids=(), policy=policy, interval=2)
        assert got.token_ids == ar.token_ids, (actions, length)
        # each step's accepted tokens; the last may pass the budget, which cuts its emission
        assert sum(got.accepted_per_step[:-1]) < got.new_tokens - 1 <= sum(got.accepted_per_step)
        for eos in ((ar.token_ids[11],),):  # EOS inside an accepted chain stops exactly as AR does
            assert spec.generate(prompt, gen, eos, policy=policy, interval=2).token_ids == \
                engine.generate(prompt, gen, eos).token_ids
        accepted.append(got.mean_accepted)
    assert np.mean(accepted) > 1.2, accepted  # the chains were accepted, so the chain path was exercised


def test_ngram_alone_needs_no_head_and_a_head_action_does():
    target, head = random_pair(REPEATING, seed=1, draft_vocab=8)
    engine = Engine(target)
    spec = SpeculativeEngine(engine, None, [AR_ACTION, parse_action("ngram:4")])
    assert spec.graphdef_h is None
    with pytest.raises(UserError, match="3,1,2.*--draft"):
        SpeculativeEngine(engine, None, [parse_action("3,1,2+ngram:4")])


def test_head_catches_up_after_ngram_steps():
    """`ngram:L` leaves the head behind; a tree interval after it catches up on the logged
    features and drafts as if the head had kept step (greedy, so the outputs agree too)."""
    target, head = random_pair(REPEATING, seed=2, draft_vocab=8)
    engine = Engine(target)
    spec = SpeculativeEngine(engine, head, parse_actions("ngram:4;3,1,2"))
    prompt = [1, 2, 3, 1, 2, 3, 4]
    gen = GenerationConfig(max_new_tokens=40)
    _, state = spec.start(prompt, gen)
    state = spec.run_interval(state, spec.actions[0], np.int32(6), np.int32(40), np.asarray([-1], np.int32),
                              np.float32(0.0))
    n = int(state.target_cache.lengths[0])
    assert int(state.draft_cache.lengths[0]) == len(prompt) < n
    from resps_jax.decoding.spec import catch_up_head

    merged = lambda: (nnx.merge(engine.graphdef, engine.params), nnx.merge(spec.graphdef_h, spec.params_h))  # noqa: E731
    caught = jax.jit(lambda s: catch_up_head(*merged(), s))(state)
    _, ref = spec.start(np.asarray(state.context)[:n].tolist(), gen)
    assert int(ref.root) == int(state.root)
    np.testing.assert_allclose(caught.last_out, ref.last_out, rtol=1e-4, atol=1e-4)


# ------------------------------------------------- sampling: exactly plain sampling


def test_hybrid_tree_with_shared_nodes_samples_exactly_as_plain_sampling():
    """20k seeded 3-token samples from a hybrid tree (8,3,3 + ngram:3) on a vocabulary of 6,
    against the exact law, where the chain shares the head's nodes (checked on the prefill
    state) and so the walk meets chain branches and shared nodes alike."""
    cfg = LlamaConfig(vocab_size=6, hidden_size=32, intermediate_size=64, num_layers=8, num_heads=4, num_kv_heads=2,
                      head_dim=8)
    target, head = random_pair(cfg, seed=11, scale=2.0)
    engine = Engine(target)
    action = parse_action("8,3,3+ngram:3")
    spec = SpeculativeEngine(engine, head, [action])
    shape = spec.shapes[spec.shape_key(action)]
    prompt = [1, 4, 2, 5, 1, 4, 2]
    temperature = jnp.float32(1.0)
    capacity = 64
    width = spec.path_width

    def prefill(key):
        return spec_prefill(
            engine.graphdef, spec.graphdef_h, engine.params, spec.params_h, engine.new_cache(1, capacity),
            KVCache.create(1, 1, capacity + 40, 2, 8, jnp.float32),
            jnp.asarray([prompt + [0] * (16 - len(prompt))], jnp.int32), jnp.array([len(prompt)], jnp.int32),
            temperature, key, out_width=width)

    def sample(key):
        state = spec_interval(engine.graphdef, spec.graphdef_h, engine.params, spec.params_h, prefill(key),
                              jnp.int32(8), jnp.int32(3), jnp.int32(3), jnp.int32(3), jnp.int32(8), jnp.int32(3),
                              jnp.array([-1], jnp.int32), temperature, shape=shape)
        return state.context[len(prompt) : len(prompt) + 3], state.steps

    # the chain does share head nodes here: fewer chain slots than real chain tokens
    @jax.jit
    def shared_and_added(key):
        state = prefill(key)
        t, h = nnx.merge(engine.graphdef, engine.params), nnx.merge(spec.graphdef_h, spec.params_h)
        tree = draft_step(t, h, state, jnp.int32(8), jnp.int32(3), jnp.int32(3), jnp.int32(3), shape)
        _, real = ngram_chain(state.context, state.prompt_len, shape.ngram_match, 3)
        added = tree.valid[shape.tt_bucket :].sum()
        return real - added, added

    probe = jax.vmap(shared_and_added)(jax.random.split(jax.random.key(1), 64))
    assert (np.asarray(probe[0]) > 0).any() and (np.asarray(probe[1]) > 0).any()

    run = jax.jit(jax.vmap(sample))
    keys = jax.random.split(jax.random.key(2025), 20_000)
    outs, steps = zip(*(run(keys[i : i + 5000]) for i in range(0, 20_000, 5000)))
    outs, steps = np.concatenate([np.asarray(o) for o in outs]), np.concatenate([np.asarray(s) for s in steps])
    assert (steps < 3).mean() > 0.3  # drafts were accepted: multi-token paths were exercised
    exact = exact_three_token_law(engine, target, prompt)
    pvalue, tv = fit_to_law(outs, exact)
    assert pvalue > 1e-3 and tv < 0.05, (pvalue, tv)


# --------------------------------------------------------------- syntax and shapes


def test_action_syntax_round_trips():
    for text in ("ar", "3,1,2", "ngram:4", "3,1,2+ngram:4", f"16,4,4+ngram:{NGRAM_MAX}"):
        assert format_action(parse_action(text)) == text
    assert parse_action("ngram:4") == Action(1, 0, 0, 4) and parse_action("3,1,2") == (3, 1, 2, 0)


@pytest.mark.parametrize("bad,needle", [("ngram:0", "1..16"), ("ngram:-1", "1..16"), ("ngram:x", "ngram:L"),
                                        (f"ngram:{NGRAM_MAX + 1}", "1..16"), ("ar+ngram:4", "'ar' drafts nothing"),
                                        ("3,1+ngram:4", "TT,d,k"), ("3,1,2+ngram", "ngram:L"),
                                        ("100,2,2+ngram:4", "at most 11")])
def test_bad_ngram_actions_are_refused_naming_the_action(bad, needle):
    with pytest.raises(UserError, match=None) as err:
        parse_actions(f"ar;{bad}")
    assert needle in str(err.value) and (bad.split("+")[0] in str(err.value) or "TT=100" in str(err.value))


def test_drafter_action_space_compiles_at_most_twelve_step_executables():
    """ar, three chains, three trees and five hybrids at L = 4 and 8, every action run: 12
    step executables (one per (TT bucket, L) pair, plus `ar`); a rerun adds none."""
    actions = parse_actions("ar;ngram:2;ngram:4;ngram:8;3,1,2;6,2,3;10,3,3;3,1,2+ngram:4;6,2,3+ngram:4;"
                            "10,3,3+ngram:4;3,1,2+ngram:8;10,3,3+ngram:8")
    target, head = random_pair(REPEATING, seed=5, draft_vocab=8)
    spec = SpeculativeEngine(Engine(target), head, actions)
    prompt = [1, 2, 3, 4, 1, 2, 3]

    def run_all():
        result = spec.generate(prompt, GenerationConfig(max_new_tokens=64), eos_ids=(),
                               policy=lambda _s, it=iter(range(len(actions))): next(it, 0), interval=1)
        assert set(result.actions) == set(actions)

    run_all()
    steps = spec.executables_by_kind()["intervals"]
    assert steps == 3 + 3 + 5 + 1, steps  # chains, trees, hybrid (TT, L) pairs, ar
    run_all()
    assert spec.executables_by_kind()["intervals"] == steps
