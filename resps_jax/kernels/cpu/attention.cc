// Attention of T new tokens (G query heads per KV head) over a KV cache and over each
// other, in one pass over each KV head's keys and values, batch-invariant by construction.
//
// Why: XLA:CPU runs the score and value products with 3 query rows per KV head as small
// GEMMs at 4-11 GB/s, so a decoded token after a 2,000-token prompt cost 1.7x one after a
// short prompt, and the products' summation order depends on T, so a prefix's logits
// differed between a 1-token decode and a T-token verification.
//
// Per query row, in key order (the cache slots 0..S-1, then the new tokens 0..T-1), with
// masked keys skipped (exactly what adding their zero weight would give):
//   score = (q . k) * scale        one fixed dot over D (lanes, then one fixed reduction)
//   m     = max over visible keys  (exact in any order)
//   p     = exp(score - m)         one elementwise exp
//   denom = sum of p, sequentially in key order
//   out   = (sum of p * v, per dimension sequentially in key order) / denom
// Nothing depends on T or on the other rows, so a key's contribution is the same whether
// it sits in the cache (decoding) or among the new tokens (verification), provided the
// visible keys come in the same order: the committed prefix in slot order, then the tree
// ancestors in index order (a tree's ancestors precede their descendants), then itself,
// which is also the order the accepted path is compacted into the cache.
//
// Shapes: q [B, KVH, G*T, D] (row r is new token r % T), cache_k/v [B, KVH, S, D], k/v new
// [B, KVH, T, D], mask_cache [B, T, S] and mask_new [B, T, T] (bool), out [B, KVH, G*T, D].
// q, k, v and out share one dtype (f32 or bf16); accumulation is f32.

#include <algorithm>
#include <cmath>
#include <cstdint>
#include <cstring>
#include <limits>
#include <type_traits>
#include <vector>

#include "kernels.h"
#include "xla/ffi/api/ffi.h"

namespace ffi = xla::ffi;

