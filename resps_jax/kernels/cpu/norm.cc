// RMSNorm over the last axis, y = w * x / sqrt(mean(x^2) + eps), one row at a time.
//
// Why a kernel: XLA:CPU's row reduction changes its vectorisation with the number of rows
// (measured: the mean of squares of a 576-wide row differs in the last bit between 1-7
// rows and 8 or more), so a prefix's hidden state differed between a 1-token decode and an
// 8-token verification. Here every row's sum of squares runs in one fixed order (8 lanes
// over the row, then one fixed tree), whatever M is. Plain C++ compiled with
// -ffp-contract=off: the same bits on every path and compiler.

#include <cmath>
#include <cstdint>
#include <cstring>

#include "kernels.h"
#include "xla/ffi/api/ffi.h"

namespace ffi = xla::ffi;

namespace resps {

namespace {

template <class T, class W>
void rms_rows(const T* x, const W* w, T* y, int64_t m, int64_t e, float eps) {
  for (int64_t row = 0; row < m; ++row) {
    const T* xr = x + row * e;
    const float sum = ordered_dot(xr, xr, e);
    const float inv = 1.0f / std::sqrt(sum / static_cast<float>(e) + eps);
    for (int64_t j = 0; j < e; ++j) narrow(widen(w[j]) * (widen(xr[j]) * inv), &y[row * e + j]);
  }
}

}  // namespace

ffi::Error RmsNormImpl(ffi::AnyBuffer x, ffi::AnyBuffer w, ffi::Result<ffi::AnyBuffer> y, float eps) {
  auto xd = x.dimensions();
  if (xd.size() != 2 || w.element_count() != static_cast<size_t>(xd[1]) || y->element_type() != x.element_type()) {
    return ffi::Error::InvalidArgument("resps_rms_norm: x [M, E], w [E], y [M, E] like x expected");
  }
  const int64_t m = xd[0], e = xd[1];
  const bool xb = x.element_type() == ffi::DataType::BF16, wb = w.element_type() == ffi::DataType::BF16;
  if ((!xb && x.element_type() != ffi::DataType::F32) || (!wb && w.element_type() != ffi::DataType::F32)) {
    return ffi::Error::InvalidArgument("resps_rms_norm: float32 or bfloat16 expected");
  }
  void* out = y->untyped_data();
  if (xb && wb) {
    rms_rows(static_cast<const uint16_t*>(x.untyped_data()), static_cast<const uint16_t*>(w.untyped_data()),
             static_cast<uint16_t*>(out), m, e, eps);
  } else if (xb) {
    rms_rows(static_cast<const uint16_t*>(x.untyped_data()), static_cast<const float*>(w.untyped_data()),
             static_cast<uint16_t*>(out), m, e, eps);
  } else if (wb) {
    rms_rows(static_cast<const float*>(x.untyped_data()), static_cast<const uint16_t*>(w.untyped_data()),
             static_cast<float*>(out), m, e, eps);
  } else {
    rms_rows(static_cast<const float*>(x.untyped_data()), static_cast<const float*>(w.untyped_data()),
             static_cast<float*>(out), m, e, eps);
  }
  return ffi::Error::Success();
}

}  // namespace resps

XLA_FFI_DEFINE_HANDLER_SYMBOL(ResPSRmsNorm, resps::RmsNormImpl,
                              xla::ffi::Ffi::Bind()
                                  .Arg<xla::ffi::AnyBuffer>()  // x [M, E]
                                  .Arg<xla::ffi::AnyBuffer>()  // w [E]
                                  .Ret<xla::ffi::AnyBuffer>()  // y [M, E]
                                  .Attr<float>("eps"));
