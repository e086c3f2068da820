// The AMX tile code on real AMX hardware, needing nothing but a compiler:
//
//   g++ -std=c++20 -O2 -mamx-tile -mamx-bf16 -Isrc -Iinclude -Itests
//       tests/amx/amx_hardware_check.cpp -o amx_hardware_check && ./amx_hardware_check
//
// (CMake builds it as amx_hardware_check; CTest runs it where /proc/cpuinfo lists AMX, and
// bench/cuda/device_check.sh runs it first on a device host that has AMX.) It checks what the
// emulator of tests/amx_emulator.hpp cannot: that src/cpu/amx_tiles.hpp's instructions do on
// the CPU what amx_gemm.hpp expects of them.
//   1. amx::gemm over the hardware tiles at every edge (m, n, k around 16 and 32, odd k, alpha,
//      accumulate, padded leading dimensions): within k 2^-24 sum |a_p b_p| of the exact sum,
//      nothing written outside C. A failure here is a bug; exit status 1.
//      And the backward's 1 x 1 dot bit for bit against the same element of a 64 x 64 tile.
//   2. Which order the hardware adds in: the bits against the SDM's pseudocode (the emulator's),
//      the Intrinsics Guide's and vdpbf16ps's. Reported, not required.
//   3. Speed on one thread: the tdpbf16ps peak from registers, amx::gemm on the fused kernels'
//      64 x 64 x 64 tiles, ldtilecfg + tilerelease alone (amx_gemm.hpp pays them per call), and
//      sttilecfg + a comparison (what a lazy configuration would pay instead).
// Exit status: 0 all bounds held, 1 a bound failed, 2 no AMX-BF16 on this CPU, 3 Linux refused
// the tile state.
//
// Built with -DLLM_UTILS_AMX_CHECK_ON_EMULATOR, it runs steps 1 and 2 with the emulator in the
// hardware's place, on any CPU: a check of this program (every bound holds, every sum has the
// emulator's bits), as CTest runs it where the CPU has no AMX.

#include <cpuid.h>
#include <sys/syscall.h>
#include <unistd.h>

#include <chrono>
#include <cmath>
#include <cstdint>
#include <cstdio>
#include <cstring>
#include <fstream>
#include <string>
#include <vector>

#include "amx_emulator.hpp"
#include "bf16_test_data.hpp"
#include "cpu/amx_gemm.hpp"
#include "cpu/amx_tiles.hpp"

