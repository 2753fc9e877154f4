// The Python extension module `resps_jax.kernels._cpu`: hands the FFI handlers to Python
// as capsules (registered there with jax.ffi.register_ffi_target) and reports the CPU's
// best instruction-set path. Plain CPython API: the module is tiny and needs no binding
// library at build time.
#define PY_SSIZE_T_CLEAN
#include <Python.h>

#include "kernels.h"

namespace resps {

Path best_path() {
#if defined(__x86_64__) || defined(_M_X64)
  __builtin_cpu_init();
  if (__builtin_cpu_supports("avx512f") && __builtin_cpu_supports("avx512bw") &&
      __builtin_cpu_supports("avx512vl")) {
    return Path::kAvx512;
  }
  if (__builtin_cpu_supports("avx2") && __builtin_cpu_supports("fma")) return Path::kAvx2;
#endif
  return Path::kPortable;
}

Path resolve_path(int64_t requested) {
  static const Path best = best_path();
  if (requested < 0 || requested > static_cast<int64_t>(best)) return best;
  return static_cast<Path>(requested);
}

}  // namespace resps

namespace {

PyObject* handlers(PyObject*, PyObject*) {
  PyObject* out = PyDict_New();
  if (out == nullptr) return nullptr;
  struct Entry {
    const char* name;
    void* fn;
  };
  const Entry entries[] = {
      {"resps_matmul", reinterpret_cast<void*>(ResPSMatmul)},
      {"resps_attention", reinterpret_cast<void*>(ResPSAttention)},
      {"resps_rms_norm", reinterpret_cast<void*>(ResPSRmsNorm)},
  };
  for (const Entry& entry : entries) {
    PyObject* capsule = PyCapsule_New(entry.fn, nullptr, nullptr);
    if (capsule == nullptr || PyDict_SetItemString(out, entry.name, capsule) != 0) {
      Py_XDECREF(capsule);
      Py_DECREF(out);
      return nullptr;
    }
    Py_DECREF(capsule);
  }
  return out;
}

PyObject* best_path_py(PyObject*, PyObject*) {
  return PyLong_FromLongLong(static_cast<long long>(resps::best_path()));
}

PyMethodDef methods[] = {
    {"handlers", handlers, METH_NOARGS, "FFI handler capsules by target name."},
    {"best_path", best_path_py, METH_NOARGS, "Best path on this CPU: 0 portable, 1 AVX2+FMA, 2 AVX-512."},
    {nullptr, nullptr, 0, nullptr},
};

PyModuleDef module = {PyModuleDef_HEAD_INIT, "_cpu", "resps-jax CPU kernels (XLA FFI handlers).", -1, methods};

}  // namespace

PyMODINIT_FUNC PyInit__cpu() { return PyModule_Create(&module); }
