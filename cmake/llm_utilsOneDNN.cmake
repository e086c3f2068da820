# oneDNN (Debian's libdnnl-dev) for the fast path's GEMMs: the projections and out_proj.
# Its JIT SGEMM picks its kernels from the CPU's features (AVX-512 on AMD Zen 4/5 as on Intel),
# where Debian 12's OpenBLAS runs AVX2 kernels there (or whatever OPENBLAS_CORETYPE says):
# 406 against 216 GFLOP/s on a 2048^3 SGEMM, 2 threads, Zen 5 (docs/benchmarks.md). It runs on
# OpenMP, the fused kernels' pool. The reference kernels keep OpenBLAS, PyTorch's own BLAS here.
#
# Found by header and library, not by dnnl-config.cmake, which asks for OpenCL headers
# (Debian builds oneDNN with its OpenCL GPU runtime, which the CPU path never touches).
# LLM_UTILS_ONEDNN=OFF (the sanitizer builds, whose Clang OpenMP runtime would meet oneDNN's
# libgomp) takes OpenBLAS for every GEMM.
include_guard(GLOBAL)
option(LLM_UTILS_ONEDNN "Run the fast path's GEMMs on oneDNN (libdnnl) when it is installed" ON)
if(TARGET llm_utils::onednn)
  return()
endif()
set(LLM_UTILS_HAVE_ONEDNN OFF)
if(LLM_UTILS_ONEDNN)
  find_path(LLM_UTILS_ONEDNN_INCLUDE_DIR oneapi/dnnl/dnnl.h)
  find_library(LLM_UTILS_ONEDNN_LIBRARY dnnl)
  if(LLM_UTILS_ONEDNN_INCLUDE_DIR AND LLM_UTILS_ONEDNN_LIBRARY)
    add_library(llm_utils::onednn INTERFACE IMPORTED)
    set_target_properties(llm_utils::onednn PROPERTIES
      INTERFACE_INCLUDE_DIRECTORIES "${LLM_UTILS_ONEDNN_INCLUDE_DIR}"
      INTERFACE_LINK_LIBRARIES "${LLM_UTILS_ONEDNN_LIBRARY}")
    set(LLM_UTILS_HAVE_ONEDNN ON)
    message(STATUS "llm_utils GEMM: oneDNN ${LLM_UTILS_ONEDNN_LIBRARY}")
  else()
    message(STATUS "llm_utils GEMM: oneDNN not found (libdnnl-dev); OpenBLAS runs every GEMM")
  endif()
else()
  message(STATUS "llm_utils GEMM: OpenBLAS (LLM_UTILS_ONEDNN=OFF)")
endif()
