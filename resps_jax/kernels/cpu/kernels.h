// Shared declarations of the CPU kernels: which instruction-set path runs, chosen at run
// time from the CPU's features so one binary runs on any x86-64 (and the portable path
// on any other CPU).
#pragma once

#include <cstdint>

#include "xla/ffi/api/ffi.h"

namespace resps {

enum class Path : int64_t { kAuto = -1, kPortable = 0, kAvx2 = 1, kAvx512 = 2 };

// The best path this CPU supports.
Path best_path();

// A requested path (an FFI attribute: -1 auto, 0 portable, 1 AVX2+FMA, 2 AVX-512), capped
// at what the CPU supports, so a request never runs instructions the CPU lacks.
Path resolve_path(int64_t requested);

}  // namespace resps

// The FFI handlers (symbols registered with XLA by the Python side).
XLA_FFI_DECLARE_HANDLER_SYMBOL(ResPSMatmul);
XLA_FFI_DECLARE_HANDLER_SYMBOL(ResPSAttention);
XLA_FFI_DECLARE_HANDLER_SYMBOL(ResPSRmsNorm);
