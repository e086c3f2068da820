// The kernels' options beyond one (N, M) problem per batch element: grouped keys and values
// (GQA), masks that broadcast, the causal query offset of a KV cache, and the fused forward's
// key split for decode steps. Each is checked against an equivalent call without the option
// (keys repeated, masks expanded, the causal mask written out) on both backends, and the
// fused kernel on every ISA with one and two threads.

#include <gtest/gtest.h>

#include <limits>
#include <string>

#include "kernel_test_util.hpp"

namespace llm_utils {
namespace {

using testing::kernel_close;

constexpr float kInf = std::numeric_limits<float>::infinity();

struct Inputs {
  Tensor q, k, v, dout;
};

struct Results {
  Tensor out, lse, probs, dq, dk, dv;
};

// q (B, N, d), k (Bk, M, d), v (Bk, M, dv), dout (B, N, dv).
Inputs make_inputs(int64_t b, int64_t bk, int64_t n, int64_t m, int64_t d, int64_t dv,
                   uint64_t seed) {
  Generator g(seed);
  return {g.uniform({b, n, d}, -1, 1), g.uniform({bk, m, d}, -1, 1), g.uniform({bk, m, dv}, -1, 1),
          g.uniform({b, n, dv}, -1, 1)};
}

Results run(const Inputs& in, const AttentionOptions& o) {
  const int64_t b = in.q.size(0), n = in.q.size(1), m = in.k.size(1);
  Results r{Tensor({b, n, in.v.size(2)}), Tensor({b, n}),       Tensor({b, n, m}),
            Tensor(in.q.shape()),         Tensor(in.k.shape()), Tensor(in.v.shape())};
  attention_forward(in.q, in.k, in.v, r.out, r.lse, o);
  attention_probabilities(in.q, in.k, r.lse, r.probs, o);
  attention_backward(in.q, in.k, in.v, r.out, r.lse, in.dout, r.dq, r.dk, r.dv, o);
  return r;
}

void expect_close(const Results& got, const Results& want) {
  EXPECT_TRUE(kernel_close(got.out, want.out)) << "out";
  EXPECT_TRUE(kernel_close(got.lse, want.lse)) << "lse";
  EXPECT_TRUE(kernel_close(got.probs, want.probs)) << "probs";
  EXPECT_TRUE(kernel_close(got.dq, want.dq)) << "dq";
  EXPECT_TRUE(kernel_close(got.dk, want.dk)) << "dk";
  EXPECT_TRUE(kernel_close(got.dv, want.dv)) << "dv";
}

// `variant` with the option under test on the reference, then on the fused kernel for every ISA
// and thread count, against `expected` (the equivalent call without it, on the reference).
void expect_variant_matches(const Inputs& variant_in, AttentionOptions variant,
                            const Results& expected) {
  variant.backend = Backend::reference;
  {
    SCOPED_TRACE("reference");
    expect_close(run(variant_in, variant), expected);
  }
  variant.backend = Backend::flash;
  testing::KernelEnvironment restore;
  for (cpu::Isa isa : testing::available_isas()) {
    for (int threads : {1, 2}) {
      SCOPED_TRACE(std::string("flash, ") + cpu::isa_name(isa) + ", threads " +
                   std::to_string(threads));
      cpu::force_isa(isa);
      set_num_threads(threads);
      expect_close(run(variant_in, variant), expected);
    }
  }
}

// Each k/v batch element repeated `group` times (torch.repeat_interleave(dim=0)).
Tensor repeat_interleave(const Tensor& t, int64_t group) {
  const int64_t rows = t.numel() / t.size(0);
  Tensor out({t.size(0) * group, t.size(1), t.size(2)});
  for (int64_t b = 0; b < out.size(0); ++b) {
    std::copy(t.data() + (b / group) * rows, t.data() + (b / group + 1) * rows,
              out.data() + b * rows);
  }
  return out;
}

// The gradient of a repeated tensor, summed back over each group.
Tensor sum_groups(const Tensor& t, int64_t group) {
  const int64_t rows = t.numel() / t.size(0);
  Tensor out({t.size(0) / group, t.size(1), t.size(2)});
  for (int64_t b = 0; b < t.size(0); ++b) {
    for (int64_t i = 0; i < rows; ++i) out[(b / group) * rows + i] += t[b * rows + i];
  }
  return out;
}

TEST(AttentionVariants, GroupedKeysAndValuesEqualRepeatedOnes) {
  struct Case {
    int64_t b, bk, n, m, d;
    bool causal;
  };
  for (const Case& c : {Case{6, 2, 70, 70, 16, false}, Case{6, 2, 70, 70, 16, true},
                        Case{4, 1, 1, 300, 8, false}, Case{8, 4, 130, 200, 32, false}}) {
    SCOPED_TRACE("B=" + std::to_string(c.b) + " Bk=" + std::to_string(c.bk) + " N=" +
                 std::to_string(c.n) + " M=" + std::to_string(c.m) + (c.causal ? " causal" : ""));
    const int64_t group = c.b / c.bk;
    const Inputs grouped = make_inputs(c.b, c.bk, c.n, c.m, c.d, c.d, 21);
    const Inputs repeated{grouped.q, repeat_interleave(grouped.k, group),
                          repeat_interleave(grouped.v, group), grouped.dout};
    AttentionOptions o{.causal = c.causal, .backend = Backend::reference};
    Results expected = run(repeated, o);
    expected.dk = sum_groups(expected.dk, group);
    expected.dv = sum_groups(expected.dv, group);
    expect_variant_matches(grouped, o, expected);
  }
}

// The (B, N, M) tensor a broadcast mask stands for: batch element b reads mask b / (B / Bm).
Tensor expand_mask(const Tensor& mask, int64_t b, int64_t n, int64_t m) {
  const Shape& s = mask.shape();
  const int64_t mb = s.size() == 3 ? s[0] : 1, mn = s[s.size() - 2], mm = s.back();
  Tensor out({b, n, m});
  for (int64_t g = 0; g < b; ++g) {
    for (int64_t i = 0; i < n; ++i) {
      for (int64_t j = 0; j < m; ++j) {
        const int64_t src =
            ((mb == 1 ? 0 : g / (b / mb)) * mn + (mn == 1 ? 0 : i)) * mm + (mm == 1 ? 0 : j);
        out.at({g, i, j}) = mask[src];
      }
    }
  }
  return out;
}

TEST(AttentionVariants, BroadcastMasksEqualTheirExpansion) {
  const int64_t b = 6, n = 70, m = 90;
  const Inputs in = make_inputs(b, b, n, m, 16, 8, 5);
  Generator g(8);
  for (const Shape& shape :
       std::vector<Shape>{{1, m}, {n, 1}, {2, 1, m}, {1, n, m}, {3, n, m}, {b, 1, m}, {b, n, m}}) {
    SCOPED_TRACE("mask " + shape_to_string(shape));
    Tensor mask = g.uniform(shape, -2, 2);
    // Hide some keys, and every key of one row where the mask has rows.
    for (int64_t i = 0; i < mask.numel(); i += 7) mask[i] = -kInf;
    if (shape[shape.size() - 2] == n && shape.back() == m) {
      for (int64_t j = 0; j < m; ++j) mask[5 * m + j] = -kInf;
    }
    const Tensor full = expand_mask(mask, b, n, m);
    const Results expected = run(in, {.additive_mask = full, .backend = Backend::reference});
    expect_variant_matches(in, {.additive_mask = mask}, expected);
  }
}

// The causal mask with query i at key position i + offset, written out as an additive mask.
Tensor offset_causal_mask(int64_t n, int64_t m, int64_t offset) {
  Tensor mask({n, m});
  for (int64_t i = 0; i < n; ++i) {
    for (int64_t j = i + offset + 1; j < m; ++j) mask.at({i, j}) = -kInf;
  }
  return mask;
}

TEST(AttentionVariants, QueryOffsetEqualsTheCausalMaskWrittenOut) {
  struct Case {
    int64_t n, m, offset;
  };
  for (const Case& c : {Case{40, 77, 37}, Case{1, 300, 299}, Case{70, 200, 100}, Case{5, 8, 0}}) {
    SCOPED_TRACE("N=" + std::to_string(c.n) + " M=" + std::to_string(c.m) +
                 " offset=" + std::to_string(c.offset));
    const Inputs in = make_inputs(2, 2, c.n, c.m, 16, 16, 13);
    const Tensor mask = offset_causal_mask(c.n, c.m, c.offset);
    const Results expected = run(in, {.additive_mask = mask, .backend = Backend::reference});
    expect_variant_matches(in, {.causal = true, .query_offset = c.offset}, expected);
  }
}

TEST(AttentionVariants, KeySplitForwardMatchesTheReferenceAndIgnoresThreads) {
  // Few query blocks against many keys: the fused forward splits the keys (attention.hpp).
  struct Case {
    int64_t b, n, m;
    bool causal;
  };
  for (const Case& c : {Case{1, 1, 5000, false}, Case{1, 20, 3000, false}, Case{2, 3, 2000, true},
                        Case{1, 100, 4100, true}}) {
    SCOPED_TRACE("B=" + std::to_string(c.b) + " N=" + std::to_string(c.n) +
                 " M=" + std::to_string(c.m) + (c.causal ? " causal" : ""));
    const Inputs in = make_inputs(c.b, c.b, c.n, c.m, 64, 64, 17);
    // Causal with the queries at the end of the keys, as in a decode step.
    const AttentionOptions o{.causal = c.causal, .query_offset = c.causal ? c.m - c.n : 0};
    AttentionOptions ref = o;
    ref.backend = Backend::reference;
    expect_variant_matches(in, o, run(in, ref));
    testing::KernelEnvironment restore;
    Tensor out1({c.b, c.n, 64}), lse1({c.b, c.n}), out2 = out1, lse2 = lse1;
    AttentionOptions flash = o;
    flash.backend = Backend::flash;
    set_num_threads(1);
    attention_forward(in.q, in.k, in.v, out1, lse1, flash);
    set_num_threads(2);
    attention_forward(in.q, in.k, in.v, out2, lse2, flash);
    EXPECT_TRUE(testing::bit_equal(out1, out2));
    EXPECT_TRUE(testing::bit_equal(lse1, lse2));
  }
}

TEST(AttentionVariants, OneQueryAtATimeGivesTheRowsOfTheFullCausalForward) {
  const int64_t n = 150, d = 32;
  const Inputs in = make_inputs(1, 1, n, n, d, d, 29);
  for (Backend backend : {Backend::reference, Backend::flash}) {
    SCOPED_TRACE(backend_name(backend));
    Tensor full({1, n, d}), lse({1, n});
    attention_forward(in.q, in.k, in.v, full, lse, {.causal = true, .backend = backend});
    for (int64_t i = 0; i < n; ++i) {
      // Query i alone against keys 0..i, as after a KV cache of i tokens.
      const ConstTensorView q(in.q.data() + i * d, {1, 1, d});
      const ConstTensorView k(in.k.data(), {1, i + 1, d});
      const ConstTensorView v(in.v.data(), {1, i + 1, d});
      Tensor row({1, 1, d}), row_lse({1, 1});
      attention_forward(q, k, v, row, row_lse,
                        {.causal = true, .query_offset = i, .backend = backend});
      const Tensor expected = Tensor::from_view(ConstTensorView(full.data() + i * d, {1, 1, d}));
      ASSERT_TRUE(testing::all_close(row, expected, 1e-6, 1e-6)) << "row " << i;
    }
  }
}

TEST(AttentionVariants, BadOptionsNameTheArgument) {
  Tensor q({4, 6, 8}), k({3, 6, 8}), v({3, 6, 8}), out({4, 6, 8}), lse({4, 6});
  const auto message = [](auto&& fn) { return testing::argument_error_of(fn); };
  EXPECT_NE(message([&] { attention_forward(q, k, v, out, lse, {}); }).find("must divide"),
            std::string::npos);
  Tensor k2({2, 6, 8}), v2({2, 6, 8}), mask({3, 6, 6});
  EXPECT_NE(message([&] {
              attention_forward(q, k2, v2, out, lse, {.additive_mask = mask});
            }).find("additive_mask must broadcast"),
            std::string::npos);
  EXPECT_NE(message([&] {
              attention_forward(q, k2, v2, out, lse, {.causal = true, .query_offset = -1});
            }).find("query_offset"),
            std::string::npos);
}

}  // namespace
}  // namespace llm_utils
