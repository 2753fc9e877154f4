"""Builds the CPU kernels (C++ against XLA's FFI headers) when the package is installed.

Everything else about the package is in pyproject.toml. The headers come from jaxlib
(`jaxlib/include`, what `jax.ffi.include_dir()` returns), a build requirement. The
AVX-512 and AVX2 paths are compiled with per-function target attributes and chosen at
run time, so the binary runs on any x86-64; other CPUs get the portable path.
"""

from __future__ import annotations

import os
import sys

from setuptools import Extension, setup
from setuptools.command.build_ext import build_ext


def ffi_include_dir() -> str:
    import jaxlib

    return os.path.join(os.path.dirname(jaxlib.__file__), "include")


class BuildKernels(build_ext):
    """build_ext whose failure is one clear line: the package cannot run without its kernels."""

    def build_extension(self, ext):
        try:
            super().build_extension(ext)
        except Exception as failure:  # CompileError, LinkError, a missing compiler
            sys.stderr.write(
                f"error: resps-jax could not compile its C++ CPU kernels ({type(failure).__name__}: "
                f"{failure}); install a C++17 compiler (e.g. `apt-get install g++`) and retry\n"
            )
            raise SystemExit(1) from None


SOURCES = [
    "resps_jax/kernels/cpu/module.cc",
    "resps_jax/kernels/cpu/matmul.cc",
    "resps_jax/kernels/cpu/attention.cc",
    "resps_jax/kernels/cpu/norm.cc",
]

setup(
    ext_modules=[
        Extension(
            "resps_jax.kernels._cpu",
            sources=SOURCES,
            include_dirs=[ffi_include_dir(), "resps_jax/kernels/cpu"],
            depends=["resps_jax/kernels/cpu/kernels.h"],
            language="c++",
            # -ffp-contract=off: the portable path's a*b+c stays two roundings on every
            # compiler, so its results do not depend on what the optimiser fuses.
            extra_compile_args=["-std=c++17", "-O3", "-ffp-contract=off", "-fvisibility=hidden"],
        )
    ],
    cmdclass={"build_ext": BuildKernels},
)
