#pragma once
/// \file runtime.hpp
/// What the library runs on, for benchmarks and bug reports.

#include <string>

namespace llm_utils {

/// The GEMMs behind the projections (oneDNN's SGEMM when the build found it, which picks its
/// kernels from the CPU's features) and behind the reference kernels (OpenBLAS, PyTorch's BLAS
/// in Debian, whose kernels follow its own CPU detection or OPENBLAS_CORETYPE), e.g. "oneDNN
/// 2.6.3 SGEMM for the projections; OpenBLAS 0.3.21 (Haswell kernels) for the reference".
std::string blas_description();

/// The SIMD tables the fused kernels use: "avx512_bf16", "avx512", "avx2" or "portable"
/// (the environment variable LLM_UTILS_ISA may force one below the best the CPU has).
std::string kernel_isa();

}  // namespace llm_utils
