// The modern variants inside MultiHeadAttention (multihead_attention.hpp, rope.hpp): the RoPE
// tables against the formula in double, the rotation's backward; ALiBi's slopes; the module
// with RoPE, a window, softcap, ALiBi and sinks against the same computation composed from the
// public pieces (Linear, rope_forward, attention_forward, their backwards), in float32 and its
// bfloat16 self; packed sequences against one forward per sequence; the KV cache against one
// full forward; and the options' errors. python/tests/test_variants.py checks the module
// against PyTorch autograd.

#include <gtest/gtest.h>

#include <cmath>
#include <numbers>
#include <string>
#include <vector>

#include "test_util.hpp"

namespace llm_utils {
namespace {

using testing::all_close;
using testing::parity;

TEST(Rope, TablesFollowTheFormula) {
  const RopeTable t(8, 50, {.theta = 500.0});
  for (int64_t p : {0, 1, 17, 49}) {
    for (int64_t i = 0; i < 4; ++i) {
      const double angle = static_cast<double>(p) * std::pow(500.0, -2.0 * i / 8.0);
      EXPECT_NEAR(t.cos(p)[i], std::cos(angle), 4e-6 * std::max(1.0, angle)) << p << " " << i;
      EXPECT_NEAR(t.sin(p)[i], std::sin(angle), 4e-6 * std::max(1.0, angle)) << p << " " << i;
    }
  }
}

TEST(Rope, Llama3ScalingDividesLongWavelengthsAndKeepsShortOnes) {
  RopeOptions o{.theta = 500000.0,
                .scaling = RopeScaling{.factor = 32.0,
                                       .low_freq_factor = 1.0,
                                       .high_freq_factor = 4.0,
                                       .original_context_length = 8192}};
  const RopeTable plain(64, 1, {.theta = 500000.0}), scaled(64, 1, o);
  for (size_t i = 0; i < 32; ++i) {
    const double f = plain.inv_freq()[i], wavelen = 2 * std::numbers::pi / f;
    const double got = scaled.inv_freq()[i];
    if (wavelen < 8192.0 / 4.0) {
      EXPECT_FLOAT_EQ(got, f);
    } else if (wavelen > 8192.0) {
      EXPECT_NEAR(got, f / 32.0, 1e-6 * f);
    } else {
      EXPECT_LT(got, f);
      EXPECT_GT(got, f / 32.0);
    }
  }
}

TEST(Rope, RotatesPairsOfHalvesAndItsBackwardIsTheInverse) {
  const RopeTable table(4, 10);
  Generator gen(3);
  const Tensor x = gen.uniform({2, 3, 5, 4}, -1, 1);  // (B, H, N, hd)
  Tensor y = x;
  rope_forward(y, table, 2);
  for (int64_t n = 0; n < 5; ++n) {
    const float* c = table.cos(2 + n);
    const float* s = table.sin(2 + n);
    const float* row = x.data() + (1 * 15 + 2 * 5 + n) * 4;  // batch 1, head 2
    const float* out = y.data() + (1 * 15 + 2 * 5 + n) * 4;
    for (int64_t i = 0; i < 2; ++i) {
      EXPECT_FLOAT_EQ(out[i], row[i] * c[i] - row[i + 2] * s[i]);
      EXPECT_FLOAT_EQ(out[i + 2], row[i + 2] * c[i] + row[i] * s[i]);
    }
  }
  rope_backward(y, table, 2);
  EXPECT_TRUE(all_close(y, x, 1e-6, 1e-6));
  EXPECT_THROW(rope_forward(y, table, 6), ArgumentError);  // positions 6..10 leave the table
  EXPECT_THROW(RopeTable(5, 10), ArgumentError);
  EXPECT_THROW(RopeTable(4, 10, {.theta = -1.0}), ArgumentError);
}

TEST(Alibi, SlopesOfThePaper) {
  const Tensor s8 = alibi_slopes(8);
  for (int64_t h = 0; h < 8; ++h) EXPECT_FLOAT_EQ(s8[h], std::exp2(-static_cast<float>(h + 1)));
  // 6 heads: the 4 of 4 heads (2^-2, 2^-4, 2^-6, 2^-8), then slopes 0 and 2 of 8 heads.
  const Tensor s6 = alibi_slopes(6);
  const float want[] = {0.25f, 0.0625f, 0.015625f, 0.00390625f, 0.5f, 0.125f};
  for (int64_t h = 0; h < 6; ++h) EXPECT_FLOAT_EQ(s6[h], want[h]) << h;
  EXPECT_THROW(alibi_slopes(0), ArgumentError);
}

// A (B, N, width) tensor's columns [h * hd, (h + 1) * hd) as (B, H, N, hd) views.
TensorView heads(Tensor& t, int64_t heads, int64_t hd) {
  const int64_t b = t.size(0), n = t.size(1), w = t.size(2);
  return TensorView(t.data(), {b, heads, n, hd}, {n * w, hd, w, 1});
}

struct Composed {
  Tensor y, dx;
  std::vector<Tensor> grads;  // sinks (if any), then W_query.{weight,bias}, ..., out_proj.*
};

// The module's forward and backward, composed from the public pieces.
Composed compose(const MultiHeadAttention& m, const Tensor& x, const Tensor& dy) {
  const int64_t b = x.size(0), n = x.size(1), h = m.num_heads(), g = m.num_kv_groups();
  const int64_t hd = m.head_dim();
  Tensor q = m.W_query(x), k = m.W_key(x), v = m.W_value(x);  // (B, N, H*hd), (B, N, G*hd)
  if (m.rope() != nullptr) {
    rope_forward(heads(q, h, hd), *m.rope());
    rope_forward(heads(k, g, hd), *m.rope());
  }
  AttentionOptions o;
  o.causal = m.causal();
  o.window_left = m.window_left();
  o.softcap = m.softcap();
  o.alibi_slopes = m.alibi_slopes();
  if (m.sinks) o.sinks = m.sinks->data();
  Tensor ctx({b, n, h * hd}), lse({b, h, n});
  attention_forward(heads(q, h, hd), heads(k, g, hd), heads(v, g, hd), heads(ctx, h, hd), lse, o);
  Composed c;
  Linear out_proj = m.out_proj;  // a copy, for its gradients
  out_proj.weight.zero_grad();
  out_proj.bias->zero_grad();
  c.y = out_proj(ctx);
  Tensor dctx = out_proj.backward(ctx, dy);
  Tensor dq(q.shape()), dk(k.shape()), dv(v.shape()), dsinks({h});
  attention_backward(heads(q, h, hd), heads(k, g, hd), heads(v, g, hd), heads(ctx, h, hd), lse,
                     heads(dctx, h, hd), heads(dq, h, hd), heads(dk, g, hd), heads(dv, g, hd),
                     m.sinks ? dsinks.view() : TensorView(), o);
  if (m.rope() != nullptr) {
    rope_backward(heads(dq, h, hd), *m.rope());
    rope_backward(heads(dk, g, hd), *m.rope());
  }
  Linear wq = m.W_query, wk = m.W_key, wv = m.W_value;
  for (Linear* l : {&wq, &wk, &wv}) {
    l->weight.zero_grad();
    if (l->bias) l->bias->zero_grad();
  }
  c.dx = wq.backward(x, dq);
  const Tensor dxk = wk.backward(x, dk), dxv = wv.backward(x, dv);
  for (int64_t i = 0; i < c.dx.numel(); ++i) c.dx[i] += dxk[i] + dxv[i];
  if (m.sinks) c.grads.push_back(dsinks);
  for (const Linear* l : {&wq, &wk, &wv, &out_proj}) {
    c.grads.push_back(Tensor::from_view(l->weight.grad()));
    if (l->bias) c.grads.push_back(Tensor::from_view(l->bias->grad()));
  }
  return c;
}

MultiHeadAttention make_variant_mha(bool rope, int64_t window, float softcap, bool alibi,
                                    bool sinks, bool causal = true) {
  MultiHeadAttentionOptions o;
  o.num_kv_groups = 2;
  o.causal = causal;
  o.window_left = window;
  o.softcap = softcap;
  o.alibi = alibi;
  o.sinks = sinks;
  if (rope) o.rope = RopeOptions{.theta = 1000.0};
  manual_seed(21);
  MultiHeadAttention m(12, 32, 80, 0.0, 4, true, o);
  if (m.sinks) m.sinks->copy_from(Generator(4).uniform({4}, -1, 1));
  return m;
}

void expect_module_equals_composition(MultiHeadAttention m) {
  Generator gen(22);
  const Tensor x = gen.uniform({2, 70, 12}, -1, 1), dy = gen.uniform({2, 70, 32}, -1, 1);
  const Composed want = compose(m, x, dy);
  for (Backend backend : {Backend::reference, Backend::flash}) {
    SCOPED_TRACE(backend_name(backend));
    m.set_backend(backend);
    m.zero_grad();
    const Tensor y = m.forward(x);
    EXPECT_TRUE(parity(y, want.y)) << "y";
    const Tensor dx = m.backward(dy);
    EXPECT_TRUE(parity(dx, want.dx)) << "dx";
    const NamedParameters params = m.named_parameters();
    ASSERT_EQ(params.size(), want.grads.size());
    for (size_t i = 0; i < params.size(); ++i) {
      EXPECT_TRUE(all_close(params[i].second.grad(), want.grads[i], 1e-4, 1e-5)) << params[i].first;
    }
  }
}

TEST(MhaVariants, EachVariantEqualsItsComposition) {
  SCOPED_TRACE("rope");
  expect_module_equals_composition(make_variant_mha(true, -1, 0.0f, false, false));
  SCOPED_TRACE("window");
  expect_module_equals_composition(make_variant_mha(false, 9, 0.0f, false, false));
  SCOPED_TRACE("softcap");
  expect_module_equals_composition(make_variant_mha(false, -1, 1.5f, false, false));
  SCOPED_TRACE("alibi");
  expect_module_equals_composition(make_variant_mha(false, -1, 0.0f, true, false));
  SCOPED_TRACE("sinks");
  expect_module_equals_composition(make_variant_mha(false, -1, 0.0f, false, true));
  SCOPED_TRACE("everything, not causal");
  expect_module_equals_composition(make_variant_mha(true, 12, 3.0f, true, true, false));
}

TEST(MhaVariants, SinksAreTheFirstEntryOfTheStateDict) {
  MultiHeadAttention m = make_variant_mha(false, -1, 0.0f, false, true);
  const NamedParameters params = m.named_parameters();
  EXPECT_EQ(params.front().first, "sinks");
  const StateDict sd = m.state_dict();
  MultiHeadAttention other = make_variant_mha(false, -1, 0.0f, false, true);
  other.sinks->copy_from(Tensor({4}));
  other.load_state_dict(sd);
  EXPECT_TRUE(testing::bit_equal(other.sinks->data(), m.sinks->data()));
}

TEST(MhaVariants, Bfloat16StaysCloseToFloat32) {
  MultiHeadAttention m = make_variant_mha(true, 20, 2.0f, false, true);
  Generator gen(23);
  const Tensor x = gen.uniform({2, 40, 12}, -1, 1), dy = gen.uniform({2, 40, 32}, -1, 1);
  const Tensor y32 = m.forward(x), dx32 = m.backward(dy);
  const Tensor dsinks32 = Tensor::from_view(m.sinks->grad());
  m.zero_grad();
  m.set_dtype(DType::bfloat16);
  const Tensor y16 = m.forward(x), dx16 = m.backward(dy);
  // bfloat16 storage: about 3 significant digits (docs/numerics.md's module bounds).
  EXPECT_TRUE(all_close(y16, y32, 0.0, 0.03 * testing::max_abs(y32)));
  EXPECT_TRUE(all_close(dx16, dx32, 0.0, 0.03 * testing::max_abs(dx32)));
  EXPECT_TRUE(all_close(m.sinks->grad(), dsinks32, 0.0, 0.03 * testing::max_abs(dsinks32)));
}

TEST(MhaVariants, PackedSequencesEqualOneForwardPerSequence) {
  // Three sequences (7, 1 and 64 tokens) with RoPE, whose positions restart in each, sinks and
  // a window.
  MultiHeadAttention m = make_variant_mha(true, 10, 0.0f, false, true);
  Generator gen(24);
  const std::vector<int64_t> cu = {0, 7, 8, 72};
  const Tensor x = gen.uniform({72, 12}, -1, 1), dy = gen.uniform({72, 32}, -1, 1);
  for (Backend backend : {Backend::reference, Backend::flash}) {
    SCOPED_TRACE(backend_name(backend));
    m.set_backend(backend);
    MultiHeadAttention each = m;
    each.zero_grad();
    m.zero_grad();
    const Tensor y = m.forward(x, {.cu_seqlens = cu});
    const Tensor dx = m.backward(dy);
    for (size_t s = 0; s + 1 < cu.size(); ++s) {
      const int64_t n = cu[s + 1] - cu[s];
      const Tensor ys = each.forward(testing::rows_of(x, cu[s], n));
      EXPECT_TRUE(parity(testing::rows_of(y, cu[s], n), ys)) << "sequence " << s;
      const Tensor dxs = each.backward(testing::rows_of(dy, cu[s], n));  // gradients add up over s
      EXPECT_TRUE(parity(testing::rows_of(dx, cu[s], n), dxs)) << "sequence " << s;
    }
    const NamedParameters got = m.named_parameters(), want = each.named_parameters();
    for (size_t i = 0; i < got.size(); ++i) {
      EXPECT_TRUE(all_close(got[i].second.grad(), want[i].second.grad(), 1e-4, 1e-5))
          << got[i].first;
    }
  }
  EXPECT_NE(testing::argument_error_of([&] {
              m.forward(x, {.cu_seqlens = std::vector<int64_t>{0, 5, 71}});
            }).find("must run from 0 to x's 72 rows"),
            std::string::npos);
  // 90 tokens in all is fine (context_length 80 bounds each sequence), 81 in one is not.
  const Tensor x90 = gen.uniform({90, 12}, -1, 1);
  EXPECT_NO_THROW(m.forward(x90, {.cu_seqlens = std::vector<int64_t>{0, 45, 90}}));
  EXPECT_NE(testing::argument_error_of([&] {
              m.forward(x90, {.cu_seqlens = std::vector<int64_t>{0, 9, 90}});
            }).find("sequence 1 of cu_seqlens has 81 tokens"),
            std::string::npos);
}

TEST(MhaVariants, KvCacheGivesTheRowsOfOneFullForward) {
  MultiHeadAttention m = make_variant_mha(true, 5, 2.0f, true, true);
  m.eval();
  Generator gen(25);
  const Tensor x = gen.uniform({2, 12, 12}, -1, 1);
  const Tensor full = m.forward(x);  // (2, 12, 32)
  // Feed 4 tokens, then one at a time.
  Tensor first({2, 4, 12});
  for (int64_t b = 0; b < 2; ++b) {
    std::copy(x.data() + b * 144, x.data() + b * 144 + 48, first.data() + b * 48);
  }
  const Tensor y0 = m.forward(first, {.use_cache = true});
  for (int64_t b = 0; b < 2; ++b) {
    EXPECT_TRUE(parity(ConstTensorView(y0.data() + b * 128, {4, 32}),
                       ConstTensorView(full.data() + b * 384, {4, 32})));
  }
  for (int64_t t = 4; t < 12; ++t) {
    Tensor step({2, 1, 12});
    for (int64_t b = 0; b < 2; ++b) {
      std::copy(x.data() + b * 144 + t * 12, x.data() + b * 144 + (t + 1) * 12,
                step.data() + b * 12);
    }
    const Tensor y = m.forward(step, {.use_cache = true});
    for (int64_t b = 0; b < 2; ++b) {
      EXPECT_TRUE(parity(ConstTensorView(y.data() + b * 32, {32}),
                         ConstTensorView(full.data() + b * 384 + t * 32, {32})))
          << "token " << t;
    }
  }
}

TEST(MhaVariants, ASinksParameterOfTheWrongShapeChangesNothing) {
  MultiHeadAttention m = make_variant_mha(false, -1, 0.0f, false, true);
  m.eval();
  const Tensor x = Generator(26).uniform({1, 5, 12}, -1, 1);
  m.forward(x, {.use_cache = true});
  m.sinks.emplace(Tensor({1}));  // one logit for four heads
  EXPECT_NE(testing::argument_error_of([&] {
              m.forward(x, {.use_cache = true});
            }).find("sinks must have shape [4]"),
            std::string::npos);
  EXPECT_EQ(m.cache_size(), 5);
  PagedKVCache cache(4, 8, 2, 8);
  const std::vector<int64_t> ids = {cache.add_sequence()};
  EXPECT_THROW(m.forward(x, {.paged_cache = &cache, .sequence_ids = ids}), ArgumentError);
  EXPECT_EQ(cache.length(ids[0]), 0);
  EXPECT_EQ(cache.free_pages(), 4);
  EXPECT_THROW(m.forward(x), ArgumentError);
  m.sinks.emplace(Tensor({4}));
  EXPECT_NE(testing::argument_error_of([&] {
              m.forward(x, {.sequence_ids = ids});
            }).find("sequence_ids are for a paged_cache"),
            std::string::npos);
}

TEST(MhaVariants, BadOptionsAreNamed) {
  const auto build = [](MultiHeadAttentionOptions o, int64_t d_out = 8) {
    return [o, d_out] { MultiHeadAttention(4, d_out, 8, 0.0, 2, false, o); };
  };
  EXPECT_NE(testing::argument_error_of(build({.window_left = -2})).find("window_left"),
            std::string::npos);
  EXPECT_NE(testing::argument_error_of(build({.softcap = -1.0f})).find("softcap"),
            std::string::npos);
  EXPECT_NE(testing::argument_error_of(build({.rope = RopeOptions{}}, 6)).find("even head_dim"),
            std::string::npos);
  EXPECT_NE(testing::argument_error_of(build({.rope = RopeOptions{.theta = 0.0}}))
                .find("MultiHeadAttention: rope: RopeTable: theta"),
            std::string::npos);
  // Dropout in training does not combine with sinks or softcap.
  manual_seed(1);
  MultiHeadAttention m(4, 8, 8, 0.1, 2, false, {.sinks = true});
  EXPECT_NE(testing::argument_error_of([&] {
              m.forward(Tensor({3, 4}));
            }).find("sinks"),
            std::string::npos);
  m.eval();
  EXPECT_NO_THROW(m.forward(Tensor({3, 4})));
}

}  // namespace
}  // namespace llm_utils
