// The two GEMMs: kernels::gemm (the projections'; tiny products on the microkernels) and
// reference::gemm (the oracle's; tiny products in plain loops), every transpose and beta case
// against a double-precision sum, on both sides of the size below which each leaves OpenBLAS
// (m * n * k <= 4096), the microkernel path on every ISA.

#include <gtest/gtest.h>

#include <cmath>
#include <limits>
#include <tuple>
#include <vector>

#include "kernel_test_util.hpp"
#include "kernels/gemm.hpp"
#include "reference/plain_gemm.hpp"

namespace llm_utils {
namespace {

using detail::Trans;

using GemmFn = void (*)(Trans, Trans, int64_t, int64_t, int64_t, float, const float*, int64_t,
                        const float*, int64_t, float, float*, int64_t);

struct GemmCase {
  int64_t m, n, k;
  Trans ta, tb;
  float beta;
};

// C (m, n) = A (m, k) B (k, n) + beta C, with A and B stored transposed when asked and every
// leading dimension 3 past the data, in double.
void check(GemmFn gemm, const GemmCase& g, uint64_t seed) {
  Generator gen(seed);
  const int64_t a_rows = g.ta == Trans::yes ? g.k : g.m, a_cols = g.ta == Trans::yes ? g.m : g.k;
  const int64_t b_rows = g.tb == Trans::yes ? g.n : g.k, b_cols = g.tb == Trans::yes ? g.k : g.n;
  const int64_t lda = a_cols + 3, ldb = b_cols + 3, ldc = g.n + 3;
  const Tensor a = gen.uniform({a_rows, lda}, -1, 1), b = gen.uniform({b_rows, ldb}, -1, 1);
  Tensor c = gen.uniform({g.m, ldc}, -1, 1);
  if (g.beta == 0.0f) {  // beta = 0 ignores C, NaN included
    for (int64_t i = 0; i < c.numel(); ++i) c[i] = std::numeric_limits<float>::quiet_NaN();
  }
  const Tensor c_before = c;
  gemm(g.ta, g.tb, g.m, g.n, g.k, 1.0f, a.data(), lda, b.data(), ldb, g.beta, c.data(), ldc);
  for (int64_t i = 0; i < g.m; ++i) {
    for (int64_t j = 0; j < ldc; ++j) {
      if (j >= g.n) {  // past the columns: untouched
        ASSERT_TRUE(std::isnan(c.at({i, j})) ? std::isnan(c_before.at({i, j}))
                                             : c.at({i, j}) == c_before.at({i, j}));
        continue;
      }
      double acc = g.beta == 0.0f ? 0.0 : double(g.beta) * c_before.at({i, j});
      for (int64_t p = 0; p < g.k; ++p) {
        const double av = g.ta == Trans::yes ? a.at({p, i}) : a.at({i, p});
        const double bv = g.tb == Trans::yes ? b.at({j, p}) : b.at({p, j});
        acc += av * bv;
      }
      ASSERT_NEAR(c.at({i, j}), acc, 1e-5 * std::max(1.0, double(g.k) / 8))
          << "m=" << g.m << " n=" << g.n << " k=" << g.k << " ta=" << bool(g.ta)
          << " tb=" << bool(g.tb) << " beta=" << g.beta << " at (" << i << ", " << j << ")";
    }
  }
}

// The book's products, a tile-sized one at the limit, and two just past it (OpenBLAS).
const std::vector<std::tuple<int64_t, int64_t, int64_t>> kSizes = {
    {6, 2, 3}, {6, 6, 2}, {6, 2, 6}, {1, 1, 1}, {16, 16, 16}, {17, 16, 16}, {7, 70, 9}};

void check_every_case(GemmFn gemm) {
  uint64_t seed = 1;
  for (const auto& [m, n, k] : kSizes) {
    for (Trans ta : {Trans::no, Trans::yes}) {
      for (Trans tb : {Trans::no, Trans::yes}) {
        for (float beta : {0.0f, 1.0f, 0.5f}) check(gemm, {m, n, k, ta, tb, beta}, seed++);
      }
    }
  }
}

TEST(Blas, KernelsGemmMatchesDoubleEveryTransposeAndBetaOnEveryIsa) {
  ASSERT_EQ(kernels::tiny_gemm_volume(), 16 * 16 * 16);
  testing::KernelEnvironment restore;
  for (cpu::Isa isa : testing::available_isas()) {
    cpu::force_isa(isa);
    SCOPED_TRACE(cpu::isa_name(isa));
    check_every_case(&kernels::gemm);
  }
}

TEST(Blas, ReferenceGemmMatchesDoubleEveryTransposeAndBeta) {
  check_every_case(&reference::gemm);
}

TEST(Blas, TinyGemmGivesPositiveZeroForAnExactZeroProduct) {
  // OpenBLAS adds the product to a zeroed C, so -0 products come out +0; the small-size paths
  // must print the same, not "-0.0000".
  for (GemmFn gemm : {GemmFn{&kernels::gemm}, GemmFn{&reference::gemm}}) {
    const float a[2] = {-1.0f, 0.0f}, b[2] = {0.0f, 0.0f};  // (1, 2) (2, 1): -0 + 0 = 0
    float c = 5.0f;
    gemm(Trans::no, Trans::no, 1, 1, 1, 1.0f, a, 2, b, 1, 0.0f, &c, 1);  // -1 * 0 = -0
    EXPECT_EQ(c, 0.0f);
    EXPECT_FALSE(std::signbit(c));
  }
}

}  // namespace
}  // namespace llm_utils
