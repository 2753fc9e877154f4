"""Native CPU kernels (matmul, attention, RMSNorm), called from jitted code through `jax.ffi`.

The models call `project(x, w, kernel_out)` for every weight product. With
`kernel_out=None` it is XLA's own dot over a [K, N] weight (training, checkpoints,
meshes, accelerators); otherwise the weight was packed once, when an engine was built,
into panels of 32 columns ([ceil(N/32), K, 32]) and the product runs in `resps_matmul`,
a C++ handler compiled by the package's own install (`kernels/cpu/matmul.cc`). Why a
kernel at all: XLA:CPU streams the weights of a 2-64 row product at about half the
bandwidth of a 1-row one, so a tree verification cost 1.6x a decode step; the kernel
streams each panel once for up to 12 rows of x and is batch-invariant (each output's sum
over K runs in one fixed order whatever M is), so a prefix's logits are bitwise equal
whether it is decoded alone or verified in a tree.

The instruction-set path (AVX-512, AVX2+FMA, portable C++) is chosen at run time from the
CPU's features; `RESPS_JAX_KERNEL_PATH=portable|avx2|avx512` caps it (tests use it to check
each path's own batch invariance). `attention` and `rms_norm` exist for the same two
reasons: XLA:CPU's attention dots with 3 query rows per KV head stream the cache slowly,
and its row reduction changes with the row count, so both broke batch invariance.
RESPS_JAX_KERNEL_THREADED_ROWS and RESPS_JAX_ATTENTION_THREADS override the thread
choices below (for measuring them). Kernels know no models.
"""

from __future__ import annotations

import functools
import os

import jax
import jax.numpy as jnp
import numpy as np

PATHS = {"portable": 0, "avx2": 1, "avx512": 2}
PATH_NAMES = {v: k for k, v in PATHS.items()}
PANEL = 32  # columns per weight panel (kernels/cpu/matmul.cc: kPanel)
# Rows of x from which both cores split the panels: always, since two streams read the
# weights faster than one even for a single row (docs/decisions.md, "CPU kernels").
THREADED_ROWS = 1
# Threads for attention's units (up to 12 query rows of one KV head each).
ATTENTION_THREADS = 2


@functools.cache
def _module():
    """The compiled extension with its handlers registered with XLA (once per process)."""
    from resps_jax.kernels import _cpu  # built by `pip install`; see setup.py

    for name, capsule in _cpu.handlers().items():
        jax.ffi.register_ffi_target(name, capsule, platform="cpu")
    return _cpu


def available() -> bool:
    """Whether the compiled kernels import on this install."""
    try:
        _module()
    except ImportError:
        return False
    return True


def best_path() -> str:
    """The best instruction-set path this CPU supports."""
    return PATH_NAMES[int(_module().best_path())]


def requested_path() -> int:
    """The path the kernels are asked to run (-1: the best the CPU has)."""
    name = os.environ.get("RESPS_JAX_KERNEL_PATH", "").strip().lower()
    if not name:
        return -1
    if name not in PATHS:
        raise ValueError(f"RESPS_JAX_KERNEL_PATH={name!r}: expected one of {', '.join(PATHS)}")
    return PATHS[name]


def pack_weight(w: jax.Array) -> jax.Array:
    """A [K, N] weight as the kernel's panels [ceil(N/32), K, 32] (zero-padded columns).

    Each panel is one sequential stream of K rows of 32 columns: done once, when an
    engine is built; training and checkpoints keep [K, N].
    """
    k, n = w.shape
    panels = -(-n // PANEL)
    w = jnp.pad(w, ((0, 0), (0, panels * PANEL - n)))
    return w.reshape(k, panels, PANEL).transpose(1, 0, 2)  # [N/32, K, 32]


def pack_rows(w: jax.Array) -> jax.Array:
    """An [N, K] weight (the tied embedding [V, E] read as the LM head) as panels."""
    return pack_weight(w.T)


def matmul(x: jax.Array, w: jax.Array, n: int, out_dtype=None) -> jax.Array:
    """x [..., K] @ W -> [..., n] in `out_dtype` (default x's), f32 accumulation, on the CPU kernel.

    w: W [K, n] packed by `pack_weight` ([ceil(n/32), K, 32]); x and w float32 or bfloat16.
    """
    _module()
    *lead, k = x.shape
    rows = int(np.prod(lead, dtype=np.int64)) if lead else 1
    out_dtype = jnp.dtype(out_dtype or x.dtype)
    call = jax.ffi.ffi_call("resps_matmul", jax.ShapeDtypeStruct((rows, n), out_dtype), vmap_method="sequential")
    threaded = int(os.environ.get("RESPS_JAX_KERNEL_THREADED_ROWS", THREADED_ROWS))
    y = call(
        x.reshape(rows, k), w, path=np.int64(requested_path()),
        threads=np.int64(2 if rows >= threaded else 1),
    )
    return y.reshape(*lead, n)


def rms_norm(x: jax.Array, weight: jax.Array, eps: float) -> jax.Array:
    """weight * x / sqrt(mean(x^2) + eps) over the last axis, each row's sum in one fixed order.

    XLA:CPU's row reduction vectorises differently from 8 rows on, which made a prefix's
    hidden state depend on how many tokens shared the forward (kernels/cpu/norm.cc).
    """
    _module()
    *lead, e = x.shape
    rows = int(np.prod(lead, dtype=np.int64)) if lead else 1
    call = jax.ffi.ffi_call("resps_rms_norm", jax.ShapeDtypeStruct((rows, e), x.dtype), vmap_method="sequential")
    return call(x.reshape(rows, e), weight, eps=np.float32(eps)).reshape(x.shape)


def attention(
    q: jax.Array,  # [B, KVH, G*T, D], row r is new token r % T
    cache_k: jax.Array,  # [B, KVH, S, D]
    cache_v: jax.Array,  # [B, KVH, S, D]
    new_k: jax.Array,  # [B, KVH, T, D]
    new_v: jax.Array,  # [B, KVH, T, D]
    mask_cache: jax.Array,  # [B, T, S] bool
    mask_new: jax.Array,  # [B, T, T] bool
    scale: float,
) -> jax.Array:
    """Softmax attention of the new tokens' query rows over the cache and each other -> [B, KVH, G*T, D].

    One pass over each KV head's keys and values for all its query rows, masked keys
    skipped, every sum in key order (cache slots, then new tokens): a row's output does not
    depend on T or on the other rows (kernels/cpu/attention.cc).
    """
    _module()
    call = jax.ffi.ffi_call("resps_attention", jax.ShapeDtypeStruct(q.shape, q.dtype), vmap_method="sequential")
    return call(
        q, cache_k, cache_v, new_k.astype(q.dtype), new_v.astype(q.dtype), mask_cache, mask_new,
        scale=np.float32(scale), path=np.int64(requested_path()),
        threads=np.int64(int(os.environ.get("RESPS_JAX_ATTENTION_THREADS", ATTENTION_THREADS))),
    )


def project(x: jax.Array, w: jax.Array, kernel_out: int | None, out_dtype=None) -> jax.Array:
    """The models' one matmul: x [..., K] times a weight, in `out_dtype` (default x's).

    kernel_out=None: w is [K, N] and XLA's dot runs (training, meshes, accelerators).
    kernel_out=N: w is W packed by `pack_weight` and the CPU kernel runs.
    """
    if kernel_out is not None:
        return matmul(x, w, kernel_out, out_dtype)
    y = x @ w
    return y if out_dtype is None else y.astype(out_dtype)
