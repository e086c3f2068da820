// The numerical contract of the README's Numerics section, on every class, both ranks and every
// backend this build has: large inputs never overflow the softmax, fully masked rows give zeros,
// and non-finite input has the documented effect, confined to its own batch element.

#include <gtest/gtest.h>

#include <algorithm>
#include <cmath>
#include <limits>
#include <string>
#include <vector>

#include "llm_utils/llm_utils.hpp"

namespace llm_utils {
namespace {

constexpr float kInf = std::numeric_limits<float>::infinity();
constexpr float kNaN = std::numeric_limits<float>::quiet_NaN();

struct Case {
  std::string module;
  bool bias;
  bool batched;
  Backend backend;
};

std::string case_name(const Case& c) {
  return c.module + (c.bias ? "+bias" : "") + (c.batched ? " 3-D " : " 2-D ") +
         backend_name(c.backend);
}

// Whether this build has the backend: an unbuilt one makes forward throw ArgumentError.
bool backend_available(Backend backend) {
  Generator gen(1);
  auto m = make_self_attention("linear", 3, 2, false, &gen);
  m->set_backend(backend);
  try {
    m->forward(Tensor::full({2, 3}, 1.0f));
    return true;
  } catch (const ArgumentError&) {
    return false;
  }
}

std::vector<Case> all_cases() {
  std::vector<Case> cases;
  for (Backend backend : {Backend::reference, Backend::flash}) {
    if (!backend_available(backend)) continue;
    for (const char* module : {"params", "linear", "linear4", "linear5"}) {
      for (bool bias : {false, true}) {
        if (bias && std::string(module) == "params") continue;
        for (bool batched : {false, true}) cases.push_back({module, bias, batched, backend});
      }
    }
  }
  return cases;
}

std::unique_ptr<SelfAttentionBase> build(const Case& c, int64_t d_in, int64_t d_out,
                                         Generator& gen) {
  auto m = make_self_attention(c.module, d_in, d_out, c.bias, &gen);
  if (auto* l4 = dynamic_cast<SelfAttention_Linear4*>(m.get())) l4->set_advance_generator(false);
  m->set_backend(c.backend);
  return m;
}

bool all_finite(ConstTensorView t) {
  for (int64_t i = 0; i < t.numel(); ++i) {
    if (!std::isfinite(t.data()[i])) return false;
  }
  return true;
}

// Sizes that reach the fused kernel's tiles (N = 70 > 64) and a tiny one.
struct Size {
  int64_t n, d_in, d_out;
};
constexpr Size kSizes[] = {{6, 3, 2}, {70, 16, 8}};

// Every class, both ranks: finite outputs, attention weights and gradients, rows summing to one.
void expect_inputs_up_to_1e4_are_fine(Backend backend) {
  for (const Case& c : all_cases()) {
    if (c.backend != backend) continue;
    for (const Size& s : kSizes) {
      SCOPED_TRACE(case_name(c) + " N=" + std::to_string(s.n));
      for (uint64_t seed : {5, 7}) {
        Generator gen(seed);
        auto m = build(c, s.d_in, s.d_out, gen);
        const Shape shape = c.batched ? Shape{2, s.n, s.d_in} : Shape{s.n, s.d_in};
        Tensor x = gen.uniform(shape, -1e4, 1e4);
        x[0] = 1e4f;  // the bounds themselves
        x[1] = -1e4f;
        const Tensor y = m->forward(x);
        EXPECT_TRUE(all_finite(y));
        const ConstTensorView w = m->attn_weights();
        ASSERT_TRUE(all_finite(w));
        for (int64_t r = 0; r < w.numel() / s.n; ++r) {
          double sum = 0.0;
          for (int64_t j = 0; j < s.n; ++j) sum += w.data()[r * s.n + j];
          ASSERT_NEAR(sum, 1.0, 1e-5) << "row " << r;
        }
        const Tensor dx = m->backward(Tensor::full(y.shape(), 1.0f));
        EXPECT_TRUE(all_finite(dx));
        for (const auto& [name, p] : m->named_parameters()) {
          if (p.has_grad()) EXPECT_TRUE(all_finite(p.grad())) << name;
        }
      }
    }
  }
}

TEST(NumericsHardening, InputsUpTo1e4NeverOverflow) {
  expect_inputs_up_to_1e4_are_fine(Backend::reference);
}

// Largest |a - e| over the largest |e| (at least 1): the project's parity measure.
double parity_error(ConstTensorView actual, ConstTensorView expected) {
  double scale = 1.0, worst = 0.0;
  for (int64_t i = 0; i < expected.numel(); ++i) {
    scale = std::max(scale, static_cast<double>(std::fabs(expected.data()[i])));
  }
  for (int64_t i = 0; i < expected.numel(); ++i) {
    worst = std::max(worst, std::fabs(static_cast<double>(actual.data()[i]) - expected.data()[i]));
  }
  return worst / scale;
}

// At |x| = 1e4 the scores reach ~1e9. The fused kernel exponentiates (s - max) * scale, exact
// near the max however large s is, and its backward and attention weights use the row max and
// log(sum) it saved apart (not their sum, lse, whose rounding at 1e9 exceeds 1). A duplicated
// token makes an exact tie at a row's max, where P must be 1/2 each, not 1.
TEST(NumericsHardening, FusedKernelMatchesTheReferenceForInputsUpTo1e4) {
  if (!backend_available(Backend::flash)) GTEST_SKIP() << "no fused kernel in this build";
  expect_inputs_up_to_1e4_are_fine(Backend::flash);
  for (const char* module : {"params", "linear", "linear5"}) {
    SCOPED_TRACE(module);
    Generator g_ref(5), g_fused(5);
    auto a = build({module, false, false, Backend::reference}, 16, 8, g_ref);
    auto b = build({module, false, false, Backend::flash}, 16, 8, g_fused);
    Generator gx(3);
    Tensor x = gx.uniform({70, 16}, -1e4, 1e4);
    // Copy the key query 0 attends to (its argmax j) into another token t: a tie at row 0's max.
    // The tie must hold in the reference's scores too, which BLAS computes: its FMA kernels may
    // sum two columns in different orders (seen with OpenBLAS's Haswell kernels on a Zen 3),
    // and at scores of ~1e7 one rounding breaks the tie. So t is the first token for which the
    // reference's row 0 ties exactly at its max.
    a->forward(x);
    const float* w0 = a->attn_weights().data();
    const int64_t j = std::max_element(w0, w0 + 70) - w0;
    const Tensor x_orig = x;
    Tensor ya;
    bool tied = false;
    for (int64_t t = 1; t < 70 && !tied; ++t) {  // not 0: that is the query
      if (t == j) continue;
      x = x_orig;
      for (int64_t c = 0; c < 16; ++c) x[t * 16 + c] = x[j * 16 + c];
      ya = a->forward(x);
      const float* w = a->attn_weights().data();
      tied = w[j] == w[t] && w[j] == *std::max_element(w, w + 70);
    }
    ASSERT_TRUE(tied) << "no token copied from " << j << " ties at row 0's max in the reference";
    EXPECT_LE(parity_error(b->forward(x), ya), 1e-5);
    EXPECT_LE(parity_error(b->attn_weights(), a->attn_weights()), 1e-5);
    EXPECT_EQ(a->attn_weights().data()[j], 0.5f) << "the input should tie at row 0's max";
    const Tensor ones = Tensor::full(ya.shape(), 1.0f);
    EXPECT_LE(parity_error(b->backward(ones), a->backward(ones)), 1e-5);
    auto pa = a->named_parameters();
    auto pb = b->named_parameters();
    for (size_t i = 0; i < pa.size(); ++i) {
      if (pa[i].second.has_grad()) {
        EXPECT_LE(parity_error(pb[i].second.grad(), pa[i].second.grad()), 1e-5) << pa[i].first;
      }
    }
  }
}

// A NaN token reaches every query through its key, so its whole sequence is NaN (as PyTorch);
// other batch elements are untouched, and nothing crashes on the way back.
TEST(NumericsHardening, NanInputPoisonsItsOwnSequenceOnly) {
  for (const Case& c : all_cases()) {
    for (float bad : {kNaN, kInf, -kInf}) {
      SCOPED_TRACE(case_name(c) + " input " + std::to_string(bad));
      Generator gen(11);
      auto m = build(c, 4, 3, gen);
      const Shape shape = c.batched ? Shape{2, 5, 4} : Shape{5, 4};
      Tensor x = gen.uniform(shape, -1.0, 1.0);
      x[2 * 4 + 1] = bad;  // token 2 of the first sequence
      const Tensor y = m->forward(x);
      const int64_t seq_out = 5 * 3;
      if (std::isnan(bad)) {
        for (int64_t i = 0; i < seq_out; ++i) EXPECT_TRUE(std::isnan(y[i])) << i;
      }
      if (c.batched) {
        for (int64_t i = seq_out; i < 2 * seq_out; ++i) EXPECT_TRUE(std::isfinite(y[i])) << i;
      }
      const Tensor dx = m->backward(Tensor::full(y.shape(), 1.0f));
      if (c.batched) {
        for (int64_t i = 5 * 4; i < 2 * 5 * 4; ++i) EXPECT_TRUE(std::isfinite(dx[i])) << i;
      }
    }
  }
}

TEST(NumericsHardening, SoftmaxOfFullyMaskedRowsIsZeroNotNan) {
  Tensor s({4, 3}, {-kInf, -kInf, -kInf,  // fully masked
                    -kInf, 2.0f, -kInf,   // one visible key takes all the weight
                    1e30f, -1e30f, 0.0f,  // huge but finite
                    kNaN, 0.0f, -kInf});  // NaN poisons the row
  softmax_rows_inplace(s);
  for (int64_t j = 0; j < 3; ++j) EXPECT_EQ(s.at({0, j}), 0.0f);
  EXPECT_EQ(s.at({1, 1}), 1.0f);
  EXPECT_EQ(s.at({1, 0}), 0.0f);
  EXPECT_EQ(s.at({2, 0}), 1.0f);
  EXPECT_EQ(s.at({2, 2}), 0.0f);
  for (int64_t j = 0; j < 3; ++j) EXPECT_TRUE(std::isnan(s.at({3, j})));
}

TEST(NumericsHardening, SoftmaxOfWideFullyMaskedRowsIsZero) {
  // Wide rows, as a vectorised softmax would see them, and a masked row between visible ones.
  const int64_t cols = 300;
  Tensor s({3, cols});
  for (int64_t j = 0; j < cols; ++j) {
    s.at({0, j}) = static_cast<float>(j % 7);
    s.at({1, j}) = -kInf;
    s.at({2, j}) = j == cols - 1 ? 5.0f : -kInf;
  }
  softmax_rows_inplace(s);
  for (int64_t j = 0; j < cols; ++j) {
    EXPECT_EQ(s.at({1, j}), 0.0f) << j;
    EXPECT_TRUE(std::isfinite(s.at({0, j})));
  }
  EXPECT_EQ(s.at({2, cols - 1}), 1.0f);
}

}  // namespace
}  // namespace llm_utils
