# BLAS::BLAS for llm_utils, preferring OpenBLAS built with OpenMP, so that the projections'
# GEMMs and the fused kernels share one thread pool (libgomp's). With Debian's default OpenBLAS
# (pthreads) the two pools take turns on the same cores, and each one's idle threads spin or
# sched_yield while the other works: SelfAttention_Linear forward+backward at N = 4096 on two
# cores measured 480-550 ms with it and 400-430 ms with the OpenMP build (docs/benchmarks.md).
#
# Debian installs the OpenMP build beside the default one (libopenblas-openmp-dev), in its own
# directory. Both carry the soname libopenblas.so.0, so whatever links it gets a RUNPATH to that
# directory; in a process that already loaded the other build (a Python session that imported
# torch first) the loader reuses that one, which works the same, with two pools.
# Set LLM_UTILS_OPENBLAS_OPENMP=OFF to take whatever find_package(BLAS) finds instead.
include_guard(GLOBAL)
option(LLM_UTILS_OPENBLAS_OPENMP "Link the OpenMP build of OpenBLAS when it is installed" ON)
if(TARGET BLAS::BLAS)
  return()
endif()
if(LLM_UTILS_OPENBLAS_OPENMP)
  find_library(LLM_UTILS_OPENBLAS_OPENMP_LIBRARY openblas
    PATHS /usr/lib/${CMAKE_LIBRARY_ARCHITECTURE}/openblas-openmp NO_DEFAULT_PATH)
endif()
if(LLM_UTILS_OPENBLAS_OPENMP AND LLM_UTILS_OPENBLAS_OPENMP_LIBRARY)
  get_filename_component(_llm_utils_openblas_dir "${LLM_UTILS_OPENBLAS_OPENMP_LIBRARY}" DIRECTORY)
  add_library(BLAS::BLAS INTERFACE IMPORTED)
  set_target_properties(BLAS::BLAS PROPERTIES
    INTERFACE_LINK_LIBRARIES "${LLM_UTILS_OPENBLAS_OPENMP_LIBRARY}"
    INTERFACE_LINK_OPTIONS "LINKER:-rpath,${_llm_utils_openblas_dir}")
  set(LLM_UTILS_BLAS_DESCRIPTION "OpenBLAS (OpenMP) ${LLM_UTILS_OPENBLAS_OPENMP_LIBRARY}")
else()
  find_package(BLAS REQUIRED)
  set(LLM_UTILS_BLAS_DESCRIPTION "${BLAS_LIBRARIES} (a second thread pool beside OpenMP's)")
endif()
message(STATUS "llm_utils BLAS: ${LLM_UTILS_BLAS_DESCRIPTION}")
