// Shared declarations of the CPU kernels: which instruction-set path runs, chosen at run
// time from the CPU's features so one binary runs on any x86-64 (and the portable path
// on any other CPU).
#pragma once

#include <algorithm>
#include <atomic>
#include <cstdint>
#include <memory>
#include <thread>

#if defined(__x86_64__) || defined(_M_X64)
#include <immintrin.h>
#endif

#include "xla/ffi/api/ffi.h"

namespace resps {

enum class Path : int64_t { kAuto = -1, kPortable = 0, kAvx2 = 1, kAvx512 = 2 };

// The best path this CPU supports.
Path best_path();

// A requested path (an FFI attribute: -1 auto, 0 portable, 1 AVX2+FMA, 2 AVX-512), capped
// at what the CPU supports, so a request never runs instructions the CPU lacks.
Path resolve_path(int64_t requested);

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
