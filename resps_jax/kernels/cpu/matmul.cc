// y[M, N] = x[M, K] @ W[K, N] on the CPU, batch-invariant by construction.
//
// Why: XLA:CPU sends a product with 2-64 rows to Eigen's GEMM, which packs the weights
// and streams them at about half the bandwidth a plain loop reaches, so verifying a
// draft tree of T tokens costs far more than one decoding step although the weights are
// read once either way. Here W is laid out once, when an engine is built, in panels of 32
// columns ([ceil(N/32), K, 32], zero-padded): a panel is one sequential stream, read from
// memory once for the first group of up to 12 rows of x (AVX-512) and from L2 for the
// next groups, so 1 to ~12 rows cost about what one row costs.
//
// Batch invariance: every output element y[m, n] is one lane's running sum over k =
// 0..K-1 in order (an FMA per k, from zero), whatever M is, whichever row group m falls
// in and however the panels are split over threads. No split over K, no M-dependent
// blocking, no horizontal reduction. So a prefix's logits are bitwise equal computed
// alone (M = 1) or inside a T-row verification, on each path (paths may differ from each
// other: the portable path rounds the product before the sum).
//
// x and W may be f32 or bf16 (bf16 widens exactly to f32; accumulation is f32 in both);
// y is f32 or bf16 (rounded to nearest even once, at the end).

#include <algorithm>
#include <cstdint>
#include <type_traits>

#include "kernels.h"
#include "xla/ffi/api/ffi.h"

namespace ffi = xla::ffi;

