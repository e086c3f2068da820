// The portable microkernels: baseline x86-64 (SSE2) code, for CPUs without AVX2.
#define LLM_UTILS_GENERIC_NAMESPACE portable_impl
#define LLM_UTILS_GENERIC_ISA Isa::portable
#define LLM_UTILS_GENERIC_TABLE portable_microkernels
#include "cpu/microkernels_generic.inc"