namespace {

using llm_utils::bfloat16;
namespace amx = llm_utils::cpu::amx;
using llm_utils::testing::normal_bf16;
#ifdef LLM_UTILS_AMX_CHECK_ON_EMULATOR
using CheckedTiles = llm_utils::testing::EmulatedTiles;
#else
using CheckedTiles = amx::HardwareTiles;
#endif

std::string cpu_model() {
  std::ifstream in("/proc/cpuinfo");
  for (std::string line; std::getline(in, line);) {
    if (line.rfind("model name", 0) == 0) return line.substr(line.find(':') + 2);
  }
  return "unknown";
}

struct Tally {
  long checked = 0, bound_failures = 0, outside_writes = 0, dot_checked = 0, dot_mismatches = 0;
  long same_as_emulator = 0, same_as_in_turn = 0, same_as_vdpbf16ps = 0, elements = 0;
};

// One element summed from zero with both products of each pair added to it in turn: the
// second first (vdpbf16ps's order, second_first), or the first first (the Intrinsics Guide's
// pseudocode of tdpbf16ps).
float pairs_in_turn(const std::vector<bfloat16>& a, int64_t lda, const std::vector<bfloat16>& b,
                    int64_t ldb, int64_t i, int64_t j, int64_t k, bool second_first) {
  float acc = 0.0f;
  for (int64_t p = 0; 2 * p < k; ++p) {
    const float first =
        static_cast<float>(a[i * lda + 2 * p]) * static_cast<float>(b[p * ldb + 2 * j]);
    const float second = 2 * p + 1 < k ? static_cast<float>(a[i * lda + 2 * p + 1]) *
                                             static_cast<float>(b[p * ldb + 2 * j + 1])
                                       : 0.0f;
    acc = second_first ? (acc + second) + first : (acc + first) + second;
  }
  return acc;
}

void check_shape(int64_t m, int64_t n, int64_t k, float alpha, bool accumulate, Tally& t) {
  const int64_t lda = k + 3, ldb = 2 * n + 6, ldc = n + 5;
  const std::vector<bfloat16> a = normal_bf16(m * lda, static_cast<uint32_t>(m * 7 + n * 3 + k));
  std::vector<bfloat16> b = normal_bf16(((k + 1) / 2) * ldb, static_cast<uint32_t>(m + n + k));
  if (k % 2 == 1) {
    for (int64_t j = 0; j < n; ++j) b[(k / 2) * ldb + 2 * j + 1] = bfloat16();
  }
  constexpr float kUntouched = -12345.0f;
  std::vector<float> hw(static_cast<size_t>(m * ldc), kUntouched), emu = hw;
  for (int64_t i = 0; i < m; ++i) {
    for (int64_t j = 0; j < n; ++j) hw[i * ldc + j] = emu[i * ldc + j] = 1.5f;
  }
  amx::gemm<CheckedTiles>(m, n, k, alpha, a.data(), lda, b.data(), ldb, hw.data(), ldc, accumulate);
  amx::gemm<llm_utils::testing::EmulatedTiles>(m, n, k, alpha, a.data(), lda, b.data(), ldb,
                                               emu.data(), ldc, accumulate);
  for (int64_t i = 0; i < m; ++i) {
    for (int64_t j = 0; j < ldc; ++j) {
      const float got = hw[i * ldc + j];
      if (j >= n) {
        t.outside_writes += got != kUntouched;
        continue;
      }
      double exact = 0.0, magnitude = 0.0;
      for (int64_t p = 0; p < k; ++p) {
        const double product = static_cast<double>(static_cast<float>(a[i * lda + p])) *
                               static_cast<float>(b[(p / 2) * ldb + 2 * j + p % 2]);
        exact += product;
        magnitude += std::fabs(product);
      }
      const double base = accumulate ? 1.5 : 0.0;
      const double bound =
          (static_cast<double>(k) + 2.0) * std::ldexp(magnitude, -24) * std::fabs(alpha) +
          std::ldexp(std::fabs(base) + std::fabs(alpha * exact), -23);
      ++t.checked;
      if (std::fabs(got - (base + alpha * exact)) > bound) {
        if (t.bound_failures++ < 5) {
          std::printf(
              "  BOUND FAILED %lldx%lldx%lld alpha %g acc %d at (%lld, %lld): %.9g vs "
              "%.9g\n",
              static_cast<long long>(m), static_cast<long long>(n), static_cast<long long>(k),
              alpha, accumulate, static_cast<long long>(i), static_cast<long long>(j), got,
              base + alpha * exact);
        }
      }
      if (alpha == 1.0f && !accumulate) {
        ++t.elements;
        t.same_as_emulator += got == emu[i * ldc + j];
        t.same_as_in_turn += got == pairs_in_turn(a, lda, b, ldb, i, j, k, false);
        t.same_as_vdpbf16ps += got == pairs_in_turn(a, lda, b, ldb, i, j, k, true);
      }
    }
  }
}

// The backward's D_i = dO_i . O_i is a 1 x 1 x k GEMM (B the pairs of one contiguous column,
// ldb 2, src/cpu/flash_operands.hpp dot) and must have exactly the bits of the same element of
// a 64 x 64 tile's GEMM (dP = dO V^T): where a row of P is one-hot the two cancel exactly.
void check_dot_matches_the_tile(int64_t k, Tally& t) {
  const int64_t m = 64, n = 64, ldb = 2 * n;
  const std::vector<bfloat16> a = normal_bf16(m * k, static_cast<uint32_t>(k));
  std::vector<bfloat16> b = normal_bf16(((k + 1) / 2) * ldb, static_cast<uint32_t>(k + 1));
  std::vector<float> c(static_cast<size_t>(m * n));
  amx::gemm<CheckedTiles>(m, n, k, 1.0f, a.data(), k, b.data(), ldb, c.data(), n, false);
  std::vector<bfloat16> column(static_cast<size_t>(k));  // (k / 2, 2) column j in pairs
  for (int64_t j = 0; j < n; j += 7) {
    for (int64_t p = 0; p < k; ++p) column[p] = b[(p / 2) * ldb + 2 * j + p % 2];
    for (int64_t i = 0; i < m; i += 5) {
      float d = 0.0f;
      amx::gemm<CheckedTiles>(1, 1, k, 1.0f, a.data() + i * k, k, column.data(), 2, &d, 1, false);
      ++t.dot_checked;
      if (std::memcmp(&d, &c[i * n + j], sizeof d) != 0 && t.dot_mismatches++ < 5) {
        std::printf("  DOT MISMATCH k %lld at (%lld, %lld): %.9g vs the tile's %.9g\n",
                    static_cast<long long>(k), static_cast<long long>(i), static_cast<long long>(j),
                    d, c[i * n + j]);
      }
    }
  }
}

#ifndef LLM_UTILS_AMX_CHECK_ON_EMULATOR
double seconds_since(std::chrono::steady_clock::time_point start) {
  return std::chrono::duration<double>(std::chrono::steady_clock::now() - start).count();
}

void report_speed() {
  // The tdpbf16ps peak: four independent chains from registers.
  using Tiles = amx::HardwareTiles;
  const long rounds = 2'000'000;
  auto start = std::chrono::steady_clock::now();
  const float sink = amx::dot_rounds_from_registers(rounds);
  const double peak = amx::kDotRoundFlops * rounds / seconds_since(start) * 1e-9;
  std::printf("tdpbf16ps peak, 1 thread: %.0f GFLOP/s (sink %g)\n", peak, sink);

  // amx::gemm on the fused kernels' tiles: 64 x 64 x 64, B in pairs (ldb 128), C float32.
  const std::vector<bfloat16> a = normal_bf16(64 * 64, 1), b = normal_bf16(32 * 128, 2);
  std::vector<float> c(64 * 64);
  const int calls = 200'000;
  start = std::chrono::steady_clock::now();
  for (int i = 0; i < calls; ++i) {
    amx::gemm<Tiles>(64, 64, 64, 1.0f, a.data(), 64, b.data(), 128, c.data(), 64, i % 2 == 1);
  }
  const double gemm = 2.0 * 64 * 64 * 64 * calls / seconds_since(start) * 1e-9;
  std::printf(
      "amx::gemm 64x64x64 (alternately accumulating), 1 thread: %.0f GFLOP/s = %.0f%% "
      "of the tdpbf16ps peak\n",
      gemm, 100.0 * gemm / peak);
  start = std::chrono::steady_clock::now();
  for (int i = 0; i < calls; ++i) {
    Tiles::configure();
    Tiles::release();
  }
  std::printf("ldtilecfg + tilerelease: %.1f ns a pair\n", seconds_since(start) / calls * 1e9);
  // The alternative a lazy configuration would pay per call (oneDNN's): sttilecfg and a 64-byte
  // comparison with the wanted configuration, ldtilecfg only when they differ.
  Tiles::configure();
  amx::TileConfig current, wanted;
  for (int i = 0; i < 8; ++i) {
    wanted.colsb[i] = 64;
    wanted.rows[i] = 16;
  }
  long differing = 0;
  start = std::chrono::steady_clock::now();
  for (int i = 0; i < calls; ++i) {
    asm volatile("{sttilecfg (%1)|sttilecfg [%1]}" : "=m"(current) : "r"(&current));
    differing += std::memcmp(&current, &wanted, sizeof current) != 0;
  }
  std::printf("sttilecfg + comparison: %.1f ns (%ld of %d differed)\n",
              seconds_since(start) / calls * 1e9, differing, calls);
  Tiles::release();
}

#endif  // LLM_UTILS_AMX_CHECK_ON_EMULATOR

}  // namespace

