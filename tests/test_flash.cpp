// The fused kernels against the reference on edge shapes, on every ISA this CPU has, with one
// and two threads: outputs, log-sum-exp, attention weights and every gradient. Plus the
// microkernels alone (GEMM, the vectorised exp's error bound).

#include <gtest/gtest.h>
#include <omp.h>

#include <cmath>
#include <limits>
#include <string>
#include <thread>

#include "cpu/bf16_microkernels.hpp"
#include "kernel_test_util.hpp"

namespace llm_utils {
namespace {

using cpu::Isa;

struct Shape5 {
  int64_t batch, n, m, d, dv;
};

std::string describe(const Shape5& s) {
  return "B=" + std::to_string(s.batch) + " N=" + std::to_string(s.n) +
         " M=" + std::to_string(s.m) + " d=" + std::to_string(s.d) + " dv=" + std::to_string(s.dv);
}

using testing::available_isas;
using Environment = testing::KernelEnvironment;

struct Inputs {
  Tensor q, k, v, dout;
};

Inputs make_inputs(const Shape5& s, double magnitude, uint64_t seed) {
  Generator g(seed);
  return {g.uniform({s.batch, s.n, s.d}, -magnitude, magnitude),
          g.uniform({s.batch, s.m, s.d}, -magnitude, magnitude),
          g.uniform({s.batch, s.m, s.dv}, -1.0, 1.0), g.uniform({s.batch, s.n, s.dv}, -1.0, 1.0)};
}

struct Results {
  Tensor out, lse, probs, dq, dk, dv, dv_only;
};

Results run(const Inputs& in, const Shape5& s, AttentionOptions o) {
  Results r{Tensor({s.batch, s.n, s.dv}), Tensor({s.batch, s.n}),      Tensor({s.batch, s.n, s.m}),
            Tensor({s.batch, s.n, s.d}),  Tensor({s.batch, s.m, s.d}), Tensor({s.batch, s.m, s.dv}),
            Tensor({s.batch, s.m, s.dv})};
  attention_forward(in.q, in.k, in.v, r.out, r.lse, o);
  attention_probabilities(in.q, in.k, r.lse, r.probs, o);
  attention_backward(in.q, in.k, in.v, r.out, r.lse, in.dout, r.dq, r.dk, r.dv, o);
  attention_backward(in.q, in.k, in.v, r.out, r.lse, in.dout, {}, {}, r.dv_only, o);
  return r;
}

::testing::AssertionResult close(const Tensor& actual, const Tensor& expected) {
  return testing::kernel_close(actual, expected);
}

void expect_flash_matches_reference(const Shape5& s, AttentionOptions o, double magnitude,
                                    const Tensor* mask = nullptr) {
  SCOPED_TRACE(describe(s) + (o.causal ? " causal" : "") + (mask ? " masked" : ""));
  const Inputs in = make_inputs(s, magnitude, static_cast<uint64_t>(s.n * 131 + s.d));
  if (mask != nullptr) o.additive_mask = *mask;
  o.backend = Backend::reference;
  const Results ref = run(in, s, o);
  o.backend = Backend::flash;
  Environment restore;
  for (Isa isa : available_isas()) {
    for (int threads : {1, 2}) {
      SCOPED_TRACE(std::string(cpu::isa_name(isa)) + ", threads " + std::to_string(threads));
      cpu::force_isa(isa);
      set_num_threads(threads);
      const Results got = run(in, s, o);
      EXPECT_TRUE(close(got.out, ref.out)) << "out";
      EXPECT_TRUE(close(got.lse, ref.lse)) << "lse";
      EXPECT_TRUE(close(got.probs, ref.probs)) << "probs";
      EXPECT_TRUE(close(got.dq, ref.dq)) << "dq";
      EXPECT_TRUE(close(got.dk, ref.dk)) << "dk";
      EXPECT_TRUE(close(got.dv, ref.dv)) << "dv";
      EXPECT_TRUE(testing::bit_equal(got.dv_only, got.dv)) << "dv alone";
    }
  }
}

TEST(Flash, MatchesReferenceOnEdgeShapes) {
  const Shape5 shapes[] = {
      {1, 1, 1, 4, 4},      // seq 1
      {1, 67, 67, 8, 8},    // seq not a multiple of the tile
      {2, 130, 130, 1, 1},  // head dim 1, batch > 1
      {1, 70, 70, 7, 5},    // odd head dims
      {1, 64, 64, 64, 64},  // exactly one tile
      {3, 100, 100, 80, 80}, {1, 129, 129, 128, 128},
      {1, 65, 65, 256, 256}, {2, 33, 150, 16, 24},  // more keys than queries
  };
  for (const Shape5& s : shapes) {
    expect_flash_matches_reference(s, {}, 1.0);
    if (s.n == s.m) expect_flash_matches_reference(s, {.causal = true}, 1.0);
  }
}

TEST(Flash, LargeScoresDoNotOverflow) {
  // |q|, |k| up to 10 with d = 64: scores reach 80 and beyond after the 1/sqrt(d) scale.
  const Shape5 s{1, 96, 96, 64, 32};
  expect_flash_matches_reference(s, {}, 10.0);
  expect_flash_matches_reference(s, {.causal = true}, 10.0);
  const Inputs in = make_inputs(s, 10.0, 1);
  Tensor out({1, 96, 32}), lse({1, 96});
  attention_forward(in.q, in.k, in.v, out, lse, {.backend = Backend::flash});
  EXPECT_GT(testing::max_abs(lse), 80.0);
  for (float x : out) EXPECT_TRUE(std::isfinite(x));
}

TEST(Flash, AdditiveMaskAndFullyMaskedRowsGiveZeros) {
  const Shape5 s{2, 70, 90, 16, 8};
  Tensor mask({70, 90});
  Generator g(4);
  for (int64_t i = 0; i < 70; ++i) {
    for (int64_t j = 0; j < 90; ++j) {
      // Row 5 is fully hidden; elsewhere a pattern of hidden keys and finite biases.
      const bool hidden = i == 5 || (i + j) % 7 == 0;
      mask.at({i, j}) = hidden ? -std::numeric_limits<float>::infinity()
                               : static_cast<float>(g.uniform({1}, -2, 2)[0]);
    }
  }
  expect_flash_matches_reference(s, {}, 1.0, &mask);
  const Inputs in = make_inputs(s, 1.0, 7);
  for (Backend backend : {Backend::reference, Backend::flash}) {
    const Results r = run(in, s, {.additive_mask = mask, .backend = backend});
    for (int64_t b = 0; b < 2; ++b) {
      EXPECT_EQ(r.lse.at({b, 5}), -std::numeric_limits<float>::infinity());
      for (int64_t c = 0; c < 8; ++c) EXPECT_EQ(r.out.at({b, 5, c}), 0.0f);
      for (int64_t j = 0; j < 90; ++j) EXPECT_EQ(r.probs.at({b, 5, j}), 0.0f);
      for (int64_t c = 0; c < 16; ++c) EXPECT_EQ(r.dq.at({b, 5, c}), 0.0f);
    }
  }
  // A per-batch (B, N, M) mask too.
  Tensor batched_mask({2, 70, 90});
  std::copy(mask.begin(), mask.end(), batched_mask.begin());
  std::fill(batched_mask.begin() + 70 * 90, batched_mask.end(), 0.5f);
  expect_flash_matches_reference(s, {}, 1.0, &batched_mask);
}

TEST(Flash, ThreadCountDoesNotChangeTheForwardOrDkDv) {
  Environment restore;
  const Shape5 s{1, 300, 300, 64, 64};
  const Inputs in = make_inputs(s, 1.0, 3);
  set_num_threads(1);
  const Results one = run(in, s, {.causal = true, .backend = Backend::flash});
  set_num_threads(2);
  const Results two = run(in, s, {.causal = true, .backend = Backend::flash});
  EXPECT_TRUE(testing::bit_equal(one.out, two.out));
  EXPECT_TRUE(testing::bit_equal(one.lse, two.lse));
  EXPECT_TRUE(testing::bit_equal(one.dk, two.dk));
  EXPECT_TRUE(testing::bit_equal(one.dv, two.dv));
  // dq sums per-thread partials: equal to rounding (documented in attention.hpp).
  EXPECT_TRUE(testing::all_close(one.dq, two.dq, 1e-6, 1e-6));
}

TEST(Threads, TheCountHoldsInThreadsStartedLater) {
  Environment restore;
  set_num_threads(1);
  int seen = 0, team = 0;
  std::thread worker([&] {
    seen = get_num_threads();
    // The kernels' parallel regions take their size from get_num_threads(), not from OpenMP's
    // per-thread default, which in a new thread would be every core.
#pragma omp parallel num_threads(get_num_threads())
    {
#pragma omp single
      team = omp_get_num_threads();
    }
  });
  worker.join();
  EXPECT_EQ(seen, 1);
  EXPECT_EQ(team, 1);
}

TEST(Flash, NanInAScoreRowGivesANanRow) {
  const Shape5 s{1, 80, 80, 8, 8};
  Inputs in = make_inputs(s, 1.0, 9);
  in.k.at({0, 3, 0}) = std::numeric_limits<float>::quiet_NaN();  // every query sees key 3
  Tensor out({1, 80, 8}), lse({1, 80});
  attention_forward(in.q, in.k, in.v, out, lse, {.backend = Backend::flash});
  for (float x : out) EXPECT_TRUE(std::isnan(x));
}

TEST(Flash, AutomaticPicksFlashFromOneTileUp) {
  EXPECT_EQ(choose_backend(Backend::automatic, 6, 6, 2), Backend::reference);
  EXPECT_EQ(choose_backend(Backend::automatic, 64, 64, 64), Backend::flash);
  EXPECT_EQ(choose_backend(Backend::reference, 4096, 4096, 64), Backend::reference);
}

TEST(Flash, ShapeErrorsNameTheArgument) {
  Tensor q({4, 8}), k({5, 8}), v({5, 3}), out({4, 3}), lse({4});
  Tensor bad_k({5, 7}), bad_out({4, 4}), bad_mask({4, 4});
  EXPECT_THROW(attention_forward(q, bad_k, v, out, lse, {}), ArgumentError);
  EXPECT_THROW(attention_forward(q, k, v, bad_out, lse, {}), ArgumentError);
  EXPECT_THROW(attention_forward(q, k, v, out, lse, {.additive_mask = bad_mask}), ArgumentError);
  EXPECT_THROW(attention_forward(q, k, v, out, lse, {.scale_divisor = 0.0f}), ArgumentError);
  EXPECT_THROW(attention_backward(q, k, v, out, lse, out, {}, {}, {}, {}), ArgumentError);
}

TEST(Microkernels, EveryTableIsComplete) {
  // Aggregate initialisation leaves a forgotten entry null; catch that here, not as a crash.
  for (const cpu::Microkernels* t :
       {&cpu::portable_microkernels(), &cpu::avx2_microkernels(), &cpu::avx512_microkernels()}) {
    SCOPED_TRACE(cpu::isa_name(t->isa));
    EXPECT_NE(t->gemm, nullptr);
    EXPECT_NE(t->transpose, nullptr);
    EXPECT_NE(t->dot, nullptr);
    EXPECT_NE(t->row_max, nullptr);
    EXPECT_NE(t->exp_centered_sum, nullptr);
    EXPECT_NE(t->exp_centered_each, nullptr);
    EXPECT_NE(t->softmax_grad, nullptr);
    EXPECT_NE(t->online_softmax, nullptr);
    EXPECT_NE(t->softcap, nullptr);
  }
}

TEST(Microkernels, GemmMatchesNaiveOnEveryIsa) {
  Environment restore;
  Generator g(11);
  for (Isa isa : available_isas()) {
    cpu::force_isa(isa);
    for (const auto& [m, n, k] : std::vector<std::tuple<int64_t, int64_t, int64_t>>{
             {1, 1, 1}, {6, 64, 64}, {7, 65, 3}, {13, 17, 33}, {64, 130, 80}}) {
      Tensor a = g.uniform({m, k}, -1, 1), b = g.uniform({k, n}, -1, 1);
      Tensor c = g.uniform({m, n}, -1, 1);
      Tensor expected = c;
      for (int64_t i = 0; i < m; ++i) {
        for (int64_t j = 0; j < n; ++j) {
          double acc = 0;
          for (int64_t p = 0; p < k; ++p) acc += double(a.at({i, p})) * b.at({p, j});
          expected.at({i, j}) += static_cast<float>(0.5 * acc);
        }
      }
      cpu::microkernels().gemm(m, n, k, 0.5f, a.data(), k, b.data(), n, c.data(), n, true);
      EXPECT_TRUE(testing::all_close(c, expected, 1e-5, 1e-5)) << cpu::isa_name(isa);
    }
  }
}

TEST(Microkernels, TransposeIsExactOnEveryIsa) {
  Environment restore;
  Generator g(12);
  for (Isa isa : available_isas()) {
    cpu::force_isa(isa);
    for (const auto& [rows, cols] : std::vector<std::pair<int64_t, int64_t>>{
             {1, 1}, {16, 16}, {17, 33}, {64, 64}, {15, 80}, {100, 7}}) {
      const int64_t lds = cols + 3, ldd = rows + 5;  // leading dimensions past the data
      const Tensor src = g.uniform({rows, lds}, -1, 1);
      Tensor dst = Tensor::full({cols, ldd}, 7.0f);
      cpu::microkernels().transpose(src.data(), rows, cols, lds, dst.data(), ldd);
      for (int64_t c = 0; c < cols; ++c) {
        for (int64_t r = 0; r < ldd; ++r) {
          const float want = r < rows ? src.at({r, c}) : 7.0f;  // padding untouched
          ASSERT_EQ(dst.at({c, r}), want) << cpu::isa_name(isa) << " " << rows << "x" << cols;
        }
      }
    }
  }
}

TEST(Microkernels, ExpErrorIsAtMostTwoUlp) {
  Environment restore;
  for (Isa isa : available_isas()) {
    cpu::force_isa(isa);
    std::vector<float> x;
    for (double v = -87.0; v <= 88.0; v += 0.001) x.push_back(static_cast<float>(v));
    std::vector<float> y = x;
    cpu::microkernels().exp_centered_sum(y.data(), static_cast<int64_t>(y.size()), 1.0f, 0.0f,
                                         0.0f);
    double worst_ulp = 0;
    for (size_t i = 0; i < x.size(); ++i) {
      const double exact = std::exp(static_cast<double>(x[i]));
      const float exact_f = static_cast<float>(exact);
      const double ulp = std::nextafter(exact_f, INFINITY) - exact_f;
      worst_ulp = std::max(worst_ulp, std::fabs(y[i] - exact) / ulp);
    }
    EXPECT_LE(worst_ulp, 2.0) << cpu::isa_name(isa);
    // Below -87.3 the results are subnormal (quantum 2^-149): still within 2 quanta, not
    // flushed to zero, down to the clamp at -103.9.
    std::vector<float> tiny;
    for (double v = -103.8; v <= -86.5; v += 0.001) tiny.push_back(static_cast<float>(v));
    std::vector<float> tiny_exp = tiny;
    cpu::microkernels().exp_centered_sum(tiny_exp.data(), static_cast<int64_t>(tiny.size()), 1.0f,
                                         0.0f, 0.0f);
    const double quantum = std::ldexp(1.0, -149);
    double worst_quanta = 0;
    for (size_t i = 0; i < tiny.size(); ++i) {
      const double exact = std::exp(static_cast<double>(tiny[i]));
      worst_quanta = std::max(worst_quanta, std::fabs(tiny_exp[i] - exact) / quantum);
    }
    EXPECT_LE(worst_quanta, 2.0) << cpu::isa_name(isa);
    std::vector<float> edge = {-std::numeric_limits<float>::infinity(), -200.0f,
                               std::numeric_limits<float>::quiet_NaN()};
    cpu::microkernels().exp_centered_sum(edge.data(), 3, 1.0f, 0.0f, 0.0f);
    EXPECT_EQ(edge[0], 0.0f) << cpu::isa_name(isa);
    EXPECT_EQ(edge[1], 0.0f) << cpu::isa_name(isa);
    EXPECT_TRUE(std::isnan(edge[2])) << cpu::isa_name(isa);
  }
}

TEST(Microkernels, SoftcapIsTanhWithin4e7Relative) {
  // cap * tanh(x * scale / cap) and 1 - tanh^2 on both sides of the polynomial's hand-over at
  // |z| = 0.25, out to where tanh is 1, against double; tails of every length.
  Environment restore;
  const float scale = 0.5f, cap = 3.0f;
  std::vector<float> x;
  for (double z = -12.0; z <= 12.0; z += 0.0007) x.push_back(static_cast<float>(z * cap / scale));
  for (Isa isa : available_isas()) {
    cpu::force_isa(isa);
    for (int64_t n : {int64_t{1}, int64_t{7}, int64_t{15}, static_cast<int64_t>(x.size())}) {
      std::vector<float> y(x.begin(), x.begin() + n), grad(static_cast<size_t>(n));
      cpu::microkernels().softcap(y.data(), n, scale, cap, grad.data());
      double worst = 0, worst_grad = 0;
      for (int64_t i = 0; i < n; ++i) {
        const double t = std::tanh(static_cast<double>(x[i]) * scale / cap);
        worst = std::max(worst, std::fabs(y[i] / cap - t) / std::max(std::fabs(t), 1e-30));
        worst_grad = std::max(worst_grad, std::fabs(grad[i] - (1.0 - t * t)));
      }
      EXPECT_LE(worst, 4e-7) << cpu::isa_name(isa) << " n=" << n;
      EXPECT_LE(worst_grad, 4e-7) << cpu::isa_name(isa) << " n=" << n;
    }
    std::vector<float> edge = {std::numeric_limits<float>::infinity(),
                               -std::numeric_limits<float>::infinity(),
                               std::numeric_limits<float>::quiet_NaN(), 0.0f, -0.0f};
    cpu::microkernels().softcap(edge.data(), 5, scale, cap, nullptr);
    EXPECT_EQ(edge[0], cap) << cpu::isa_name(isa);
    EXPECT_EQ(edge[1], -cap) << cpu::isa_name(isa);
    EXPECT_TRUE(std::isnan(edge[2])) << cpu::isa_name(isa);
    EXPECT_EQ(edge[3], 0.0f) << cpu::isa_name(isa);
    EXPECT_TRUE(std::signbit(edge[4])) << cpu::isa_name(isa);
  }
}

TEST(Microkernels, ExpRoundsTheScaledScoreBeforeSubtractingTheOffset) {
  // With offset = the rounded x * scale (center 0), the exponent is exactly 0 and exp gives 1. A
  // kernel that fused the multiply with the subtraction (fmsub, or the compiler contracting
  // them) would see the product's rounding error instead, up to half an ulp of ~100 (4e-6),
  // and return 1 +- 4e-6: far outside the exp's 2 ulp.
  Environment restore;
  Generator g(13);
  const float scale = 0.1f;  // not a power of two: the products round
  const Tensor x = g.uniform({512}, 900.0, 1100.0);
  for (Isa isa : available_isas()) {
    cpu::force_isa(isa);
    const auto& mk = cpu::microkernels();
    std::vector<float> offsets(512), each(x.data(), x.data() + 512);
    for (size_t j = 0; j < offsets.size(); ++j) {
      const volatile float product = x[static_cast<int64_t>(j)] * scale;  // rounded to float
      offsets[j] = product;
    }
    mk.exp_centered_each(each.data(), 512, scale, nullptr, offsets.data());
    for (size_t j = 0; j < each.size(); ++j) {
      ASSERT_EQ(each[j], 1.0f) << cpu::isa_name(isa)
                               << " exp_centered_each at x = " << x[static_cast<int64_t>(j)];
    }
    for (int64_t j = 0; j < 64; ++j) {
      // 27 copies of one score (full vectors and a tail on every ISA), so `offset` can be
      // that score's own rounded product.
      std::vector<float> row(27, x[j]);
      const float sum = mk.exp_centered_sum(row.data(), 27, scale, 0.0f, offsets[size_t(j)]);
      for (float e : row)
        ASSERT_EQ(e, 1.0f) << cpu::isa_name(isa) << " exp_centered_sum at " << x[j];
      ASSERT_EQ(sum, 27.0f) << cpu::isa_name(isa);
    }
  }
}

// online_softmax against the step written out with each ISA's row primitives: every row kind
// (scores that raise the max, that do not, fully hidden so far, hidden in this tile, a NaN), for
// a width with a tail and for widths of whole 64-column groups (the forward's steps, where the
// AVX-512 step takes unmasked loads and stores).
TEST(Microkernels, OnlineSoftmaxMatchesTheStepWrittenOutOnEveryIsa) {
  Environment restore;
  constexpr float kInf = std::numeric_limits<float>::infinity();
  const int64_t rows = 70, acc_cols = 19;  // 70: a row block and a tail
  struct Width {
    int64_t cols, ld;
  };
  for (const Width w : {Width{37, 40}, Width{64, 64}, Width{128, 136}}) {
    SCOPED_TRACE("cols " + std::to_string(w.cols));
    const int64_t cols = w.cols, ld = w.ld;
    Generator g(17);
    const Tensor scores = g.uniform({rows, ld}, -4.0, 4.0);
    const Tensor acc0 = g.uniform({rows, acc_cols}, -1.0, 1.0);
    std::vector<float> m0(rows), l0(rows);
    for (int64_t r = 0; r < rows; ++r) {
      m0[r] = r % 5 == 0 ? -kInf : static_cast<float>(r % 7) - 2.0f;  // some above every score
      l0[r] = m0[r] == -kInf ? 0.0f : 1.5f;
    }
    for (Isa isa : available_isas()) {
      SCOPED_TRACE(cpu::isa_name(isa));
      cpu::force_isa(isa);
      const auto& mk = cpu::microkernels();
      Tensor s = scores, acc = acc0;
      for (int64_t j = 0; j < cols; ++j) s.at({3, j}) = -kInf;  // hidden so far and now: skipped
      for (int64_t j = 0; j < cols; ++j) s.at({4, j}) = -kInf;  // hidden here, seen before
      s.at({6, 2}) = std::numeric_limits<float>::quiet_NaN();
      s.at({7, cols - 1}) = -kInf;  // one hidden key, in the last vector
      Tensor expected_s = s, expected_acc = acc;
      std::vector<float> m = m0, l = l0, em = m0, el = l0;
      const float scale = 0.7f;
      mk.online_softmax(s.data(), ld, rows, cols, scale, m.data(), l.data(), acc.data(), acc_cols,
                        acc_cols);
      for (int64_t r = 0; r < rows; ++r) {
        float* row = expected_s.data() + r * ld;
        const float tile_max = mk.row_max(row, cols);
        const float m_new = tile_max > em[r] || std::isnan(tile_max) ? tile_max : em[r];
        if (m_new == -kInf) {
          std::fill(row, row + cols, 0.0f);
          continue;
        }
        const float c = em[r] == -kInf ? 0.0f : std::exp((em[r] - m_new) * scale);
        el[r] = el[r] * c + mk.exp_centered_sum(row, cols, scale, m_new, 0.0f);
        for (int64_t k = 0; k < acc_cols; ++k) expected_acc.at({r, k}) *= c;
        em[r] = m_new;
      }
      for (int64_t r = 0; r < rows; ++r) {
        SCOPED_TRACE("row " + std::to_string(r));
        if (r == 6) {  // the NaN row
          EXPECT_TRUE(std::isnan(m[r]) && std::isnan(l[r]));
          continue;
        }
        EXPECT_EQ(m[r], em[r]);
        EXPECT_NEAR(l[r], el[r], 1e-6 * std::fabs(el[r]));
        for (int64_t j = 0; j < cols; ++j) EXPECT_EQ(s.at({r, j}), expected_s.at({r, j})) << j;
        // The columns between cols and ld are not the step's: left as they were.
        for (int64_t j = cols; j < ld; ++j) EXPECT_EQ(s.at({r, j}), scores.at({r, j})) << j;
        for (int64_t k = 0; k < acc_cols; ++k) {
          EXPECT_NEAR(acc.at({r, k}), expected_acc.at({r, k}), 1e-6) << k;
        }
        if (em[r] == m0[r]) {  // the max did not move: the accumulator keeps its bits
          for (int64_t k = 0; k < acc_cols; ++k) EXPECT_EQ(acc.at({r, k}), acc0.at({r, k})) << k;
        }
      }
    }
  }
}

// The bfloat16 tables' step against the float32 table's on the same scores, for a width with a
// tail and whole 64-column groups: the same maxima, sums and accumulators within the exps'
// difference (2e-7 relative), and P within bfloat16's rounding of the float32 probabilities.
TEST(Microkernels, Bf16OnlineSoftmaxMatchesTheFloat32StepOnEveryIsa) {
  Environment restore;
  constexpr float kInf = std::numeric_limits<float>::infinity();
  const int64_t rows = 70, acc_cols = 19;
  for (const int64_t cols : {37, 64, 128}) {
    SCOPED_TRACE("cols " + std::to_string(cols));
    const int64_t ld = cols + 8;
    Generator g(23);
    Tensor scores = g.uniform({rows, ld}, -4.0, 4.0);
    for (int64_t j = 0; j < cols; ++j) scores.at({3, j}) = -kInf;  // hidden so far and now
    scores.at({7, cols - 1}) = -kInf;
    const Tensor acc0 = g.uniform({rows, acc_cols}, -1.0, 1.0);
    std::vector<float> m0(rows), l0(rows);
    for (int64_t r = 0; r < rows; ++r) {
      m0[r] = r % 5 == 0 ? -kInf : static_cast<float>(r % 7) - 2.0f;
      l0[r] = m0[r] == -kInf ? 0.0f : 1.5f;
    }
    for (Isa isa : available_isas()) {
      SCOPED_TRACE(cpu::isa_name(isa));
      cpu::force_isa(isa);
      const float scale = 0.7f;
      Tensor s32 = scores, acc32 = acc0;
      std::vector<float> m32 = m0, l32 = l0;
      cpu::microkernels().online_softmax(s32.data(), ld, rows, cols, scale, m32.data(), l32.data(),
                                         acc32.data(), acc_cols, acc_cols);
      Tensor s16 = scores, acc16 = acc0;
      std::vector<float> m16 = m0, l16 = l0;
      std::vector<bfloat16> p(static_cast<size_t>(rows * cols));  // (rows, cols)
      cpu::bf16_microkernels().online_softmax(s16.data(), ld, rows, cols, scale, m16.data(),
                                              l16.data(), acc16.data(), acc_cols, acc_cols,
                                              p.data(), cols);
      for (int64_t r = 0; r < rows; ++r) {
        SCOPED_TRACE("row " + std::to_string(r));
        EXPECT_EQ(m16[r], m32[r]);
        EXPECT_NEAR(l16[r], l32[r], 1e-6 * std::fabs(l32[r]));
        for (int64_t j = 0; j < cols; ++j) {
          const float want = s32.at({r, j}), got = static_cast<float>(p[r * cols + j]);
          ASSERT_NEAR(got, want, std::ldexp(std::fabs(want), -8) + 1e-30f) << j;
        }
        for (int64_t k = 0; k < acc_cols; ++k) {
          EXPECT_NEAR(acc16.at({r, k}), acc32.at({r, k}), 1e-6) << k;
        }
      }
    }
  }
}

}  // namespace
}  // namespace llm_utils