namespace resps {

namespace {

struct Operand {
  const void* data;
  bool bf16;
  template <typename T>
  const T* as() const { return static_cast<const T*>(data); }
};

struct Problem {
  Operand x;       // [M, K]
  Operand w;       // [N, K]
  void* y;         // [M, N]
  bool y_bf16;
  int64_t m, n, k;
};

inline void store(const Problem& p, int64_t row, int64_t col, float value) {
  if (p.y_bf16) {
    narrow(value, static_cast<uint16_t*>(p.y) + row * p.n + col);
  } else {
    narrow(value, static_cast<float*>(p.y) + row * p.n + col);
  }
}

constexpr int64_t kPanel = 32;  // columns per weight panel: [N / 32, K, 32]

// ----------------------------------------------------------------------------------
// Portable path: each column's 32-lane panel row accumulates over K in order (compiled
// with -ffp-contract=off, so a*b+c is a rounded product then a rounded sum on every
// compiler and target). Per-element code does not depend on M.
inline float load_scalar(const Operand& op, int64_t index) {
  return op.bf16 ? widen(op.as<uint16_t>()[index]) : op.as<float>()[index];
}

void portable_panels(const Problem& p, int64_t panel_begin, int64_t panel_end) {
  for (int64_t panel = panel_begin; panel < panel_end; ++panel) {
    const int64_t base = panel * p.k * kPanel;
    const int64_t width = std::min(kPanel, p.n - panel * kPanel);
    for (int64_t row = 0; row < p.m; ++row) {
      float acc[kPanel] = {};
      for (int64_t kk = 0; kk < p.k; ++kk) {
        const float xv = load_scalar(p.x, row * p.k + kk);
        for (int64_t j = 0; j < kPanel; ++j) acc[j] += xv * load_scalar(p.w, base + kk * kPanel + j);
      }
      for (int64_t j = 0; j < width; ++j) store(p, row, panel * kPanel + j, acc[j]);
    }
  }
}

#ifdef RESPS_X86
// ----------------------------------------------------------------------------------
// AVX-512: R (<= 12) rows of x against one 32-column panel, 2R zmm accumulators; per k,
// the panel's two vectors are loaded once and each row's x[k] is broadcast into an FMA.
// The panel streams from memory once for the first row group and from L2 for the next.
template <class T>
__attribute__((always_inline)) inline float scalar(const T* base) {
  if constexpr (std::is_same_v<T, uint16_t>) {
    return widen(*base);
  } else {
    return *base;
  }
}

template <class XT, class WT, int R>
__attribute__((target("avx512f,avx512bw,avx512vl"))) void avx512_tile(const Problem& p, int64_t row0,
                                                                    int64_t panel) {
  const XT* x = p.x.as<XT>() + row0 * p.k;
  const WT* w = p.w.as<WT>() + panel * p.k * kPanel;
  __m512 acc[R][2];
#pragma GCC unroll 16
  for (int r = 0; r < R; ++r) acc[r][0] = acc[r][1] = _mm512_setzero_ps();
  for (int64_t kk = 0; kk < p.k; ++kk) {
    const __m512 w0 = load16(w + kk * kPanel), w1 = load16(w + kk * kPanel + 16);
#pragma GCC unroll 16
    for (int r = 0; r < R; ++r) {
      const __m512 xv = _mm512_set1_ps(scalar(x + r * p.k + kk));
      acc[r][0] = _mm512_fmadd_ps(xv, w0, acc[r][0]);
      acc[r][1] = _mm512_fmadd_ps(xv, w1, acc[r][1]);
    }
  }
  const int64_t col0 = panel * kPanel, width = std::min(kPanel, p.n - col0);
  for (int r = 0; r < R; ++r) {
    alignas(64) float out[kPanel];
    _mm512_store_ps(out, acc[r][0]);
    _mm512_store_ps(out + 16, acc[r][1]);
    for (int64_t j = 0; j < width; ++j) store(p, row0 + r, col0 + j, out[j]);
  }
}

template <class XT, class WT>
__attribute__((target("avx512f,avx512bw,avx512vl"))) void avx512_panels_t(const Problem& p, int64_t panel_begin,
                                                                        int64_t panel_end) {
  // rows in equal groups of at most 12 (16 rows: 8 + 8, not 12 + 4): a short group
  // re-reads the panel for few FMAs. Every group runs the same per-element chain.
  const int64_t groups = (p.m + 11) / 12, per_group = (p.m + groups - 1) / groups;
  for (int64_t panel = panel_begin; panel < panel_end; ++panel) {
    for (int64_t row = 0; row < p.m; row += per_group) {
      switch (std::min(per_group, p.m - row)) {
      case 12: avx512_tile<XT, WT, 12>(p, row, panel); break;
      case 11: avx512_tile<XT, WT, 11>(p, row, panel); break;
      case 10: avx512_tile<XT, WT, 10>(p, row, panel); break;
      case 9: avx512_tile<XT, WT, 9>(p, row, panel); break;
      case 8: avx512_tile<XT, WT, 8>(p, row, panel); break;
      case 7: avx512_tile<XT, WT, 7>(p, row, panel); break;
      case 6: avx512_tile<XT, WT, 6>(p, row, panel); break;
      case 5: avx512_tile<XT, WT, 5>(p, row, panel); break;
      case 4: avx512_tile<XT, WT, 4>(p, row, panel); break;
      case 3: avx512_tile<XT, WT, 3>(p, row, panel); break;
      case 2: avx512_tile<XT, WT, 2>(p, row, panel); break;
      case 1: avx512_tile<XT, WT, 1>(p, row, panel); break;
      default: break;
      }
    }
  }
}

void avx512_panels(const Problem& p, int64_t panel_begin, int64_t panel_end) {
  if (p.x.bf16 && p.w.bf16) return avx512_panels_t<uint16_t, uint16_t>(p, panel_begin, panel_end);
  if (p.x.bf16) return avx512_panels_t<uint16_t, float>(p, panel_begin, panel_end);
  if (p.w.bf16) return avx512_panels_t<float, uint16_t>(p, panel_begin, panel_end);
  return avx512_panels_t<float, float>(p, panel_begin, panel_end);
}

// ----------------------------------------------------------------------------------
// AVX2 + FMA: R (<= 2) rows against a panel as four 8-lane vectors, 4R accumulators.
template <class T>
__attribute__((target("avx2,fma"), always_inline)) inline __m256 load8(const T* base) {
  if constexpr (std::is_same_v<T, uint16_t>) {
    __m128i half = _mm_loadu_si128(reinterpret_cast<const __m128i*>(base));
    return _mm256_castsi256_ps(_mm256_slli_epi32(_mm256_cvtepu16_epi32(half), 16));
  } else {
    return _mm256_loadu_ps(base);
  }
}

template <class XT, class WT, int R>
__attribute__((target("avx2,fma"))) void avx2_tile(const Problem& p, int64_t row0, int64_t panel) {
  const XT* x = p.x.as<XT>() + row0 * p.k;
  const WT* w = p.w.as<WT>() + panel * p.k * kPanel;
  __m256 acc[R][4];
#pragma GCC unroll 4
  for (int r = 0; r < R; ++r)
#pragma GCC unroll 4
    for (int j = 0; j < 4; ++j) acc[r][j] = _mm256_setzero_ps();
  for (int64_t kk = 0; kk < p.k; ++kk) {
    __m256 wv[4];
#pragma GCC unroll 4
    for (int j = 0; j < 4; ++j) wv[j] = load8(w + kk * kPanel + 8 * j);
#pragma GCC unroll 4
    for (int r = 0; r < R; ++r) {
      const __m256 xv = _mm256_set1_ps(scalar(x + r * p.k + kk));
#pragma GCC unroll 4
      for (int j = 0; j < 4; ++j) acc[r][j] = _mm256_fmadd_ps(xv, wv[j], acc[r][j]);
    }
  }
  const int64_t col0 = panel * kPanel, width = std::min(kPanel, p.n - col0);
  for (int r = 0; r < R; ++r) {
    float out[kPanel];
    for (int j = 0; j < 4; ++j) _mm256_storeu_ps(out + 8 * j, acc[r][j]);
    for (int64_t j = 0; j < width; ++j) store(p, row0 + r, col0 + j, out[j]);
  }
}

template <class XT, class WT>
__attribute__((target("avx2,fma"))) void avx2_panels_t(const Problem& p, int64_t panel_begin, int64_t panel_end) {
  for (int64_t panel = panel_begin; panel < panel_end; ++panel) {
    int64_t row = 0;
    for (; row + 2 <= p.m; row += 2) avx2_tile<XT, WT, 2>(p, row, panel);
    if (row < p.m) avx2_tile<XT, WT, 1>(p, row, panel);
  }
}

void avx2_panels(const Problem& p, int64_t panel_begin, int64_t panel_end) {
  if (p.x.bf16 && p.w.bf16) return avx2_panels_t<uint16_t, uint16_t>(p, panel_begin, panel_end);
  if (p.x.bf16) return avx2_panels_t<uint16_t, float>(p, panel_begin, panel_end);
  if (p.w.bf16) return avx2_panels_t<float, uint16_t>(p, panel_begin, panel_end);
  return avx2_panels_t<float, float>(p, panel_begin, panel_end);
}
#endif  // RESPS_X86

using PanelFn = void (*)(const Problem&, int64_t, int64_t);

PanelFn panels_for(Path path) {
  switch (path) {
#ifdef RESPS_X86
    case Path::kAvx512: return avx512_panels;
    case Path::kAvx2: return avx2_panels;
#endif
    default: return portable_panels;
  }
}

// Threads split the panels (whole panels, so a column's code never depends on the split).
constexpr int64_t kChunkPanels = 2;

}  // namespace

ffi::Error MatmulImpl(ffi::ThreadPool pool, ffi::AnyBuffer x, ffi::AnyBuffer w, ffi::Result<ffi::AnyBuffer> y,
                      int64_t path_attr, int64_t threads_attr) {
  auto xd = x.dimensions(), wd = w.dimensions(), yd = y->dimensions();
  if (xd.size() != 2 || wd.size() != 3 || yd.size() != 2) {
    return ffi::Error::InvalidArgument("resps_matmul: x [M, K], w [N/32, K, 32] and y [M, N] expected");
  }
  const int64_t m = xd[0], k = xd[1], n = yd[1], panels = wd[0];
  if (wd[1] != k || wd[2] != kPanel || yd[0] != m || panels != (n + kPanel - 1) / kPanel) {
    return ffi::Error::InvalidArgument("resps_matmul: shapes do not agree (x [M, K], w [ceil(N/32), K, 32], y [M, N])");
  }
  auto is_f32_or_bf16 = [](ffi::DataType t) { return t == ffi::DataType::F32 || t == ffi::DataType::BF16; };
  if (!is_f32_or_bf16(x.element_type()) || !is_f32_or_bf16(w.element_type()) ||
      !is_f32_or_bf16(y->element_type())) {
    return ffi::Error::InvalidArgument("resps_matmul: x, w and y must be float32 or bfloat16");
  }
  Problem problem{{x.untyped_data(), x.element_type() == ffi::DataType::BF16},
                  {w.untyped_data(), w.element_type() == ffi::DataType::BF16},
                  y->untyped_data(),
                  y->element_type() == ffi::DataType::BF16,
                  m, n, k};
  if (m == 0 || n == 0) return ffi::Error::Success();
  const PanelFn run = panels_for(resolve_path(path_attr));

  const int64_t chunks = (panels + kChunkPanels - 1) / kChunkPanels;
  parallel_chunks(pool, chunks, threads_attr > 0 ? threads_attr : 1, [problem, run, panels](int64_t c) {
    run(problem, c * kChunkPanels, std::min(panels, (c + 1) * kChunkPanels));
  });
  return ffi::Error::Success();
}

}  // namespace resps

XLA_FFI_DEFINE_HANDLER_SYMBOL(ResPSMatmul, resps::MatmulImpl,
                              xla::ffi::Ffi::Bind()
                                  .Ctx<xla::ffi::ThreadPool>()
                                  .Arg<xla::ffi::AnyBuffer>()  // x [M, K]
                                  .Arg<xla::ffi::AnyBuffer>()  // w [ceil(N/32), K, 32]
                                  .Ret<xla::ffi::AnyBuffer>()  // y [M, N]
                                  .Attr<int64_t>("path")
                                  .Attr<int64_t>("threads"));