int main() {
#ifndef LLM_UTILS_AMX_CHECK_ON_EMULATOR
  unsigned eax = 0, ebx = 0, ecx = 0, edx = 0;
  const bool has_amx = __get_cpuid_count(7, 0, &eax, &ebx, &ecx, &edx) != 0 &&
                       (edx >> 24 & 1u) != 0 && (edx >> 22 & 1u) != 0;
  std::printf("CPU: %s; AMX-TILE and AMX-BF16: %s\n", cpu_model().c_str(), has_amx ? "yes" : "no");
  if (!has_amx) return 2;
  if (syscall(SYS_arch_prctl, 0x1023, 18) != 0) {
    std::printf("Linux refused the AMX tile state (arch_prctl ARCH_REQ_XCOMP_PERM)\n");
    return 3;
  }
#else
  std::printf("CPU: %s; the emulator in the hardware's place\n", cpu_model().c_str());
#endif
  Tally t;
  for (int64_t m : {1, 15, 16, 17, 32, 33, 64, 70}) {
    for (int64_t n : {1, 9, 16, 17, 31, 32, 33, 64}) {
      for (int64_t k : {1, 2, 7, 31, 32, 33, 64, 65, 96, 257}) {
        check_shape(m, n, k, 1.0f, false, t);
        check_shape(m, n, k, 0.5f, true, t);
      }
    }
  }
  for (int64_t k : {32, 64, 128}) check_dot_matches_the_tile(k, t);
  std::printf("bounds: %ld elements checked, %ld outside the bound, %ld writes outside C\n",
              t.checked, t.bound_failures, t.outside_writes);
  std::printf("1 x 1 dots against the 64 x 64 tile's elements: %ld checked, %ld not bit-equal\n",
              t.dot_checked, t.dot_mismatches);
  std::printf(
      "order: of %ld sums, %ld have the bits of the SDM's pseudocode (the emulator's: "
      "first and second products summed apart per 32 of k), %ld of the Intrinsics "
      "Guide's (each pair's products in turn, first first), %ld of vdpbf16ps's (second "
      "first)\n",
      t.elements, t.same_as_emulator, t.same_as_in_turn, t.same_as_vdpbf16ps);
#ifdef LLM_UTILS_AMX_CHECK_ON_EMULATOR
  // The emulator is the model of step 2: a sum without its bits is a bug of this program.
  const bool ok = t.bound_failures == 0 && t.outside_writes == 0 && t.checked > 0 &&
                  t.dot_mismatches == 0 && t.dot_checked > 0 && t.same_as_emulator == t.elements &&
                  t.elements > 0;
#else
  report_speed();
  const bool ok = t.bound_failures == 0 && t.outside_writes == 0 && t.checked > 0 &&
                  t.dot_mismatches == 0 && t.dot_checked > 0;
#endif
  std::printf("amx_hardware_check: %s\n", ok ? "PASS" : "FAIL");
  return ok ? 0 : 1;
}
