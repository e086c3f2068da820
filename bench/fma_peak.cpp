#include "fma_peak.hpp"

#include <omp.h>

#include <chrono>
#include <string>

#include "llm_utils/runtime.hpp"

namespace llm_utils::bench {
namespace {

bool has_avx512() {
  return __builtin_cpu_supports("avx512f");
}
bool has_avx2() {
  return __builtin_cpu_supports("avx2") && __builtin_cpu_supports("fma");
}

// The best of three runs of `loop` on `threads` threads, in GFLOP/s.
double loop_peak(double (*loop)(long long, float*), int threads) {
  constexpr long long kIterations = 20'000'000;  // 0.04 s (Zen 4) to 0.1 s (Zen 1) per run
  double best = 0.0;
  for (int run = 0; run < 3; ++run) {  // the best of three: the peak, not an average
    double flops = 0.0;
    float sinks[256] = {};
    const auto start = std::chrono::steady_clock::now();
#pragma omp parallel num_threads(threads) reduction(+ : flops)
    flops += loop(kIterations, &sinks[omp_get_thread_num() % 256]);
    const double seconds =
        std::chrono::duration<double>(std::chrono::steady_clock::now() - start).count();
    volatile float keep = sinks[0];
    (void)keep;
    if (seconds > 0.0 && flops / seconds > best) best = flops / seconds;
  }
  return best * 1e-9;
}

}  // namespace

// The FMA width of the kernels' ISA: AVX2's when LLM_UTILS_ISA forced the avx2 table on an
// AVX-512 CPU (its peak is then the 256-bit one), else the widest the CPU has.
bool measure_avx512() {
  return has_avx512() && llm_utils::kernel_isa() != "avx2";
}

const char* fma_peak_isa() {
  if (measure_avx512()) return "avx512";
  if (has_avx2()) return "avx2";
  return "none";
}

double fma_peak_gflops(int threads) {
  if (!has_avx512() && !has_avx2()) return 0.0;
  return loop_peak(measure_avx512() ? fma_loop_avx512 : fma_loop_avx2, threads);
}

const char* bf16_peak_isa() {
  // kernel_isa() is amx only where the CPU has AMX-BF16 and Linux granted the tile state.
  if (llm_utils::kernel_isa() == "amx") return "amx";
  if (has_avx512() && __builtin_cpu_supports("avx512bf16")) return "avx512_bf16";
  return "none";
}

double bf16_peak_gflops(int threads) {
  const std::string isa = bf16_peak_isa();
  if (isa == "amx") return loop_peak(dpbf16_loop_amx, threads);
  if (isa == "avx512_bf16") return loop_peak(dpbf16_loop_avx512, threads);
  return 0.0;
}

}  // namespace llm_utils::bench