namespace resps {

namespace {

struct Dims {
  int64_t b, kvh, q, t, s, d;
};

// Scratch reused across calls (one set per thread running the handler).
struct Scratch {
  std::vector<float> scores;  // [Q, S + T]
  std::vector<float> acc;     // [Q, D]
  std::vector<float> query;   // [Q, D], the rows widened to f32
};

Scratch& scratch() {
  thread_local Scratch s;
  return s;
}

// ---------------------------------------------------------------- the portable path
template <class T>
void axpy_portable(float p, const T* v, float* acc, int64_t d) {
  for (int64_t i = 0; i < d; ++i) acc[i] += p * widen(v[i]);
}

void exp_portable(float* x, int64_t n) {
  for (int64_t i = 0; i < n; ++i) x[i] = std::exp(x[i]);
}

#ifdef RESPS_X86
// ---------------------------------------------------------------- AVX-512 (D % 16 == 0)
// exp(x) for x <= 0 (scores minus their max): 2^n * P(r), r = x - n ln2 in [-ln2/2, ln2/2],
// P a degree-6 Taylor polynomial (relative error ~2e-7); below -87 it is 0.
__attribute__((target("avx512f,avx512bw,avx512vl"))) void exp_fast(float* x, int64_t n) {
  const __m512 log2e = _mm512_set1_ps(1.44269504088896341f), ln2_hi = _mm512_set1_ps(0.693359375f),
               ln2_lo = _mm512_set1_ps(-2.12194440e-4f), floor = _mm512_set1_ps(-87.0f);
  const __m512 c6 = _mm512_set1_ps(1.0f / 720), c5 = _mm512_set1_ps(1.0f / 120), c4 = _mm512_set1_ps(1.0f / 24),
               c3 = _mm512_set1_ps(1.0f / 6), c2 = _mm512_set1_ps(0.5f), one = _mm512_set1_ps(1.0f);
  for (int64_t i = 0; i < n; i += 16) {
    const __mmask16 live = n - i >= 16 ? 0xffff : static_cast<__mmask16>((1u << (n - i)) - 1u);
    __m512 v = _mm512_maskz_loadu_ps(live, x + i);
    const __mmask16 tiny = _mm512_cmp_ps_mask(v, floor, _CMP_LT_OQ);
    v = _mm512_max_ps(v, floor);
    const __m512 k = _mm512_roundscale_ps(_mm512_mul_ps(v, log2e), _MM_FROUND_TO_NEAREST_INT | _MM_FROUND_NO_EXC);
    __m512 r = _mm512_fnmadd_ps(k, ln2_hi, v);
    r = _mm512_fnmadd_ps(k, ln2_lo, r);
    __m512 poly = _mm512_fmadd_ps(c6, r, c5);
    poly = _mm512_fmadd_ps(poly, r, c4);
    poly = _mm512_fmadd_ps(poly, r, c3);
    poly = _mm512_fmadd_ps(poly, r, c2);
    poly = _mm512_fmadd_ps(poly, r, one);
    poly = _mm512_fmadd_ps(poly, r, one);
    __m512 out = _mm512_scalef_ps(poly, k);
    out = _mm512_maskz_mov_ps(static_cast<__mmask16>(~tiny), out);
    _mm512_mask_storeu_ps(x + i, live, out);
  }
}
#else
void exp_fast(float* x, int64_t n) { exp_portable(x, n); }
#endif

// Rows are processed in blocks of kBlock: a block's scores, softmax and values are done
// before the next, so its keys and values come from cache for its rows. A row's arithmetic
// is the same whichever block it is in.
constexpr int kBlock = 12;

#ifdef RESPS_X86

// 16 vectors p[j] of 16 lanes -> one vector whose lane j is the sum of p[j]'s lanes. Every
// lane j gets the same tree, ((x0 + x2) + (x1 + x3)) within each 128-bit quarter, then
// (q0 + q2) + (q1 + q3) over the quarters, so a score's bits do not depend on its position.
RESPS_AVX512 inline __m512 reduce16(const __m512 (&p)[16]) {
  __m512 a[8], b[4];
  for (int i = 0; i < 8; ++i)
    a[i] = _mm512_add_ps(_mm512_unpacklo_ps(p[2 * i], p[2 * i + 1]), _mm512_unpackhi_ps(p[2 * i], p[2 * i + 1]));
  for (int i = 0; i < 4; ++i)
    b[i] = _mm512_add_ps(_mm512_shuffle_ps(a[2 * i], a[2 * i + 1], 0x44), _mm512_shuffle_ps(a[2 * i], a[2 * i + 1], 0xee));
  const __m512 z01 = _mm512_add_ps(_mm512_shuffle_f32x4(b[0], b[1], 0x44), _mm512_shuffle_f32x4(b[0], b[1], 0xee));
  const __m512 z23 = _mm512_add_ps(_mm512_shuffle_f32x4(b[2], b[3], 0x44), _mm512_shuffle_f32x4(b[2], b[3], 0xee));
  return _mm512_add_ps(_mm512_shuffle_f32x4(z01, z23, 0x88), _mm512_shuffle_f32x4(z01, z23, 0xdd));
}

// scores[r, s] = (q_r . k_s) * scale, or -inf where row r's token may not see key s;
// 16 keys at a time per row (the block's keys stay in L1 for the next rows).
template <class T, int DV>
RESPS_AVX512 void scores_avx512(const float* query, int64_t rows, const T* keys, int64_t count, const bool* mask,
                                int64_t mask_stride, const int64_t* row_t, float scale, float* scores,
                                int64_t stride) {
  constexpr int64_t d = 16 * DV;
  const __m512 scale_v = _mm512_set1_ps(scale), hidden = _mm512_set1_ps(-std::numeric_limits<float>::infinity());
  for (int64_t s0 = 0; s0 < count; s0 += 16) {
    const int64_t n = std::min<int64_t>(16, count - s0);
    const __mmask16 live = n == 16 ? 0xffff : static_cast<__mmask16>((1u << n) - 1u);
    for (int64_t r = 0; r < rows; ++r) {
      __m512 q[DV];
      for (int i = 0; i < DV; ++i) q[i] = _mm512_loadu_ps(query + r * d + 16 * i);
      __m512 p[16];
#pragma GCC unroll 16
      for (int j = 0; j < 16; ++j) {
        if (j < n) {
          const T* k = keys + (s0 + j) * d;
          __m512 sum = _mm512_mul_ps(q[0], load16(k));
          for (int i = 1; i < DV; ++i) sum = _mm512_fmadd_ps(q[i], load16(k + 16 * i), sum);
          p[j] = sum;
        } else {
          p[j] = _mm512_setzero_ps();
        }
      }
      const __m128i bytes = _mm_maskz_loadu_epi8(live, mask + row_t[r] * mask_stride + s0);
      const __mmask16 seen = _mm_cmpneq_epi8_mask(bytes, _mm_setzero_si128());
      const __m512 out = _mm512_mask_blend_ps(seen, hidden, _mm512_mul_ps(reduce16(p), scale_v));
      _mm512_mask_storeu_ps(scores + r * stride + s0, live, out);
    }
  }
}

// acc[r, :] += p[r, s] * v_s over the keys in order (one FMA chain per output lane),
// NB rows at a time so each value vector is loaded once for them.
template <class T, int DV, int NB>
RESPS_AVX512 void values_avx512(const float* scores, int64_t rows, const T* values, int64_t count, float* acc,
                                int64_t stride) {
  constexpr int64_t d = 16 * DV;
  for (int64_t r0 = 0; r0 < rows; r0 += NB) {
    const int64_t nb = std::min<int64_t>(NB, rows - r0);
    __m512 a[NB][DV];
    for (int r = 0; r < NB; ++r)
      for (int i = 0; i < DV; ++i) a[r][i] = r < nb ? _mm512_loadu_ps(acc + (r0 + r) * d + 16 * i) : _mm512_setzero_ps();
    for (int64_t s = 0; s < count; ++s) {
      __m512 v[DV];
      for (int i = 0; i < DV; ++i) v[i] = load16(values + s * d + 16 * i);
      for (int r = 0; r < NB; ++r) {
        if (r >= nb) break;
        const float w = scores[(r0 + r) * stride + s];
        if (w == 0.0f) continue;  // a masked key (exactly what adding 0 * v gives)
        const __m512 wv = _mm512_set1_ps(w);
        for (int i = 0; i < DV; ++i) a[r][i] = _mm512_fmadd_ps(wv, v[i], a[r][i]);
      }
    }
    for (int r = 0; r < nb; ++r)
      for (int i = 0; i < DV; ++i) _mm512_storeu_ps(acc + (r0 + r) * d + 16 * i, a[r][i]);
  }
}

template <class T, int DV>
RESPS_AVX512 void block_avx512(const float* query, int64_t rows, const T* keys, const T* values, int64_t count,
                               int64_t, const bool* mask, int64_t mask_stride, const int64_t* row_t, float scale,
                               float* scores, int64_t stride, float* acc, bool scores_pass) {
  if (scores_pass) {
    scores_avx512<T, DV>(query, rows, keys, count, mask, mask_stride, row_t, scale, scores, stride);
  } else {
    values_avx512<T, DV, 3>(scores, rows, values, count, acc, stride);
  }
}
#endif

template <class T>
void block_portable(const float* query, int64_t rows, const T* keys, const T* values, int64_t count, int64_t d,
                    const bool* mask, int64_t mask_stride, const int64_t* row_t, float scale, float* scores,
                    int64_t keys_stride, float* acc, bool scores_pass) {
  for (int64_t s = 0; s < count; ++s) {
    for (int64_t r = 0; r < rows; ++r) {
      if (scores_pass) {
        scores[r * keys_stride + s] = mask[row_t[r] * mask_stride + s]
                                          ? ordered_dot(query + r * d, keys + s * d, d) * scale
                                          : -std::numeric_limits<float>::infinity();
      } else {
        const float p = scores[r * keys_stride + s];
        if (p != 0.0f) axpy_portable(p, values + s * d, acc + r * d, d);
      }
    }
  }
}

using ExpFn = void (*)(float*, int64_t);

template <class T>
using BlockFn = void (*)(const float*, int64_t, const T*, const T*, int64_t, int64_t, const bool*, int64_t,
                         const int64_t*, float, float*, int64_t, float*, bool);

template <class T>
struct Problem {
  Dims n;
  const T *q, *cache_k, *cache_v, *new_k, *new_v;
  const bool *mask_cache, *mask_new;
  float scale;
  T* out;
  BlockFn<T> block;
  ExpFn exp_rows;
};

// One unit of work: up to kBlock query rows of one (batch row, KV head). Units are
// independent, so they may run on any thread in any order.
template <class T>
void attend_unit(const Problem<T>& p, int64_t b, int64_t h, int64_t r0, int64_t s_end) {
  const Dims& n = p.n;
  Scratch& buf = scratch();
  const int64_t keys = s_end + n.t, rows = std::min<int64_t>(kBlock, n.q - r0);
  buf.scores.resize(static_cast<size_t>(rows * keys));
  buf.acc.assign(static_cast<size_t>(rows * n.d), 0.0f);
  buf.query.resize(static_cast<size_t>(rows * n.d));
  const int64_t head = b * n.kvh + h;
  const T* kc = p.cache_k + head * n.s * n.d;
  const T* vc = p.cache_v + head * n.s * n.d;
  const T* kn = p.new_k + head * n.t * n.d;
  const T* vn = p.new_v + head * n.t * n.d;
  const bool* mc = p.mask_cache + b * n.t * n.s;
  const bool* mn = p.mask_new + b * n.t * n.t;
  const T* q = p.q + (head * n.q + r0) * n.d;
  for (int64_t i = 0; i < rows * n.d; ++i) buf.query[i] = widen(q[i]);
  int64_t row_t[kBlock];
  for (int64_t r = 0; r < rows; ++r) row_t[r] = (r0 + r) % n.t;
  float* sc = buf.scores.data();
  float* acc = buf.acc.data();
  // scores over the cache slots, then the new tokens, in key order
  p.block(buf.query.data(), rows, kc, vc, s_end, n.d, mc, n.s, row_t, p.scale, sc, keys, acc, true);
  p.block(buf.query.data(), rows, kn, vn, n.t, n.d, mn, n.t, row_t, p.scale, sc + s_end, keys, acc, true);
  // softmax weights per row (unnormalised)
  for (int64_t r = 0; r < rows; ++r) {
    float* row = sc + r * keys;
    float top = -std::numeric_limits<float>::infinity();
    for (int64_t i = 0; i < keys; ++i) top = std::max(top, row[i]);
    if (top == -std::numeric_limits<float>::infinity()) top = 0;  // sees nothing: weights 0
    for (int64_t i = 0; i < keys; ++i) row[i] -= top;  // -inf stays -inf -> exp 0
    p.exp_rows(row, keys);
  }
  // weighted values: each row's accumulator sums its keys in order
  p.block(buf.query.data(), rows, kc, vc, s_end, n.d, mc, n.s, row_t, p.scale, sc, keys, acc, false);
  p.block(buf.query.data(), rows, kn, vn, n.t, n.d, mn, n.t, row_t, p.scale, sc + s_end, keys, acc, false);
  T* o = p.out + (head * n.q + r0) * n.d;
  for (int64_t r = 0; r < rows; ++r) {
    const float* row = sc + r * keys;
    float total = 0;  // the denominator, in key order
    for (int64_t i = 0; i < keys; ++i) {
      if (row[i] != 0.0f) total += row[i];
    }
    const float inv = 1.0f / total;
    for (int64_t i = 0; i < n.d; ++i) narrow(acc[r * n.d + i] * inv, &o[r * n.d + i]);
  }
}

template <class T>
void attend(ffi::ThreadPool& pool, const Dims& n, const T* q, const T* cache_k, const T* cache_v, const T* new_k,
            const T* new_v, const bool* mask_cache, const bool* mask_new, float scale, T* out, Path path,
            int64_t threads) {
  Problem<T> p{n, q, cache_k, cache_v, new_k, new_v, mask_cache, mask_new, scale, out, block_portable<T>,
               exp_portable};
#ifdef RESPS_X86
  if (path == Path::kAvx512) {
    p.exp_rows = exp_fast;
    switch (n.d) {
      case 16: p.block = block_avx512<T, 1>; break;
      case 32: p.block = block_avx512<T, 2>; break;
      case 64: p.block = block_avx512<T, 4>; break;
      case 128: p.block = block_avx512<T, 8>; break;
      default: p.exp_rows = exp_portable;
    }
  }
#endif
  // per batch row, the last visible cache slot over its new tokens: later slots are never read
  std::vector<int64_t> s_end(static_cast<size_t>(n.b), 0);
  for (int64_t b = 0; b < n.b; ++b) {
    for (int64_t t = 0; t < n.t; ++t) {
      const bool* row = mask_cache + (b * n.t + t) * n.s;
      for (int64_t s = n.s; s > s_end[b]; --s) {
        if (row[s - 1]) {
          s_end[b] = s;
          break;
        }
      }
    }
  }
  const int64_t blocks = (n.q + kBlock - 1) / kBlock, units = n.b * n.kvh * blocks;
  parallel_chunks(pool, units, threads, [&p, &s_end, blocks, &n](int64_t u) {
    const int64_t b = u / (n.kvh * blocks), h = (u / blocks) % n.kvh, r0 = (u % blocks) * kBlock;
    attend_unit(p, b, h, r0, s_end[b]);
  });
}

}  // namespace

ffi::Error AttentionImpl(ffi::ThreadPool pool, ffi::AnyBuffer q, ffi::AnyBuffer cache_k, ffi::AnyBuffer cache_v, ffi::AnyBuffer new_k,
                         ffi::AnyBuffer new_v, ffi::Buffer<ffi::PRED> mask_cache, ffi::Buffer<ffi::PRED> mask_new,
                         ffi::Result<ffi::AnyBuffer> out, float scale, int64_t path_attr, int64_t threads) {
  auto qd = q.dimensions(), cd = cache_k.dimensions(), nd = new_k.dimensions();
  if (qd.size() != 4 || cd.size() != 4 || nd.size() != 4) {
    return ffi::Error::InvalidArgument("resps_attention: q, cache and new K/V must be rank 4");
  }
  const Dims n{qd[0], qd[1], qd[2], nd[2], cd[2], qd[3]};
  if (cd[0] != n.b || cd[1] != n.kvh || cd[3] != n.d || nd[0] != n.b || nd[1] != n.kvh || nd[3] != n.d ||
      n.q % n.t != 0 || mask_cache.element_count() != static_cast<size_t>(n.b * n.t * n.s) ||
      mask_new.element_count() != static_cast<size_t>(n.b * n.t * n.t)) {
    return ffi::Error::InvalidArgument("resps_attention: shapes do not agree");
  }
  const ffi::DataType dtype = q.element_type();
  for (const ffi::AnyBuffer* buffer : {&cache_k, &cache_v, &new_k, &new_v}) {
    if (buffer->element_type() != dtype) return ffi::Error::InvalidArgument("resps_attention: mixed dtypes");
  }
  if (out->element_type() != dtype) return ffi::Error::InvalidArgument("resps_attention: mixed dtypes");
  const Path path = resolve_path(path_attr);
  const bool* mc = reinterpret_cast<const bool*>(mask_cache.typed_data());
  const bool* mn = reinterpret_cast<const bool*>(mask_new.typed_data());
  if (dtype == ffi::DataType::F32) {
    attend<float>(pool, n, static_cast<const float*>(q.untyped_data()), static_cast<const float*>(cache_k.untyped_data()),
                  static_cast<const float*>(cache_v.untyped_data()), static_cast<const float*>(new_k.untyped_data()),
                  static_cast<const float*>(new_v.untyped_data()), mc, mn, scale,
                  static_cast<float*>(out->untyped_data()), path, threads);
  } else if (dtype == ffi::DataType::BF16) {
    attend<uint16_t>(pool, n, static_cast<const uint16_t*>(q.untyped_data()),
                     static_cast<const uint16_t*>(cache_k.untyped_data()),
                     static_cast<const uint16_t*>(cache_v.untyped_data()),
                     static_cast<const uint16_t*>(new_k.untyped_data()),
                     static_cast<const uint16_t*>(new_v.untyped_data()), mc, mn, scale,
                     static_cast<uint16_t*>(out->untyped_data()), path, threads);
  } else {
    return ffi::Error::InvalidArgument("resps_attention: float32 or bfloat16 expected");
  }
  return ffi::Error::Success();
}

}  // namespace resps

XLA_FFI_DEFINE_HANDLER_SYMBOL(ResPSAttention, resps::AttentionImpl,
                              xla::ffi::Ffi::Bind()
                                  .Ctx<xla::ffi::ThreadPool>()
                                  .Arg<xla::ffi::AnyBuffer>()               // q [B, KVH, G*T, D]
                                  .Arg<xla::ffi::AnyBuffer>()               // cache K [B, KVH, S, D]
                                  .Arg<xla::ffi::AnyBuffer>()               // cache V [B, KVH, S, D]
                                  .Arg<xla::ffi::AnyBuffer>()               // new K [B, KVH, T, D]
                                  .Arg<xla::ffi::AnyBuffer>()               // new V [B, KVH, T, D]
                                  .Arg<xla::ffi::Buffer<xla::ffi::PRED>>()  // mask over the cache [B, T, S]
                                  .Arg<xla::ffi::Buffer<xla::ffi::PRED>>()  // mask among new [B, T, T]
                                  .Ret<xla::ffi::AnyBuffer>()               // out [B, KVH, G*T, D]
                                  .Attr<float>("scale")
                                  .Attr<int64_t>("path")
                                  .Attr<int64_t>("threads"));
