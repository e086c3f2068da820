#pragma once
// Which CBLAS the library calls, for benchmarks and bug reports.

#include <string>

namespace llm_utils::blas {

/// "OpenBLAS 0.3.21 (Haswell kernels)" for OpenBLAS (whose DYNAMIC_ARCH builds choose their
/// kernels at load time, or as OPENBLAS_CORETYPE says), else "a CBLAS other than OpenBLAS".
std::string description();

}  // namespace llm_utils::blas
