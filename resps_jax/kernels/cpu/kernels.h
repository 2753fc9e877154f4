// Shared declarations of the CPU kernels: which instruction-set path runs, chosen at run
// time from the CPU's features so one binary runs on any x86-64 (and the portable path
// on any other CPU).
#pragma once

#include <algorithm>
#include <atomic>
#include <cstdint>
#include <cstring>
#include <memory>
#include <thread>
#include <type_traits>

#if defined(__x86_64__) || defined(_M_X64)
#include <immintrin.h>
#define RESPS_X86 1
#define RESPS_AVX512 __attribute__((target("avx512f,avx512bw,avx512vl")))
#endif

#include "xla/ffi/api/ffi.h"

namespace resps {

enum class Path : int64_t { kAuto = -1, kPortable = 0, kAvx2 = 1, kAvx512 = 2 };

// The best path this CPU supports.
Path best_path();

// A requested path (an FFI attribute: -1 auto, 0 portable, 1 AVX2+FMA, 2 AVX-512), capped
// at what the CPU supports, so a request never runs instructions the CPU lacks.
Path resolve_path(int64_t requested);

// bf16 <-> f32. bf16 is f32's top half, so widening is exact; narrowing rounds to nearest
// even once (a NaN stays a quiet NaN). bf16 travels as uint16_t.
inline float widen(float v) { return v; }
inline float widen(uint16_t v) {
  uint32_t bits = static_cast<uint32_t>(v) << 16;
  float out;
  std::memcpy(&out, &bits, sizeof(out));
  return out;
}
inline void narrow(float v, float* out) { *out = v; }
inline void narrow(float v, uint16_t* out) {
  uint32_t bits;
  std::memcpy(&bits, &v, sizeof(bits));
  if ((bits & 0x7fffffffu) > 0x7f800000u) {
    *out = static_cast<uint16_t>((bits >> 16) | 0x40);
    return;
  }
  bits += 0x7fffu + ((bits >> 16) & 1u);
  *out = static_cast<uint16_t>(bits >> 16);
}

// A dot product over n elements in one fixed order: 8 lanes over the elements, then one
// fixed tree. The portable paths' reduction (attention's scores, RMSNorm's sum of squares):
// the same bits for the same inputs whatever else the call holds.
template <class A, class B>
float ordered_dot(const A* a, const B* b, int64_t n) {
  float lanes[8] = {};
  int64_t i = 0;
  for (; i + 8 <= n; i += 8)
    for (int l = 0; l < 8; ++l) lanes[l] += widen(a[i + l]) * widen(b[i + l]);
  for (int l = 0; i + l < n; ++l) lanes[l] += widen(a[i + l]) * widen(b[i + l]);
  return ((lanes[0] + lanes[4]) + (lanes[2] + lanes[6])) + ((lanes[1] + lanes[5]) + (lanes[3] + lanes[7]));
}

#ifdef RESPS_X86
// 16 floats from f32 or bf16 (widened exactly) memory.
template <class T>
RESPS_AVX512 __attribute__((always_inline)) inline __m512 load16(const T* base) {
  if constexpr (std::is_same_v<T, uint16_t>) {
    __m256i half = _mm256_loadu_si256(reinterpret_cast<const __m256i*>(base));
    return _mm512_castsi512_ps(_mm512_slli_epi32(_mm512_cvtepu16_epi32(half), 16));
  } else {
    return _mm512_loadu_ps(base);
  }
}
#endif

// Runs work(c) for c in [0, chunks) on the calling thread and up to threads - 1 tasks on
// XLA's intra-op pool. It never waits on a task that has not started: the caller and the
// tasks claim chunks from one counter, and the caller waits only for chunks a running
// thread has claimed; a task that starts after the work is gone returns at once (the
// shared state outlives this call). Which thread runs a chunk never changes its result.
template <class Work>
void parallel_chunks(xla::ffi::ThreadPool& pool, int64_t chunks, int64_t threads, Work work) {
  threads = std::min<int64_t>(threads, std::min<int64_t>(chunks, std::max<int64_t>(1, pool.num_threads())));
  if (threads <= 1) {
    for (int64_t c = 0; c < chunks; ++c) work(c);
    return;
  }
  struct Shared {
    Work work;
    int64_t chunks;
    std::atomic<int64_t> next{0}, finished{0};
    Shared(Work w, int64_t n) : work(std::move(w)), chunks(n) {}
    void run() {
      for (int64_t c; (c = next.fetch_add(1, std::memory_order_relaxed)) < chunks;) {
        work(c);
        finished.fetch_add(1, std::memory_order_release);
      }
    }
  };
  auto shared = std::make_shared<Shared>(std::move(work), chunks);
  for (int64_t t = 1; t < threads; ++t) pool.Schedule([shared] { shared->run(); });
  shared->run();
  while (shared->finished.load(std::memory_order_acquire) < chunks) {
#if defined(__x86_64__) || defined(_M_X64)
    _mm_pause();
#else
    std::this_thread::yield();
#endif
  }
}

}  // namespace resps

// The FFI handlers (symbols registered with XLA by the Python side).
XLA_FFI_DECLARE_HANDLER_SYMBOL(ResPSMatmul);
XLA_FFI_DECLARE_HANDLER_SYMBOL(ResPSAttention);
XLA_FFI_DECLARE_HANDLER_SYMBOL(ResPSRmsNorm);
