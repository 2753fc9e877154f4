"""The CPU kernels (kernels/cpu/*.cc through jax.ffi): correct, and batch-invariant on every path.

Batch invariance is the property tree speculation rests on: a prefix's logits must be the
same bits whether the target decodes one token (M = 1) or verifies T tokens at once, so that
greedy speculation is token-identical to AR by construction. XLA's dot fails it (a 1-row
product goes to a GEMV, more rows to Eigen's GEMM; its row reduction changes at 8 rows).
Each instruction-set path this CPU has is checked on its own (RESPS_JAX_KERNEL_PATH caps
the path; results may differ between paths, never within one).
"""

from __future__ import annotations

import jax
import jax.numpy as jnp
import numpy as np
import pytest
from flax import nnx

from resps_jax import kernels
from resps_jax.errors import UserError
from resps_jax.models.cache import KVCache
from resps_jax.models.config import LlamaConfig
from resps_jax.models.llama import Llama, causal_mask, resolve_matmul, to_kernel_layout

PATHS = [name for name, level in kernels.PATHS.items() if level <= kernels.PATHS[kernels.best_path()]]
# head_dim 16 takes the AVX-512 attention path; 48 and 80 are not multiples of the 32-column panel
CFG = LlamaConfig(vocab_size=96, hidden_size=48, intermediate_size=80, num_layers=8, num_heads=3, num_kv_heads=1,
                  head_dim=16, tie_word_embeddings=True)


@pytest.fixture(params=PATHS)
def path(request, monkeypatch):
    monkeypatch.setenv("RESPS_JAX_KERNEL_PATH", request.param)
    return request.param


