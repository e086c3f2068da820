// The same plain C++ as the portable table, compiled with -mavx2 -mfma (see CMakeLists.txt).
#define LLM_UTILS_GENERIC_NAMESPACE avx2_impl
#define LLM_UTILS_GENERIC_ISA Isa::avx2
#define LLM_UTILS_GENERIC_TABLE avx2_microkernels
#include "cpu/microkernels_generic.inc"
