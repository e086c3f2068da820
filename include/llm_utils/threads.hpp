#pragma once
/// \file threads.hpp
/// How many threads the library's compute may use: the fused attention kernels (OpenMP) and
/// the projection GEMMs (OpenBLAS) each get this many, and never run at the same time. Default:
/// the available cores (OMP_NUM_THREADS, when set, decides the default as usual).
/// Process-wide, threads started later included: set it before or between computations. With
/// several threads computing at once, keep (threads computing) x n at most the cores.

namespace llm_utils {

/// n >= 1; throws ArgumentError otherwise.
void set_num_threads(int n);
int get_num_threads();

}  // namespace llm_utils
