// The modern variants of the kernels (attention.hpp, docs/variants.md): sliding windows, logit
// softcapping, ALiBi, attention sinks with their gradient, packed variable-length sequences.
// Each is checked against an equivalent call without it (a window or ALiBi written out as an
// additive mask, a sink as an extra key, packed sequences as one call per sequence), or, for
// the softcap, against scores computed here in double; then the fused kernel against the
// reference on every ISA with one and two threads. python/tests/test_variants.py checks them
// against PyTorch autograd.

#include <gtest/gtest.h>

#include <cmath>
#include <limits>
#include <span>
#include <string>
#include <vector>

#include "kernel_test_util.hpp"

namespace llm_utils {
namespace {

using testing::kernel_close;

constexpr float kInf = std::numeric_limits<float>::infinity();

struct Inputs {
  Tensor q, k, v, dout;
};

struct Results {
  Tensor out, lse, probs, dq, dk, dv, dsinks;
};

// q (B, N, d), k (Bk, M, d), v (Bk, M, dv), dout (B, N, dv).
Inputs make_inputs(int64_t b, int64_t bk, int64_t n, int64_t m, int64_t d, int64_t dv,
                   uint64_t seed, float range = 1.0f) {
  Generator g(seed);
  return {g.uniform({b, n, d}, -range, range), g.uniform({bk, m, d}, -range, range),
          g.uniform({bk, m, dv}, -1, 1), g.uniform({b, n, dv}, -1, 1)};
}

Results run(const Inputs& in, const AttentionOptions& o) {
  const int64_t b = in.q.size(0), n = in.q.size(1), m = in.k.size(1);
  Results r{
      Tensor({b, n, in.v.size(2)}), Tensor({b, n}),       Tensor({b, n, m}), Tensor(in.q.shape()),
      Tensor(in.k.shape()),         Tensor(in.v.shape()), Tensor({b})};
  attention_forward(in.q, in.k, in.v, r.out, r.lse, o);
  attention_probabilities(in.q, in.k, r.lse, r.probs, o);
  TensorView dsinks = o.sinks.data() != nullptr ? r.dsinks.view() : TensorView();
  attention_backward(in.q, in.k, in.v, r.out, r.lse, in.dout, r.dq, r.dk, r.dv, dsinks, o);
  return r;
}

void expect_close(const Results& got, const Results& want, bool sinks = false) {
  EXPECT_TRUE(kernel_close(got.out, want.out)) << "out";
  EXPECT_TRUE(kernel_close(got.lse, want.lse)) << "lse";
  EXPECT_TRUE(kernel_close(got.probs, want.probs)) << "probs";
  EXPECT_TRUE(kernel_close(got.dq, want.dq)) << "dq";
  EXPECT_TRUE(kernel_close(got.dk, want.dk)) << "dk";
  EXPECT_TRUE(kernel_close(got.dv, want.dv)) << "dv";
  if (sinks) EXPECT_TRUE(kernel_close(got.dsinks, want.dsinks)) << "dsinks";
}

// Runs check() on the fused kernel for every ISA of this CPU with 1 and 2 threads.
template <typename F>
void on_every_fused_setup(F check) {
  testing::KernelEnvironment restore;
  for (cpu::Isa isa : testing::available_isas()) {
    for (int threads : {1, 2}) {
      SCOPED_TRACE(std::string("flash, ") + cpu::isa_name(isa) + ", threads " +
                   std::to_string(threads));
      cpu::force_isa(isa);
      set_num_threads(threads);
      check();
    }
  }
}

// `variant` on the reference, then on the fused kernel for every ISA and thread count, against
// `expected`.
void expect_variant_matches(const Inputs& in, AttentionOptions variant, const Results& expected,
                            bool sinks = false) {
  variant.backend = Backend::reference;
  {
    SCOPED_TRACE("reference");
    expect_close(run(in, variant), expected, sinks);
  }
  variant.backend = Backend::flash;
  on_every_fused_setup([&] { expect_close(run(in, variant), expected, sinks); });
}

// A (B, N, M) additive mask with f(b, i, j) in it.
template <typename F>
Tensor mask_of(int64_t b, int64_t n, int64_t m, F f) {
  Tensor mask({b, n, m});
  for (int64_t g = 0; g < b; ++g) {
    for (int64_t i = 0; i < n; ++i) {
      for (int64_t j = 0; j < m; ++j) mask.at({g, i, j}) = f(g, i, j);
    }
  }
  return mask;
}

TEST(ModernVariants, SlidingWindowEqualsItsMask) {
  struct Case {
    int64_t n, m, window, offset;
    bool causal;
  };
  for (const Case& c :
       {Case{200, 200, 0, 0, true}, Case{200, 200, 37, 0, true}, Case{130, 330, 64, 200, true},
        Case{150, 150, 20, 0, false}, Case{3, 500, 100, 497, true}}) {
    SCOPED_TRACE("N=" + std::to_string(c.n) + " M=" + std::to_string(c.m) + " window " +
                 std::to_string(c.window) + " offset " + std::to_string(c.offset) +
                 (c.causal ? " causal" : ""));
    const Inputs in = make_inputs(4, 2, c.n, c.m, 16, 8, 3);
    const Tensor mask = mask_of(4, c.n, c.m, [&](int64_t, int64_t i, int64_t j) {
      const int64_t pos = i + c.offset;
      return (j < pos - c.window || (c.causal && j > pos)) ? -kInf : 0.0f;
    });
    const Results expected = run(in, {.additive_mask = mask, .backend = Backend::reference});
    expect_variant_matches(
        in, {.causal = c.causal, .query_offset = c.offset, .window_left = c.window}, expected);
  }
}

TEST(ModernVariants, AlibiEqualsItsBiasAsAMask) {
  const int64_t b = 4, n = 90, m = 140, offset = 50;
  const Inputs in = make_inputs(b, 4, n, m, 16, 16, 7);
  const Tensor slopes = Tensor({4}, {0.5f, 0.25f, 0.125f, 0.0625f});
  for (bool causal : {false, true}) {
    SCOPED_TRACE(causal ? "causal" : "not causal");
    const Tensor mask = mask_of(b, n, m, [&](int64_t g, int64_t i, int64_t j) {
      return -slopes[g] * static_cast<float>(std::abs(i + offset - j));
    });
    const Results expected = run(in, {.causal = causal,
                                      .query_offset = offset,
                                      .additive_mask = mask,
                                      .backend = Backend::reference});
    expect_variant_matches(in, {.causal = causal, .query_offset = offset, .alibi_slopes = slopes},
                           expected);
  }
}

TEST(ModernVariants, AlibiDistancesStayExactFarIntoTheSequence) {
  // Queries 2^24 + 5 positions in (a KV cache that long): distances beyond float's exact
  // integers must still be the int64 distance rounded once.
  const int64_t b = 2, n = 70, m = 100, offset = (int64_t{1} << 24) + 5;
  const Inputs in = make_inputs(b, b, n, m, 16, 16, 8);
  const Tensor slopes = Tensor({2}, {1e-6f, 3e-7f});
  const Tensor mask = mask_of(b, n, m, [&](int64_t g, int64_t i, int64_t j) {
    return -slopes[g] * static_cast<float>(std::abs(i + offset - j));
  });
  const Results expected =
      run(in, {.query_offset = offset, .additive_mask = mask, .backend = Backend::reference});
  expect_variant_matches(in, {.query_offset = offset, .alibi_slopes = slopes}, expected);
}

TEST(ModernVariants, AnInfiniteSinkGivesNanRowsOnEveryPath) {
  // The unsplit kernel, the key split's merge (1 query on 4096 keys) and no keys at all agree:
  // exp(inf - inf) is NaN, as a +inf score gives.
  testing::KernelEnvironment env;
  const Tensor sinks = Tensor({1}, {std::numeric_limits<float>::infinity()});
  for (int64_t m : {int64_t{64}, int64_t{4096}, int64_t{0}}) {
    SCOPED_TRACE("keys " + std::to_string(m));
    const Inputs in = make_inputs(1, 1, 1, m, 16, 16, 9);
    Tensor out({1, 1, 16}), lse({1, 1});
    AttentionOptions o;
    o.sinks = sinks;
    o.backend = Backend::flash;
    attention_forward(in.q, in.k, in.v, out, lse, o);
    EXPECT_TRUE(std::isnan(out[0]) && std::isnan(lse[0])) << out[0] << " " << lse[0];
  }
}

TEST(ModernVariants, SoftcapMatchesScoresComputedInDouble) {
  const int64_t b = 2, n = 70, m = 100, d = 16;
  const float cap = 2.0f;
  // Scores up to about 16 / sqrt(16) * 4 = 16, well past the cap.
  const Inputs in = make_inputs(b, b, n, m, d, d, 11, 2.0f);
  Tensor want_out({b, n, d});
  for (int64_t g = 0; g < b; ++g) {
    for (int64_t i = 0; i < n; ++i) {
      std::vector<double> s(static_cast<size_t>(m));
      double max = -1e300, sum = 0;
      for (int64_t j = 0; j < m; ++j) {
        double dot = 0;
        for (int64_t c = 0; c < d; ++c) dot += double(in.q.at({g, i, c})) * in.k.at({g, j, c});
        s[j] = cap * std::tanh(dot / 4.0 / cap);
        max = std::max(max, s[j]);
      }
      for (int64_t j = 0; j < m; ++j) sum += std::exp(s[j] - max);
      for (int64_t c = 0; c < d; ++c) {
        double o = 0;
        for (int64_t j = 0; j < m; ++j) o += std::exp(s[j] - max) / sum * in.v.at({g, j, c});
        want_out.at({g, i, c}) = static_cast<float>(o);
      }
    }
  }
  const AttentionOptions o{.backend = Backend::reference, .softcap = cap};
  const Results reference = run(in, o);
  EXPECT_TRUE(kernel_close(reference.out, want_out));
  // The gradient: the reference's, checked against finite differences of sum(out * dout).
  const auto loss = [&](const Tensor& q) {
    Tensor out({b, n, d}), lse({b, n});
    attention_forward(q, in.k, in.v, out, lse, o);
    double total = 0;
    for (int64_t e = 0; e < out.numel(); ++e) total += double(out[e]) * in.dout[e];
    return total;
  };
  for (int64_t e : {int64_t{0}, int64_t{333}, int64_t{2 * n * d - 1}}) {
    Tensor plus = in.q, minus = in.q;
    plus[e] += 1e-2f;
    minus[e] -= 1e-2f;
    const double numeric = (loss(plus) - loss(minus)) / 2e-2;
    EXPECT_NEAR(reference.dq[e], numeric, 2e-3 * std::max(1.0, std::abs(numeric))) << e;
  }
  const Results causal = run(in, {.causal = true, .backend = Backend::reference, .softcap = cap});
  expect_variant_matches(in, {.causal = true, .softcap = cap}, causal);
}

TEST(ModernVariants, SinkEqualsAnExtraKeyWithZeroValue) {
  const int64_t b = 3, n = 100, m = 150, d = 16;
  const Inputs in = make_inputs(b, b, n, m, d, d, 13);
  const Tensor sinks = Tensor({b}, {1.5f, -0.5f, 4.0f});
  // k and v with a zero key (score 0) and a zero value appended; the mask gives the extra key
  // the sink's logit.
  Inputs extra{in.q, Tensor({b, m + 1, d}), Tensor({b, m + 1, d}), in.dout};
  for (int64_t g = 0; g < b; ++g) {
    for (int64_t j = 0; j < m; ++j) {
      for (int64_t c = 0; c < d; ++c) {
        extra.k.at({g, j, c}) = in.k.at({g, j, c});
        extra.v.at({g, j, c}) = in.v.at({g, j, c});
      }
    }
  }
  for (bool causal : {false, true}) {
    SCOPED_TRACE(causal ? "causal" : "not causal");
    // The causal mask written out, since the extra key sits at the end.
    const Tensor mask = mask_of(b, n, m + 1, [&](int64_t g, int64_t i, int64_t j) {
      if (j == m) return sinks[g];
      return causal && j > i ? -kInf : 0.0f;
    });
    const Results with_key = run(extra, {.additive_mask = mask, .backend = Backend::reference});
    Results expected{with_key.out,      with_key.lse,      Tensor({b, n, m}), with_key.dq,
                     Tensor({b, m, d}), Tensor({b, m, d}), Tensor({b})};
    for (int64_t g = 0; g < b; ++g) {
      for (int64_t j = 0; j < m; ++j) {
        for (int64_t i = 0; i < n; ++i) expected.probs.at({g, i, j}) = with_key.probs.at({g, i, j});
        for (int64_t c = 0; c < d; ++c) {
          expected.dk.at({g, j, c}) = with_key.dk.at({g, j, c});
          expected.dv.at({g, j, c}) = with_key.dv.at({g, j, c});
        }
      }
    }
    // dsinks by central differences of sum(out * dout) in each sink.
    for (int64_t h = 0; h < b; ++h) {
      const auto loss = [&](float delta) {
        Tensor s = sinks;
        s[h] += delta;
        Tensor out({b, n, d}), lse({b, n});
        attention_forward(in.q, in.k, in.v, out, lse,
                          {.causal = causal, .backend = Backend::reference, .sinks = s});
        double total = 0;
        for (int64_t e = 0; e < out.numel(); ++e) total += double(out[e]) * in.dout[e];
        return total;
      };
      expected.dsinks[h] = static_cast<float>((loss(1e-2f) - loss(-1e-2f)) / 2e-2);
    }
    // Finite differences are good to about 1e-5 here: compare dsinks on their own first.
    const Results reference =
        run(in, {.causal = causal, .backend = Backend::reference, .sinks = sinks});
    for (int64_t h = 0; h < b; ++h) {
      EXPECT_NEAR(reference.dsinks[h], expected.dsinks[h], 1e-4) << "sink " << h;
    }
    expected.dsinks = reference.dsinks;
    expect_variant_matches(in, {.causal = causal, .sinks = sinks}, expected, true);
  }
}

TEST(ModernVariants, AFullyHiddenRowWithASinkGivesZerosAndTheSinkAsLse) {
  const Inputs in = make_inputs(1, 1, 4, 0, 8, 8, 17);
  const Tensor sinks = Tensor({1}, {0.75f});
  for (Backend backend : {Backend::reference, Backend::flash}) {
    Tensor out({1, 4, 8}), lse({1, 4});
    attention_forward(in.q, in.k, in.v, out, lse, {.backend = backend, .sinks = sinks});
    for (int64_t e = 0; e < out.numel(); ++e) EXPECT_EQ(out[e], 0.0f);
    for (int64_t i = 0; i < 4; ++i) EXPECT_EQ(lse[i], 0.75f);
  }
}

// A window, GQA (8 query heads on 2 key/value heads), a softcap, ALiBi and sinks in one rank-4
// call: the fused kernel against the reference.
TEST(ModernVariants, CombinedVariantsAgreeBetweenBackends) {
  const int64_t b = 2, h = 8, g = 2, n = 150, m = 150, d = 32;
  Generator gen(19);
  const Inputs in{gen.uniform({b, h, n, d}, -1.5, 1.5), gen.uniform({b, g, m, d}, -1.5, 1.5),
                  gen.uniform({b, g, m, d}, -1, 1), gen.uniform({b, h, n, d}, -1, 1)};
  const Tensor slopes = gen.uniform({h}, 0.0, 0.2), sinks = gen.uniform({h}, -1, 2);
  AttentionOptions o{.causal = true,
                     .backend = Backend::reference,
                     .window_left = 40,
                     .softcap = 3.0f,
                     .alibi_slopes = slopes,
                     .sinks = sinks};
  const auto run4 = [&](const AttentionOptions& opts) {
    Results r{Tensor({b, h, n, d}), Tensor({b, h, n}),    Tensor({b, h, n, m}),
              Tensor(in.q.shape()), Tensor(in.k.shape()), Tensor(in.v.shape()),
              Tensor({h})};
    attention_forward(in.q, in.k, in.v, r.out, r.lse, opts);
    attention_probabilities(in.q, in.k, r.lse, r.probs, opts);
    attention_backward(in.q, in.k, in.v, r.out, r.lse, in.dout, r.dq, r.dk, r.dv, r.dsinks, opts);
    return r;
  };
  const Results expected = run4(o);
  o.backend = Backend::flash;
  on_every_fused_setup([&] { expect_close(run4(o), expected, true); });
}

// A decode step (one query per head on many keys) splits the keys into chunks merged by their
// log-sum-exp; the sink and the window must survive the merge.
TEST(ModernVariants, SinksAndWindowSurviveTheDecodeKeySplit) {
  const int64_t b = 2, n = 1, m = 1100, d = 16;
  const Inputs in = make_inputs(b, b, n, m, d, d, 31);
  const Tensor sinks({b}, {2.0f, -1.0f});
  for (int64_t window : {int64_t{-1}, int64_t{700}}) {
    SCOPED_TRACE("window " + std::to_string(window));
    AttentionOptions o{.causal = true,
                       .query_offset = m - 1,
                       .backend = Backend::reference,
                       .window_left = window,
                       .sinks = sinks};
    const Results expected = run(in, o);
    expect_variant_matches(in, o, expected, true);
  }
}

// Rows [begin, end) of a packed (T, H, X) tensor as a contiguous (H, end - begin, X) one.
Tensor unpack(const Tensor& t, int64_t begin, int64_t end) {
  const int64_t heads = t.size(1), x = t.size(2);
  Tensor out({heads, end - begin, x});
  for (int64_t r = begin; r < end; ++r) {
    for (int64_t h = 0; h < heads; ++h) {
      for (int64_t c = 0; c < x; ++c) out.at({h, r - begin, c}) = t.at({r, h, c});
    }
  }
  return out;
}

// Copies a contiguous (H, rows, X) tensor into rows [begin, ...) of a packed (T, H, X) one.
void pack_into(const Tensor& part, int64_t begin, Tensor& packed) {
  for (int64_t h = 0; h < part.size(0); ++h) {
    for (int64_t r = 0; r < part.size(1); ++r) {
      for (int64_t c = 0; c < part.size(2); ++c) {
        packed.at({begin + r, h, c}) = part.at({h, r, c});
      }
    }
  }
}

TEST(ModernVariants, PackedSequencesEqualOneCallPerSequence) {
  // (queries, keys) per sequence: empty ones, one longer than a block, one query on many keys.
  const std::vector<std::pair<int64_t, int64_t>> lengths = {{37, 37},   {0, 5}, {70, 70}, {1, 130},
                                                            {100, 100}, {3, 0}, {64, 64}};
  std::vector<int64_t> cu_q = {0}, cu_k = {0};
  for (auto [nq, nk] : lengths) {
    cu_q.push_back(cu_q.back() + nq);
    cu_k.push_back(cu_k.back() + nk);
  }
  const int64_t tq = cu_q.back(), tk = cu_k.back(), h = 4, g = 2, d = 16;
  Generator gen(23);
  const Tensor q = gen.uniform({tq, h, d}, -1, 1), k = gen.uniform({tk, g, d}, -1, 1),
               v = gen.uniform({tk, g, d}, -1, 1), dout = gen.uniform({tq, h, d}, -1, 1);
  const Tensor sinks = gen.uniform({h}, -1, 1);
  struct Case {
    bool causal;
    int64_t window;
    bool sinks;
  };
  for (const Case& c : {Case{false, -1, false}, Case{true, -1, false}, Case{true, 20, true}}) {
    SCOPED_TRACE(std::string(c.causal ? "causal" : "not causal") + " window " +
                 std::to_string(c.window) + (c.sinks ? " sinks" : ""));
    AttentionOptions o{.causal = c.causal, .backend = Backend::reference, .window_left = c.window};
    if (c.sinks) o.sinks = sinks;
    // Expected: each sequence alone, bottom-right aligned (query_offset = keys - queries).
    Tensor want_out({tq, h, d}), want_lse({h, tq}), want_dq({tq, h, d}), want_dk({tk, g, d}),
        want_dv({tk, g, d}), want_dsinks({h});
    for (size_t s = 0; s < lengths.size(); ++s) {
      const auto [nq, nk] = lengths[s];
      if (nq == 0) continue;
      AttentionOptions one = o;
      one.query_offset = nk - nq >= 0 ? nk - nq : 0;
      if (nk < nq && c.causal) continue;  // not in the cases above
      const Tensor qs = unpack(q, cu_q[s], cu_q[s + 1]), ks = unpack(k, cu_k[s], cu_k[s + 1]),
                   vs = unpack(v, cu_k[s], cu_k[s + 1]), ds = unpack(dout, cu_q[s], cu_q[s + 1]);
      Tensor out({h, nq, d}), lse({h, nq}), dq({h, nq, d}), dk({g, nk, d}), dv({g, nk, d}),
          dsinks({h});
      attention_forward(qs, ks, vs, out, lse, one);
      attention_backward(qs, ks, vs, out, lse, ds, dq, dk, dv,
                         c.sinks ? dsinks.view() : TensorView(), one);
      pack_into(out, cu_q[s], want_out);
      pack_into(dq, cu_q[s], want_dq);
      pack_into(dk, cu_k[s], want_dk);
      pack_into(dv, cu_k[s], want_dv);
      for (int64_t hh = 0; hh < h; ++hh) {
        want_dsinks[hh] += dsinks[hh];
        for (int64_t i = 0; i < nq; ++i) want_lse.at({hh, cu_q[s] + i}) = lse.at({hh, i});
      }
    }
    // The sequence with no keys: zeros, lse -inf (or the sink).
    for (int64_t i = cu_q[5]; i < cu_q[6]; ++i) {
      for (int64_t hh = 0; hh < h; ++hh) want_lse.at({hh, i}) = c.sinks ? sinks[hh] : -kInf;
    }
    const auto check = [&](const AttentionOptions& opts) {
      Tensor out({tq, h, d}), lse({h, tq}), dq({tq, h, d}), dk({tk, g, d}), dv({tk, g, d}),
          dsinks({h});
      attention_forward_varlen(q, k, v, cu_q, cu_k, out, lse, opts);
      attention_backward_varlen(q, k, v, cu_q, cu_k, out, lse, dout, dq, dk, dv,
                                c.sinks ? dsinks.view() : TensorView(), opts);
      EXPECT_TRUE(kernel_close(out, want_out)) << "out";
      EXPECT_TRUE(kernel_close(lse, want_lse)) << "lse";
      EXPECT_TRUE(kernel_close(dq, want_dq)) << "dq";
      EXPECT_TRUE(kernel_close(dk, want_dk)) << "dk";
      EXPECT_TRUE(kernel_close(dv, want_dv)) << "dv";
      if (c.sinks) EXPECT_TRUE(kernel_close(dsinks, want_dsinks)) << "dsinks";
    };
    {
      SCOPED_TRACE("reference");
      check(o);
    }
    o.backend = Backend::flash;
    on_every_fused_setup([&] { check(o); });
  }
}

// Runs f and returns the ArgumentError's message, or "" when none was thrown.
template <typename F>
std::string argument_error(F f) {
  try {
    f();
  } catch (const ArgumentError& e) {
    return e.what();
  }
  return "";
}

TEST(ModernVariants, BadArgumentsNameWhatWasWrong) {
  const Inputs in = make_inputs(2, 2, 5, 6, 4, 4, 29);
  Tensor out({2, 5, 4}), lse({2, 5});
  const auto forward = [&](const AttentionOptions& o) {
    return argument_error([&] { attention_forward(in.q, in.k, in.v, out, lse, o); });
  };
  EXPECT_NE(forward({.window_left = -2}).find("window_left must be >= 0"), std::string::npos);
  EXPECT_NE(forward({.softcap = -1.0f}).find("softcap must be positive"), std::string::npos);
  EXPECT_NE(forward({.softcap = kInf}).find("softcap must be positive"), std::string::npos);
  const Tensor three({3});
  EXPECT_NE(forward({.alibi_slopes = three}).find("alibi_slopes must have shape [2]"),
            std::string::npos);
  EXPECT_NE(forward({.sinks = three}).find("sinks must have shape [2]"), std::string::npos);
  Tensor dq(in.q.shape()), dk(in.k.shape()), dv(in.v.shape()), dsinks({2});
  attention_forward(in.q, in.k, in.v, out, lse, {});
  EXPECT_NE(argument_error([&] {
              attention_backward(in.q, in.k, in.v, out, lse, in.dout, dq, dk, dv, dsinks, {});
            }).find("dsinks given without sinks"),
            std::string::npos);

  const Tensor q = Generator(1).uniform({10, 2, 4}, -1, 1), k = q, v = q;
  Tensor vout({10, 2, 4}), vlse({2, 10});
  const auto varlen = [&](std::vector<int64_t> cq, std::vector<int64_t> ck,
                          const AttentionOptions& o) {
    return argument_error([&] { attention_forward_varlen(q, k, v, cq, ck, vout, vlse, o); });
  };
  EXPECT_NE(varlen({0, 4, 9}, {0, 4, 10}, {}).find("cu_seqlens_q must run from 0 to 10"),
            std::string::npos);
  EXPECT_NE(varlen({0, 6, 4, 10}, {0, 4, 6, 10}, {}).find("cu_seqlens_q must be nondecreasing"),
            std::string::npos);
  EXPECT_NE(varlen({0, 10}, {0, 4, 10}, {}).find("same length"), std::string::npos);
  EXPECT_NE(varlen({0, 10}, {0, 10}, {.query_offset = 1}).find("query_offset must be 0"),
            std::string::npos);
  const Tensor mask({10, 10});
  EXPECT_NE(varlen({0, 10}, {0, 10}, {.additive_mask = mask}).find("additive_mask is not"),
            std::string::npos);
  Tensor bad_lse({10, 2});
  EXPECT_NE(argument_error([&] {
              attention_forward_varlen(q, k, v, std::vector<int64_t>{0, 10},
                                       std::vector<int64_t>{0, 10}, vout, bad_lse, {});
            }).find("lse must have shape [2, 10]"),
            std::string::npos);
}

}  // namespace
}  // namespace llm_utils