@pytest.mark.parametrize("dtype", [jnp.float32, jnp.bfloat16])
def test_matmul_matches_a_float64_product(path, dtype):
    rng = np.random.default_rng(0)
    for k, n in [(48, 80), (37, 19), (64, 96)]:
        w = jnp.asarray(rng.standard_normal((k, n)), dtype)
        packed = kernels.pack_weight(w)
        assert packed.shape == (-(-n // 32), k, 32)
        for m in [1, 5, 12, 13, 30]:
            x = jnp.asarray(rng.standard_normal((m, k)), dtype)
            y = np.asarray(jax.jit(lambda x, p, n=n: kernels.matmul(x, p, n, jnp.float32))(x, packed))
            ref = np.asarray(x, np.float64) @ np.asarray(w, np.float64)
            np.testing.assert_allclose(y, ref, rtol=1e-5, atol=1e-4)


def test_matmul_rows_do_not_depend_on_the_other_rows(path):
    rng = np.random.default_rng(1)
    k, n = 40, 70
    packed = kernels.pack_weight(jnp.asarray(rng.standard_normal((k, n)), jnp.float32))
    x = jnp.asarray(rng.standard_normal((64, k)), jnp.float32)
    call = jax.jit(lambda x: kernels.matmul(x, packed, n))
    alone = np.stack([np.asarray(call(x[i : i + 1]))[0] for i in range(64)])
    for m in [2, 7, 8, 12, 13, 24, 64]:  # 8+ rows split the panels over two threads
        np.testing.assert_array_equal(np.asarray(call(x[:m])), alone[:m])


def _model(seed: int = 0) -> Llama:
    model = Llama(CFG, rngs=nnx.Rngs(seed))
    nnx.update(model, jax.tree.map(lambda x: x * 4, nnx.state(model, nnx.Param)))
    return model


def _forward(model: Llama):
    graphdef, params = nnx.split(model)

    @jax.jit
    def forward(params, cache, tokens, positions, mask):
        m = nnx.merge(graphdef, params)
        hidden, _, cache = m(tokens, positions, cache, mask)
        return m.logits(hidden), cache

    return lambda cache, tokens, positions, mask: forward(params, cache, tokens, positions, mask)


def _after_prefix(forward, prefix: np.ndarray, dtype, capacity: int = 128) -> KVCache:
    cache = KVCache.create(CFG.num_layers, 1, capacity, CFG.num_kv_heads, CFG.head_dim, dtype)
    p = prefix.shape[1]
    _, cache = forward(cache, jnp.asarray(prefix), jnp.arange(p, dtype=jnp.int32)[None], causal_mask(1, p))
    return cache.with_lengths(jnp.full((1,), p, jnp.int32))


@pytest.mark.parametrize("dtype", [jnp.float32, jnp.bfloat16])
def test_verify_rows_are_bitwise_the_tokens_decoded_one_by_one(path, dtype):
    """AR (one token per forward) against one causal verify of T tokens, T up to 64: every row
    of the verify has the bits its token gets when decoded alone after its predecessors."""
    model = _model() if dtype == jnp.float32 else _bf16(_model())
    forward = _forward(to_kernel_layout(model))
    rng = np.random.default_rng(2)
    prefix = rng.integers(0, CFG.vocab_size, (1, 9)).astype(np.int32)
    new = rng.integers(0, CFG.vocab_size, (1, 64)).astype(np.int32)
    cache = _after_prefix(forward, prefix, dtype)
    decoded = []
    for i in range(64):  # AR: each token alone, committed before the next
        logits, cache = forward(cache, jnp.asarray(new[:, i : i + 1]), jnp.full((1, 1), 9 + i, jnp.int32), causal_mask(1, 1))
        cache = cache.with_lengths(cache.lengths + 1)
        decoded.append(np.asarray(logits[0, 0]))
    decoded = np.stack(decoded)
    for t in [2, 7, 8, 13, 64]:  # both sides of 8 rows (threads, XLA's reduction) and 12 (a row group)
        start = _after_prefix(forward, prefix, dtype)
        logits, _ = forward(start, jnp.asarray(new[:, :t]), (9 + jnp.arange(t, dtype=jnp.int32))[None], causal_mask(1, t))
        np.testing.assert_array_equal(np.asarray(logits[0]), decoded[:t], err_msg=f"T={t}, path {path}")


def _bf16(model: Llama) -> Llama:
    state = nnx.state(model, nnx.Param)
    nnx.update(model, jax.tree.map(lambda x: x.astype(jnp.bfloat16), state))
    return model


def test_xla_dot_is_not_batch_invariant_here():
    """Why the kernels exist: with XLA's dot a prefix's logits change with the verify width."""
    forward = _forward(_model())
    rng = np.random.default_rng(3)
    prefix = rng.integers(0, CFG.vocab_size, (1, 9)).astype(np.int32)
    new = rng.integers(0, CFG.vocab_size, (1, 16)).astype(np.int32)
    one, _ = forward(_after_prefix(forward, prefix, jnp.float32), jnp.asarray(new[:, :1]),
                     jnp.full((1, 1), 9, jnp.int32), causal_mask(1, 1))
    differs = []
    for t in [2, 4, 8, 16]:
        logits, _ = forward(_after_prefix(forward, prefix, jnp.float32), jnp.asarray(new[:, :t]),
                            (9 + jnp.arange(t, dtype=jnp.int32))[None], causal_mask(1, t))
        np.testing.assert_allclose(np.asarray(logits[0, 0]), np.asarray(one[0, 0]), rtol=1e-4, atol=1e-4)
        differs.append(not np.array_equal(np.asarray(logits[0, 0]), np.asarray(one[0, 0])))
    assert any(differs), "XLA's dot gave the same bits at every width: this test no longer shows the problem"


def test_kernel_forward_matches_xla_forward_under_a_tree_mask(path):
    """Kernel and XLA paths agree numerically (not bitwise) on a tree-shaped verify."""
    model = _model()
    rng = np.random.default_rng(4)
    prefix = rng.integers(0, CFG.vocab_size, (1, 11)).astype(np.int32)
    tokens = jnp.asarray(rng.integers(0, CFG.vocab_size, (1, 6)), jnp.int32)
    # root, two children, a grandchild under each, one more under the first
    parent = [-1, 0, 0, 1, 2, 3]
    mask = np.eye(6, dtype=bool)
    for node, up in enumerate(parent):
        while up >= 0:
            mask[node, up] = True
            up = parent[up]
    depth = jnp.asarray([[0, 1, 1, 2, 2, 3]], jnp.int32)
    outputs = []
    for m in (to_kernel_layout(model), model):
        forward = _forward(m)
        logits, _ = forward(_after_prefix(forward, prefix, jnp.float32), tokens, 11 + depth, jnp.asarray(mask)[None])
        outputs.append(np.asarray(logits))
    np.testing.assert_allclose(outputs[0], outputs[1], rtol=2e-4, atol=2e-4)


def test_to_kernel_layout_leaves_the_model_alone():
    model = _model()
    before = jax.tree.map(np.asarray, nnx.state(model, nnx.Param))
    packed = to_kernel_layout(model)
    assert packed.layers[0].mlp.gate_proj.kernel_out == CFG.intermediate_size
    assert packed.layers[0].mlp.gate_proj.weight[...].shape == (3, CFG.hidden_size, 32)
    assert model.layers[0].mlp.gate_proj.kernel_out is None
    after = jax.tree.map(np.asarray, nnx.state(model, nnx.Param))
    jax.tree.map(np.testing.assert_array_equal, before, after)


def test_matmul_backend_choice():
    assert resolve_matmul(None, single_cpu_device=True) == "kernel"
    assert resolve_matmul(None, single_cpu_device=False) == "xla"
    assert resolve_matmul("xla", single_cpu_device=True) == "xla"
    with pytest.raises(UserError, match="single CPU device"):
        resolve_matmul("kernel", single_cpu_device=False)
    with pytest.raises(UserError, match="expected one of"):
        resolve_matmul("blas", single_cpu_device=True)


def test_a_bf16_draft_head_halves_its_bytes_and_output_stays_the_targets():
    """The kernel engine packs the head's products in bf16 (draft_weights='float32' keeps f32) (half the bytes a drafting
    pass reads); the target verifies every draft, so greedy output is still plain AR's."""
    from resps_jax.decoding.engine import Engine, GenerationConfig, SpeculativeEngine
    from resps_jax.models.tiny import random_pair

    target, head = random_pair(CFG, seed=4, draft_vocab=64)
    engine = Engine(target)
    assert engine.matmul == "kernel"
    spec = SpeculativeEngine(engine, head, [(8, 3, 2)])  # the kernel's default
    panels = lambda params: [leaf for leaf in jax.tree.leaves(params) if leaf.ndim == 3 and leaf.shape[-1] == 32]  # noqa: E731
    assert panels(spec.params_h) and all(leaf.dtype == jnp.bfloat16 for leaf in panels(spec.params_h))
    f32 = SpeculativeEngine(engine, head, [(8, 3, 2)], draft_weights="float32")
    assert all(leaf.dtype == jnp.float32 for leaf in panels(f32.params_h))
    prompt = list(range(5, 22))
    gen = GenerationConfig(max_new_tokens=40)
    want = engine.generate(prompt, gen, eos_ids=()).token_ids
    assert spec.generate(prompt, gen, eos_ids=()).token_ids == want == f32.generate(prompt, gen, eos_ids=()).token_ids
    with pytest.raises(UserError, match="draft_weights needs the CPU kernel"):
        SpeculativeEngine(Engine(target, matmul="xla"), head, [(8, 3, 2)], draft_weights="bfloat16")
