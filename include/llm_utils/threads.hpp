#pragma once
/// \file threads.hpp
/// How many threads the library's compute may use. Today that is the BLAS GEMMs (OpenBLAS's
/// own pool); the fused kernels will share the same setting. Default: the available cores.
/// Process-wide: set it from one thread, before or between computations.

namespace llm_utils {

/// n >= 1; throws ArgumentError otherwise.
void set_num_threads(int n);
int get_num_threads();

}  // namespace llm_utils
