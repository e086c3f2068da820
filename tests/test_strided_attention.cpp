// The kernel API on strided layouts: heads read in place from one packed projection
// (B, N, (H + 2G) * hd) and written into a merged (B, N, H * hd) buffer, rank-4 (B, H, N, d)
// calls with grouped keys, strided lse, probs and masks; the empty shapes; and the checks that
// keep outputs off inputs. Every layout is compared with the same call on contiguous copies, on
// both backends, the fused kernel on every ISA with one and two threads.

#include <gtest/gtest.h>

#include <algorithm>
#include <cmath>
#include <limits>
#include <string>
#include <vector>

#include "kernel_test_util.hpp"
#include "kernels/memory_overlap.hpp"

namespace llm_utils {
namespace {

using testing::kernel_close;

constexpr float kInf = std::numeric_limits<float>::infinity();

struct Sizes {
  int64_t b, h, g, n, hd;
  bool causal;
};

std::string name(const Sizes& s) {
  return "B=" + std::to_string(s.b) + " H=" + std::to_string(s.h) + " G=" + std::to_string(s.g) +
         " N=" + std::to_string(s.n) + " hd=" + std::to_string(s.hd) + (s.causal ? " causal" : "");
}

// The heads of a packed (B, N, W) buffer: `count` heads of hd columns from column `first`, as
// (B, count, N, hd) with strides (N * W, hd, W, 1).
template <typename T>
BasicTensorView<T> heads_of(T* packed, const Sizes& s, int64_t width, int64_t first,
                            int64_t count) {
  return BasicTensorView<T>(packed + first, {s.b, count, s.n, s.hd}, {s.n * width, s.hd, width, 1});
}

struct Outputs {
  Tensor out, lse, probs, dq, dk, dv;
};

// Forward, probabilities and backward on whatever views are given; results copied out
// contiguous.
Outputs run(ConstTensorView q, ConstTensorView k, ConstTensorView v, TensorView out, TensorView lse,
            TensorView probs, ConstTensorView dout, TensorView dq, TensorView dk, TensorView dv,
            const AttentionOptions& o) {
  attention_forward(q, k, v, out, lse, o);
  attention_probabilities(q, k, lse, probs, o);
  attention_backward(q, k, v, out, lse, dout, dq, dk, dv, o);
  return {Tensor::from_view(out), Tensor::from_view(lse), Tensor::from_view(probs),
          Tensor::from_view(dq),  Tensor::from_view(dk),  Tensor::from_view(dv)};
}

void expect_close(const Outputs& got, const Outputs& want) {
  EXPECT_TRUE(kernel_close(got.out, want.out)) << "out";
  EXPECT_TRUE(kernel_close(got.lse, want.lse)) << "lse";
  EXPECT_TRUE(kernel_close(got.probs, want.probs)) << "probs";
  EXPECT_TRUE(kernel_close(got.dq, want.dq)) << "dq";
  EXPECT_TRUE(kernel_close(got.dk, want.dk)) << "dk";
  EXPECT_TRUE(kernel_close(got.dv, want.dv)) << "dv";
}

// Calls `body` with the reference, then the fused kernel on every ISA with 1 and 2 threads.
template <typename F>
void on_every_backend(AttentionOptions o, F&& body) {
  o.backend = Backend::reference;
  {
    SCOPED_TRACE("reference");
    body(o);
  }
  o.backend = Backend::flash;
  testing::KernelEnvironment restore;
  for (cpu::Isa isa : testing::available_isas()) {
    for (int threads : {1, 2}) {
      SCOPED_TRACE(std::string("flash, ") + cpu::isa_name(isa) + ", threads " +
                   std::to_string(threads));
      cpu::force_isa(isa);
      set_num_threads(threads);
      body(o);
    }
  }
}

TEST(StridedAttention, PackedProjectionHeadsEqualContiguousCopies) {
  // Key/value heads B * G from 2 to 8: the fused backward's by-key-block schedule and (from 4
  // per thread) its by-head one.
  for (const Sizes& s :
       {Sizes{2, 4, 2, 70, 16, true}, Sizes{1, 3, 3, 130, 8, false}, Sizes{2, 2, 1, 65, 32, true},
        Sizes{3, 1, 1, 1, 8, false}, Sizes{2, 8, 4, 70, 16, true}}) {
    SCOPED_TRACE(name(s));
    const int64_t width = (s.h + 2 * s.g) * s.hd, merged_width = s.h * s.hd;
    Generator gen(7);
    const Tensor qkv = gen.uniform({s.b, s.n, width}, -1, 1);             // (B, N, W)
    const Tensor dmerged = gen.uniform({s.b, s.n, merged_width}, -1, 1);  // (B, N, H*hd)
    const ConstTensorView q = heads_of(qkv.data(), s, width, 0, s.h);
    const ConstTensorView k = heads_of(qkv.data(), s, width, s.h * s.hd, s.g);
    const ConstTensorView v = heads_of(qkv.data(), s, width, (s.h + s.g) * s.hd, s.g);
    const ConstTensorView dout = heads_of(dmerged.data(), s, merged_width, 0, s.h);
    // The contiguous twins.
    const Tensor qc = Tensor::from_view(q), kc = Tensor::from_view(k), vc = Tensor::from_view(v);
    const Tensor doutc = Tensor::from_view(dout);
    on_every_backend({.causal = s.causal}, [&](const AttentionOptions& o) {
      Tensor out_c({s.b, s.h, s.n, s.hd}), lse_c({s.b, s.h, s.n}), probs_c({s.b, s.h, s.n, s.n});
      Tensor dq_c(qc.shape()), dk_c(kc.shape()), dv_c(vc.shape());
      const Outputs want = run(qc, kc, vc, out_c, lse_c, probs_c, doutc, dq_c, dk_c, dv_c, o);
      // Output into a merged (B, N, H*hd) buffer, lse every other element, probs rows padded,
      // gradients into one packed (B, N, W) buffer.
      Tensor merged({s.b, s.n, merged_width}), lse_buf({s.b, s.h, s.n, 2});
      Tensor probs_buf({s.b, s.h, s.n, s.n + 3}), dqkv({s.b, s.n, width});
      const TensorView lse(lse_buf.data(), {s.b, s.h, s.n}, {s.h * s.n * 2, s.n * 2, 2});
      const TensorView probs(probs_buf.data(), {s.b, s.h, s.n, s.n},
                             {s.h * s.n * (s.n + 3), s.n * (s.n + 3), s.n + 3, 1});
      const Outputs got = run(q, k, v, heads_of(merged.data(), s, merged_width, 0, s.h), lse, probs,
                              dout, heads_of(dqkv.data(), s, width, 0, s.h),
                              heads_of(dqkv.data(), s, width, s.h * s.hd, s.g),
                              heads_of(dqkv.data(), s, width, (s.h + s.g) * s.hd, s.g), o);
      expect_close(got, want);
    });
  }
}

// Rank 4 with grouped keys is, per batch element, the rank-3 call over its heads.
TEST(StridedAttention, RankFourEqualsRankThreePerBatchElement) {
  const int64_t b = 2, h = 6, g = 2, n = 70, m = 90, d = 16;
  Generator gen(3);
  const Tensor q = gen.uniform({b, h, n, d}, -1, 1), k = gen.uniform({b, g, m, d}, -1, 1);
  const Tensor v = gen.uniform({b, g, m, d}, -1, 1), dout = gen.uniform({b, h, n, d}, -1, 1);
  const Tensor mask = gen.uniform({h, 1, m}, -2, 0);  // (H, 1, M): per head, every query
  on_every_backend({.causal = true, .query_offset = 20}, [&](AttentionOptions o) {
    Outputs want{Tensor({b, h, n, d}), Tensor({b, h, n}), Tensor({b, h, n, m}),
                 Tensor(q.shape()),    Tensor(k.shape()), Tensor(v.shape())};
    for (int64_t i = 0; i < b; ++i) {
      Tensor out({h, n, d}), lse({h, n}), probs({h, n, m}), dq({h, n, d}), dk({g, m, d}),
          dv({g, m, d});
      AttentionOptions per_batch = o;
      per_batch.additive_mask = mask;
      const Outputs r = run(q.select(i), k.select(i), v.select(i), out, lse, probs, dout.select(i),
                            dq, dk, dv, per_batch);
      const auto put = [i](Tensor& all, const Tensor& part) {
        std::copy(part.begin(), part.end(), all.data() + i * part.numel());
      };
      put(want.out, r.out);
      put(want.lse, r.lse);
      put(want.probs, r.probs);
      put(want.dq, r.dq);
      put(want.dk, r.dk);
      put(want.dv, r.dv);
    }
    Tensor out({b, h, n, d}), lse({b, h, n}), probs({b, h, n, m}), dq(q.shape()), dk(k.shape()),
        dv(v.shape());
    o.additive_mask = mask;  // rank 3 against (B, H, N, M): (H, 1, M) aligned right
    expect_close(run(q, k, v, out, lse, probs, dout, dq, dk, dv, o), want);
  });
}

TEST(StridedAttention, ExpandedMaskViewEqualsTheMaterialisedMask) {
  const int64_t b = 2, h = 3, n = 70, m = 70, d = 8;
  Generator gen(11);
  const Tensor q = gen.uniform({b, h, n, d}, -1, 1), k = gen.uniform({b, h, m, d}, -1, 1);
  const Tensor v = gen.uniform({b, h, m, d}, -1, 1), dout = gen.uniform({b, h, n, d}, -1, 1);
  Tensor padding({b, m});  // key padding: the last keys of batch element 1 hidden
  for (int64_t j = 50; j < m; ++j) padding.at({1, j}) = -kInf;
  // (B, H, N, M) by strides (M, 0, 0, 1): nothing copied.
  const ConstTensorView expanded(padding.data(), {b, h, n, m}, {m, 0, 0, 1});
  const Tensor materialised = Tensor::from_view(expanded);
  on_every_backend({}, [&](AttentionOptions o) {
    Tensor out({b, h, n, d}), lse({b, h, n}), probs({b, h, n, m}), dq(q.shape()), dk(k.shape()),
        dv(v.shape());
    o.additive_mask = materialised;
    const Outputs want = run(q, k, v, out, lse, probs, dout, dq, dk, dv, o);
    o.additive_mask = expanded;
    expect_close(run(q, k, v, out, lse, probs, dout, dq, dk, dv, o), want);
  });
}

TEST(StridedAttention, RowsMustBeContiguous) {
  Tensor buf({4, 8, 2}), out({4, 8}), lse({4});
  const ConstTensorView every_other(buf.data(), {4, 8}, {16, 2});  // stride 2 along d
  const Tensor k({4, 8});
  try {
    attention_forward(every_other, k, k, out, lse, {});
    FAIL() << "no error";
  } catch (const ArgumentError& e) {
    EXPECT_NE(std::string(e.what()).find("q must have contiguous rows"), std::string::npos)
        << e.what();
    EXPECT_NE(std::string(e.what()).find("strides [16, 2]"), std::string::npos) << e.what();
  }
}

// ---------------------------------------------------------------- empty shapes

struct EmptyCase {
  Shape q, k, v;
};

TEST(StridedAttention, EmptyShapesGiveDefinedResultsOnEveryBackend) {
  // (N = 0), (M = 0), (B = 0), (H = 0), (d = 0), (dv = 0), 2-, 3- and 4-D.
  const std::vector<EmptyCase> cases = {{{0, 4}, {5, 4}, {5, 3}},
                                        {{6, 4}, {0, 4}, {0, 3}},
                                        {{0, 6, 4}, {0, 5, 4}, {0, 5, 3}},
                                        {{0, 6, 4}, {2, 5, 4}, {2, 5, 3}},
                                        {{2, 0, 6, 4}, {2, 0, 5, 4}, {2, 0, 5, 3}},
                                        {{0, 2, 6, 4}, {0, 1, 5, 4}, {0, 1, 5, 3}},
                                        {{2, 6, 0}, {2, 5, 0}, {2, 5, 3}},
                                        {{2, 6, 4}, {2, 5, 4}, {2, 5, 0}},
                                        {{2, 2, 70, 4}, {2, 1, 0, 4}, {2, 1, 0, 3}}};
  for (const EmptyCase& c : cases) {
    SCOPED_TRACE("q " + shape_to_string(c.q) + " k " + shape_to_string(c.k));
    Generator gen(1);
    const Tensor q = gen.uniform(c.q, -1, 1), k = gen.uniform(c.k, -1, 1),
                 v = gen.uniform(c.v, -1, 1);
    Shape out_shape = c.q, lse_shape(c.q.begin(), c.q.end() - 1), probs_shape = c.q;
    out_shape.back() = c.v.back();
    probs_shape.back() = c.k[c.k.size() - 2];
    const Tensor dout = gen.uniform(out_shape, -1, 1);
    const int64_t m = c.k[c.k.size() - 2], d = c.q.back();
    on_every_backend({.causal = true}, [&](const AttentionOptions& o) {
      Tensor out = Tensor::full(out_shape, 7.0f), lse = Tensor::full(lse_shape, 7.0f);
      Tensor probs = Tensor::full(probs_shape, 7.0f), dq = Tensor::full(q.shape(), 7.0f);
      Tensor dk = Tensor::full(k.shape(), 7.0f), dv = Tensor::full(v.shape(), 7.0f);
      run(q, k, v, out, lse, probs, dout, dq, dk, dv, o);
      if (m == 0) {  // no key: zero rows, lse -inf, no gradient for q
        for (float x : out) EXPECT_EQ(x, 0.0f);
        for (float x : lse) EXPECT_EQ(x, -kInf);
        for (float x : dq) EXPECT_EQ(x, 0.0f);
      }
      if (d == 0 && m > 0) {
        // Every score is 0: a uniform softmax over the visible keys, the causal row i over
        // min(i + 1, M) of them, and out the mean of their values (here 3-D, one k/v per q).
        const int64_t n = lse.size(-1), dv_size = v.size(-1);
        for (int64_t i = 0; i < lse.numel(); ++i) {
          const int64_t head = i / n, row = i % n, seen = std::min(row + 1, m);
          EXPECT_NEAR(lse[i], std::log(double(seen)), 1e-6);
          for (int64_t c = 0; c < dv_size; ++c) {
            double mean = 0.0;
            for (int64_t j = 0; j < seen; ++j) mean += v.at({head, j, c}) / double(seen);
            EXPECT_NEAR(out[i * dv_size + c], mean, 1e-6);
          }
        }
      }
      // No query at all: keys and values get zero gradients.
      if (out.numel() == 0 && c.q.back() != 0 && c.v.back() != 0) {
        for (float x : dk) EXPECT_EQ(x, 0.0f);
        for (float x : dv) EXPECT_EQ(x, 0.0f);
      }
    });
  }
}

TEST(StridedAttention, ZeroHeadDimensionValuesGiveEmptyOutputsAndRealLse) {
  Generator gen(2);
  const Tensor q = gen.uniform({70, 4}, -1, 1), k = gen.uniform({70, 4}, -1, 1);
  const Tensor v({70, 0});
  on_every_backend({}, [&](const AttentionOptions& o) {
    Tensor out({70, 0}), lse({70}), want_out({70, 4}), want_lse({70});
    attention_forward(q, k, v, out, lse, o);
    attention_forward(q, k, k, want_out, want_lse, o);
    EXPECT_TRUE(kernel_close(lse, want_lse));
  });
}

// ---------------------------------------------------------------- overlap checks

TEST(StridedAttention, OutputsThatShareMemoryWithInputsOrEachOtherAreRefused) {
  Generator gen(4);
  Tensor q = gen.uniform({2, 8, 4}, -1, 1), k = gen.uniform({2, 8, 4}, -1, 1);
  Tensor v = gen.uniform({2, 8, 4}, -1, 1), lse({2, 8});
  const auto message = [](auto&& f) { return testing::argument_error_of(f); };
  EXPECT_NE(message([&] { attention_forward(q, k, v, q, lse, {}); }).find("out overlaps q"),
            std::string::npos);
  // lse inside out: the first 16 floats of out.
  Tensor out({2, 8, 4});
  const TensorView lse_in_out(out.data(), {2, 8});
  EXPECT_NE(
      message([&] { attention_forward(q, k, v, out, lse_in_out, {}); }).find("out overlaps lse"),
      std::string::npos);
  attention_forward(q, k, v, out, lse, {});
  Tensor dq({2, 8, 4}), dv({2, 8, 4});
  EXPECT_NE(message([&] {
              attention_backward(q, k, v, out, lse, out, dq, dq, dv, {});
            }).find("dq overlaps dk"),
            std::string::npos);
  EXPECT_NE(message([&] {
              attention_backward(q, k, v, out, lse, out, dq, {}, v, {});
            }).find("dv overlaps v"),
            std::string::npos);
  const ConstTensorView mask_in_out(out.data(), {8, 8});
  EXPECT_NE(message([&] {
              attention_forward(q, k, v, out, lse, {.additive_mask = mask_in_out});
            }).find("out overlaps additive_mask"),
            std::string::npos);
}

TEST(MemoryOverlap, ProvesDisjointHeadsOfAPackedBufferAndCatchesRealOverlap) {
  using detail::may_overlap;
  const Sizes s{2, 4, 2, 10, 8, false};
  const int64_t width = (s.h + 2 * s.g) * s.hd;
  Tensor packed({s.b, s.n, width}), other({4});
  const ConstTensorView q = heads_of(packed.data(), s, width, 0, s.h);
  const ConstTensorView k = heads_of(packed.data(), s, width, s.h * s.hd, s.g);
  const ConstTensorView v = heads_of(packed.data(), s, width, (s.h + s.g) * s.hd, s.g);
  EXPECT_FALSE(may_overlap(q, k));
  EXPECT_FALSE(may_overlap(k, v));
  EXPECT_FALSE(may_overlap(v, q));
  EXPECT_FALSE(may_overlap(q, other));
  EXPECT_TRUE(may_overlap(q, q));
  // One head more than q has: its last head is k's first.
  EXPECT_TRUE(may_overlap(heads_of(packed.data(), s, width, 0, s.h + 1), k));
  // Columns shifted by one: every row meets.
  const ConstTensorView shifted(packed.data() + 1, {s.b, s.n, s.hd}, {s.n * width, width, 1});
  EXPECT_TRUE(may_overlap(shifted, heads_of(packed.data(), s, width, 0, 1).select(0)));
  // Every other float: even and odd elements never meet; two even views do.
  const ConstTensorView even(packed.data(), {8}, {2}), odd(packed.data() + 1, {8}, {2});
  EXPECT_FALSE(may_overlap(even, odd));
  EXPECT_TRUE(may_overlap(even, ConstTensorView(packed.data() + 4, {4}, {2})));
  // A broadcast (stride 0) view is its one element.
  EXPECT_FALSE(may_overlap(ConstTensorView(packed.data(), {5}, {0}), odd));
  EXPECT_FALSE(may_overlap(ConstTensorView(packed.data(), {0}), packed));
}

}  // namespace
}  // namespace llm_utils
