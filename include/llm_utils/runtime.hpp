#pragma once
/// \file runtime.hpp
/// What the library runs on, for benchmarks and bug reports.

#include <cstddef>
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

/// The fused kernels keep the buffers of a call (packed K and V, the backward's dQ partials:
/// about 1 MiB and 6 MiB at N = 4096, d = 64) for the calling thread's next call, up to 64 MiB
/// per thread, so that a call does not map and fault fresh pages each time. This gives the
/// calling thread's cached buffers back to the system; the next call allocates again.
void release_cached_memory() noexcept;

/// The bytes the calling thread's kernel buffer cache holds now.
std::size_t cached_memory_bytes() noexcept;

}  // namespace llm_utils
