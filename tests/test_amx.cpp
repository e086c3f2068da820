// The AMX bfloat16 GEMM (src/cpu/amx_gemm.hpp): its blocking over emulated tiles
// (amx_emulator.hpp) bit for bit against a scalar model of the emulated instruction, on any CPU;
// every bfloat16 table's GEMM, the hardware AMX one included where the CPU has it, within the
// error bound of a float32 sum in any order; and the ISA's name and refusal.

#include <gtest/gtest.h>

#include <algorithm>
#include <cmath>
#include <limits>
#include <stdexcept>
#include <string>
#include <vector>

#include "amx_emulator.hpp"
#include "cpu/amx_gemm.hpp"
#include "cpu/bf16_microkernels.hpp"
#include "kernel_test_util.hpp"

namespace llm_utils {
namespace {

// One GEMM problem with every leading dimension padded, operands in exactly sized vectors (so
// AddressSanitizer catches a tile read past them), B's last pair row's second elements zero for
// odd k (the pairs layout's rule).
struct Problem {
  int64_t m, n, k, lda, ldb, ldc;
  std::vector<bfloat16> a, b;

  Problem(int64_t m_, int64_t n_, int64_t k_, uint32_t seed)
      : m(m_), n(n_), k(k_), lda(k_ + 3), ldb(2 * n_ + 6), ldc(n_ + 5) {
    a = testing::normal_bf16(m * lda, seed);
    b = testing::normal_bf16(((k + 1) / 2) * ldb, seed + 1);
    if (k % 2 == 1) {
      for (int64_t j = 0; j < n; ++j) b[(k / 2) * ldb + 2 * j + 1] = bfloat16();
    }
  }
  float a_at(int64_t i, int64_t p) const { return static_cast<float>(a[i * lda + p]); }
  float b_at(int64_t p, int64_t j) const {
    return static_cast<float>(b[(p / 2) * ldb + 2 * j + p % 2]);
  }
};

// What the emulated tiles compute (the SDM's tdpbf16ps): per element, from zero, k in chunks of
// 32 (one instruction each); in a chunk the pairs' first products and their second products
// summed apart, each from zero by fused multiply-adds, then the two sums added, then that added
// to the element; then alpha.
std::vector<float> emulated_tiles_model(const Problem& pr, float alpha) {
  std::vector<float> c(static_cast<size_t>(pr.m * pr.n));
  for (int64_t i = 0; i < pr.m; ++i) {
    for (int64_t j = 0; j < pr.n; ++j) {
      float acc = 0.0f;
      for (int64_t k0 = 0; k0 < pr.k; k0 += 32) {
        float first = 0.0f, second = 0.0f;
        for (int64_t p = k0; p < std::min(k0 + 32, pr.k); p += 2) {
          first = std::fma(pr.a_at(i, p), pr.b_at(p, j), first);
          if (p + 1 < pr.k) second = std::fma(pr.a_at(i, p + 1), pr.b_at(p + 1, j), second);
        }
        acc += first + second;
      }
      c[i * pr.n + j] = alpha == 1.0f ? acc : alpha * acc;
    }
  }
  return c;
}

constexpr float kUntouched = -12345.0f;  // C's padding columns, which no GEMM may write

TEST(AmxGemm, EmulatedTilesGiveTheModelsBitsAtEveryEdge) {
  const int64_t before = testing::EmulatedTiles::dots_run();
  for (int64_t m : {1, 15, 16, 17, 32, 33, 64, 70}) {
    for (int64_t n : {1, 9, 16, 17, 31, 32, 33, 64}) {
      for (int64_t k : {1, 2, 7, 31, 32, 33, 64, 65, 96}) {
        SCOPED_TRACE(std::to_string(m) + "x" + std::to_string(n) + "x" + std::to_string(k));
        const Problem pr(m, n, k, static_cast<uint32_t>(m * 10007 + n * 101 + k));
        for (float alpha : {1.0f, 0.5f}) {
          SCOPED_TRACE("alpha " + std::to_string(alpha));
          const std::vector<float> want = emulated_tiles_model(pr, alpha);
          std::vector<float> c(static_cast<size_t>(m * pr.ldc), kUntouched);
          for (int64_t i = 0; i < m; ++i) {
            for (int64_t j = 0; j < n; ++j) c[i * pr.ldc + j] = 3.0f;  // overwritten
          }
          cpu::amx::gemm<testing::EmulatedTiles>(m, n, k, alpha, pr.a.data(), pr.lda, pr.b.data(),
                                                 pr.ldb, c.data(), pr.ldc, false);
          for (int64_t i = 0; i < m; ++i) {
            for (int64_t j = 0; j < n; ++j) ASSERT_EQ(c[i * pr.ldc + j], want[i * n + j]) << i;
            for (int64_t j = n; j < pr.ldc; ++j) ASSERT_EQ(c[i * pr.ldc + j], kUntouched) << i;
          }
          cpu::amx::gemm<testing::EmulatedTiles>(m, n, k, alpha, pr.a.data(), pr.lda, pr.b.data(),
                                                 pr.ldb, c.data(), pr.ldc, true);
          for (int64_t i = 0; i < m; ++i) {
            for (int64_t j = 0; j < n; ++j) {
              ASSERT_EQ(c[i * pr.ldc + j], want[i * n + j] + want[i * n + j]) << i;
            }
          }
        }
      }
    }
  }
  EXPECT_GT(testing::EmulatedTiles::dots_run(), before);
}

TEST(AmxGemm, EmptyProblemsLeaveCOrClearIt) {
  const Problem pr(3, 4, 2, 7);
  std::vector<float> c(static_cast<size_t>(3 * pr.ldc), 2.0f);
  cpu::amx::gemm<testing::EmulatedTiles>(0, 4, 2, 1.0f, pr.a.data(), pr.lda, pr.b.data(), pr.ldb,
                                         c.data(), pr.ldc, false);
  cpu::amx::gemm<testing::EmulatedTiles>(3, 0, 2, 1.0f, pr.a.data(), pr.lda, pr.b.data(), pr.ldb,
                                         c.data(), pr.ldc, false);
  for (float x : c) ASSERT_EQ(x, 2.0f);
  // k = 0: the sums are zero, so C becomes 0 (or stays, accumulating).
  cpu::amx::gemm<testing::EmulatedTiles>(3, 4, 0, 1.0f, pr.a.data(), pr.lda, pr.b.data(), pr.ldb,
                                         c.data(), pr.ldc, true);
  EXPECT_EQ(c[0], 2.0f);
  cpu::amx::gemm<testing::EmulatedTiles>(3, 4, 0, 1.0f, pr.a.data(), pr.lda, pr.b.data(), pr.ldb,
                                         c.data(), pr.ldc, false);
  for (int64_t i = 0; i < 3; ++i) {
    for (int64_t j = 0; j < 4; ++j) ASSERT_EQ(c[i * pr.ldc + j], 0.0f);
    ASSERT_EQ(c[i * pr.ldc + 4], 2.0f);
  }
}

// The emulator refuses what the hardware would fault on, so the blocking cannot lean on it.
TEST(AmxGemm, EmulatorRefusesTilesWithoutAConfiguration) {
  testing::EmulatedTiles::release();
  float buffer[16 * 16] = {};
  EXPECT_THROW(testing::EmulatedTiles::load<0>(buffer, 64), std::logic_error);
  EXPECT_THROW((testing::EmulatedTiles::dot<0, 4, 6>()), std::logic_error);
  testing::EmulatedTiles::configure();
  testing::EmulatedTiles::store<0>(buffer, 64);  // configured: a zeroed tile
  EXPECT_EQ(buffer[0], 0.0f);
  testing::EmulatedTiles::release();
  EXPECT_THROW(testing::EmulatedTiles::store<0>(buffer, 64), std::logic_error);
}

// Every bfloat16 table this CPU runs (amx's hardware tiles where the CPU has them) against the
// exact sum: a float32 sum of k exact products in any order is within k * 2^-24 * sum |a_p b_p|
// of it (the recursive-summation bound, first order; the products are normal here).
TEST(AmxGemm, EveryTableIsWithinTheSummationBound) {
  testing::KernelEnvironment restore;
  for (cpu::Isa isa : testing::available_bf16_isas()) {
    SCOPED_TRACE(cpu::isa_name(isa));
    cpu::force_isa(isa);
    const cpu::Bf16Microkernels& mk = cpu::bf16_microkernels();
    for (int64_t m : {1, 17, 64}) {
      for (int64_t n : {1, 33, 64}) {
        for (int64_t k : {1, 33, 64, 257}) {
          SCOPED_TRACE(std::to_string(m) + "x" + std::to_string(n) + "x" + std::to_string(k));
          const Problem pr(m, n, k, static_cast<uint32_t>(m + n + k));
          std::vector<float> c(static_cast<size_t>(m * pr.ldc), kUntouched);
          mk.gemm(m, n, k, 1.0f, pr.a.data(), pr.lda, pr.b.data(), pr.ldb, c.data(), pr.ldc, false);
          for (int64_t i = 0; i < m; ++i) {
            for (int64_t j = 0; j < n; ++j) {
              double exact = 0.0, magnitude = 0.0;
              for (int64_t p = 0; p < k; ++p) {
                const double product = static_cast<double>(pr.a_at(i, p)) * pr.b_at(p, j);
                exact += product;
                magnitude += std::fabs(product);
              }
              const double bound = static_cast<double>(k) * std::ldexp(magnitude, -24);
              ASSERT_LE(std::fabs(c[i * pr.ldc + j] - exact), bound) << i << "," << j;
            }
            for (int64_t j = n; j < pr.ldc; ++j) ASSERT_EQ(c[i * pr.ldc + j], kUntouched);
          }
        }
      }
    }
  }
}

TEST(AmxGemm, TheIsaIsNamedAndRefusedWhereTheCpuLacksIt) {
  EXPECT_STREQ(cpu::isa_name(cpu::Isa::amx), "amx");
  EXPECT_EQ(cpu::parse_isa("amx"), cpu::Isa::amx);
  // Never chosen by itself until it has run on a CPU with AMX (microkernels.hpp).
  EXPECT_NE(cpu::detected_isa(), cpu::Isa::amx);
  if (!cpu::cpu_supports(cpu::Isa::amx)) {
    EXPECT_THROW(cpu::force_isa(cpu::Isa::amx), ArgumentError);
  } else {
    testing::KernelEnvironment restore;
    cpu::force_isa(cpu::Isa::amx);
    EXPECT_EQ(cpu::bf16_microkernels().isa, cpu::Isa::amx);
  }
}

}  // namespace
}  // namespace llm_utils
