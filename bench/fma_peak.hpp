#pragma once
// The machine's FP32 arithmetic peak, measured rather than looked up: the same binary runs on
// CPUs from 1 to 2+ vector FMAs per cycle at clocks no table knows (a VM reports its host's
// model loosely), so benchmarks state their GFLOP/s against this figure from the same run.

namespace llm_utils::bench {

/// GFLOP/s of `threads` threads each issuing independent FMAs from registers (no memory
/// traffic) with the widest vectors this CPU runs: AVX-512, else AVX2 + FMA (AVX2 too when
/// LLM_UTILS_ISA=avx2 forced the kernels onto 256-bit vectors). 0 on a CPU with neither.
/// Takes ~0.2 s.
double fma_peak_gflops(int threads);

/// Which loop fma_peak_gflops runs: "avx512", "avx2" or "none".
const char* fma_peak_isa();

/// GFLOP/s of `threads` threads issuing independent bfloat16 dot products from registers (a
/// multiply-add counted as 2 operations) with the instruction the kernels' GEMMs use: tdpbf16ps
/// when the kernels run the amx table, else vdpbf16ps. 0 without AVX512_BF16.
double bf16_peak_gflops(int threads);

/// Which loop bf16_peak_gflops runs: "amx", "avx512_bf16" or "none".
const char* bf16_peak_isa();

// The loops, one per ISA in its own translation unit (compiled for that ISA): `iterations`
// rounds of independent FMAs; returns the floating-point operations done (a multiply-add is 2)
// and writes a value that depends on every accumulator to `sink`, so nothing is optimised away.
double fma_loop_avx2(long long iterations, float* sink);
double fma_loop_avx512(long long iterations, float* sink);
double dpbf16_loop_avx512(long long iterations, float* sink);
double dpbf16_loop_amx(long long iterations, float* sink);

}  // namespace llm_utils::bench
