// MultiHeadAttention beyond the book, checked by equivalences that need no PyTorch (the live
// PyTorch parity is python/tests/test_mha_extensions.py): the KV cache against one full causal
// forward, grouped-query attention against plain multi-head attention with repeated key/value
// weights, masks against the computation they stand for, and the errors.

#include <gtest/gtest.h>

#include <string>
#include <vector>

#include "test_util.hpp"

namespace llm_utils {
namespace {

using testing::all_close;

MultiHeadAttention make(int64_t num_kv_groups, int64_t context_length = 64, bool causal = true,
                        uint64_t seed = 11) {
  Generator g(seed);
  MultiHeadAttentionOptions options;
  options.num_kv_groups = num_kv_groups;
  options.causal = causal;
  return MultiHeadAttention(12, 16, context_length, 0.0, /*num_heads=*/4, /*qkv_bias=*/true,
                            options, &g);
}

// Rows [start, start + n) of each sequence of x (B, N, D).
Tensor rows(const Tensor& x, int64_t start, int64_t n) {
  const int64_t b = x.size(0), len = x.size(1), d = x.size(2);
  Tensor out({b, n, d});
  for (int64_t s = 0; s < b; ++s) {
    std::copy(x.data() + (s * len + start) * d, x.data() + (s * len + start + n) * d,
              out.data() + s * n * d);
  }
  return out;
}

TEST(MhaExtensions, KvCacheGivesTheRowsOfOneFullCausalForward) {
  struct Case {
    int64_t groups;
    Backend backend;
    std::vector<int64_t> chunks;
  };
  const std::vector<int64_t> one_by_one(300, 1);
  for (const Case& c :
       {Case{4, Backend::reference, {5, 1, 13, 21}}, Case{2, Backend::flash, {5, 1, 13, 21}},
        Case{1, Backend::flash, one_by_one}, Case{2, Backend::automatic, {100, 1, 1, 198}}}) {
    int64_t total = 0;
    for (int64_t n : c.chunks) total += n;
    SCOPED_TRACE("groups " + std::to_string(c.groups) + ", " + backend_name(c.backend) + ", " +
                 std::to_string(c.chunks.size()) + " chunks");
    MultiHeadAttention mha = make(c.groups, total);
    mha.set_backend(c.backend);
    Generator g(3);
    const Tensor x = g.uniform({2, total, 12}, -1, 1);
    const Tensor full = mha.forward(x);
    int64_t start = 0;
    for (int64_t n : c.chunks) {
      const Tensor out = mha.forward(rows(x, start, n), {.use_cache = true});
      ASSERT_TRUE(all_close(out, rows(full, start, n), 1e-5, 1e-5)) << "at token " << start;
      start += n;
      ASSERT_EQ(mha.cache_size(), start);
    }
  }
}

TEST(MhaExtensions, GroupedQueryAttentionIsMultiHeadAttentionWithRepeatedKeyValueHeads) {
  for (int64_t groups : {1, 2}) {
    SCOPED_TRACE("groups " + std::to_string(groups));
    MultiHeadAttention gqa = make(groups, 80);
    MultiHeadAttention mha = make(4, 80, true, 99);
    // MHA's key/value heads h = GQA's head h / (4 / groups): repeat the weight and bias rows.
    const int64_t hd = 4, per_group = 4 / groups;
    for (auto [from, to] :
         {std::pair{&gqa.W_key, &mha.W_key}, std::pair{&gqa.W_value, &mha.W_value}}) {
      for (int64_t r = 0; r < 16; ++r) {
        const int64_t src = (r / hd / per_group) * hd + r % hd;
        for (int64_t c = 0; c < 12; ++c)
          to->weight.data().at({r, c}) = from->weight.data().at({src, c});
        to->bias->data().at({r}) = from->bias->data().at({src});
      }
    }
    for (auto [from, to] :
         {std::pair{&gqa.W_query, &mha.W_query}, std::pair{&gqa.out_proj, &mha.out_proj}}) {
      to->weight.copy_from(from->weight.data());
      to->bias->copy_from(from->bias->data());
    }
    Generator g(4);
    const Tensor x = g.uniform({2, 70, 12}, -1, 1), dout = g.uniform({2, 70, 16}, -1, 1);
    EXPECT_TRUE(all_close(gqa.forward(x), mha.forward(x), 1e-5, 1e-6));
    EXPECT_TRUE(all_close(gqa.backward(dout), mha.backward(dout), 1e-5, 1e-6));
    // A shared key/value head's gradient is the sum over the query heads it serves.
    const ConstTensorView shared = gqa.W_key.weight.grad();
    const ConstTensorView repeated = mha.W_key.weight.grad();
    Tensor summed(shared.shape());
    for (int64_t r = 0; r < 16; ++r) {
      const int64_t dst = (r / hd / per_group) * hd + r % hd;
      for (int64_t c = 0; c < 12; ++c) summed.at({dst, c}) += repeated.at({r, c});
    }
    EXPECT_TRUE(all_close(shared, summed, 1e-5, 1e-6));
  }
}

TEST(MhaExtensions, KeyPaddingMaskHidesThePadding) {
  MultiHeadAttention mha = make(2);
  Generator g(5);
  const Tensor x = g.uniform({2, 10, 12}, -1, 1);
  std::vector<bool> pad(20, false);
  for (int64_t j = 6; j < 10; ++j) pad[10 + j] = true;  // the second sequence has 6 tokens
  const Tensor out = mha.forward(x, {.key_padding_mask = AttentionMask::padding(pad, {2, 10})});
  const Tensor second_alone = mha.forward(ConstTensorView(x.data() + 10 * 12, {6, 12}));
  const Tensor got = Tensor::from_view(ConstTensorView(out.data() + 10 * 16, {6, 16}));
  EXPECT_TRUE(all_close(got, second_alone, 1e-5, 1e-6));
}

TEST(MhaExtensions, AllowedMaskAndAdditiveMaskAgreeWithTheCausalFlag) {
  MultiHeadAttention causal = make(4, 80, true);
  MultiHeadAttention open = make(4, 80, false);
  Generator g(6);
  const Tensor x = g.uniform({2, 70, 12}, -1, 1);
  std::vector<bool> lower(70 * 70);
  Tensor additive({70, 70});
  for (int64_t i = 0; i < 70; ++i) {
    for (int64_t j = 0; j < 70; ++j) {
      lower[static_cast<size_t>(i * 70 + j)] = j <= i;
      additive.at({i, j}) = j <= i ? 0.0f : -std::numeric_limits<float>::infinity();
    }
  }
  const Tensor expected = causal.forward(x);
  const Tensor by_bool = open.forward(x, {.attn_mask = AttentionMask::allowed(lower, {70, 70})});
  EXPECT_TRUE(all_close(by_bool, expected, 1e-5, 1e-6));
  const Tensor by_float = open.forward(x, {.attn_mask = AttentionMask::additive(additive)});
  EXPECT_TRUE(testing::bit_equal(by_float, by_bool));
}

std::string error_of(const std::function<void()>& fn) {
  try {
    fn();
  } catch (const Error& e) {
    return e.what();
  }
  return "no error";
}

TEST(MhaExtensions, ErrorsNameWhatWasWrongAndChangeNothing) {
  EXPECT_NE(error_of([] { make(3); }).find("num_heads must be a multiple of num_kv_groups"),
            std::string::npos);
  EXPECT_NE(error_of([] {
              MultiHeadAttention(12, 16, 8, 0.0, 4, false, {.scale = 0.0});
            }).find("scale must be positive"),
            std::string::npos);
  MultiHeadAttention mha = make(2, 8);
  mha.eval();
  Generator g(7);
  const Tensor x = g.uniform({2, 5, 12}, -1, 1);
  EXPECT_NE(error_of([&] {
              mha.forward(x, {.attn_mask = AttentionMask::additive(Tensor({3, 5}))});
            }).find("attn_mask must broadcast to (batch, num_heads, queries, keys) = [2, 4, 5, 5]"),
            std::string::npos);
  EXPECT_NE(error_of([&] {
              mha.forward(x, {.key_padding_mask = AttentionMask::additive(Tensor({2, 4}))});
            }).find("key_padding_mask must be (batch, keys) = [2, 5]"),
            std::string::npos);
  const Tensor first = mha.forward(x, {.use_cache = true});
  EXPECT_NE(error_of([&] {
              mha.forward(x, {.use_cache = true});
            }).find("the KV cache holds 5 tokens and x adds 5, more than context_length=8"),
            std::string::npos);
  EXPECT_NE(error_of([&] {
              mha.forward(Tensor({1, 1, 12}), {.use_cache = true});
            }).find("x has batch 1, the KV cache holds batch 2"),
            std::string::npos);
  EXPECT_EQ(mha.cache_size(), 5);  // the failed calls changed nothing
  EXPECT_THROW(mha.backward(first), StateError);
  mha.reset_cache();
  EXPECT_TRUE(all_close(mha.forward(x, {.use_cache = true}), first, 0, 0));
  MultiHeadAttention dropping(12, 16, 8, 0.1, 4);
  EXPECT_NE(error_of([&] { dropping.forward(x, {.use_cache = true}); }).find("call eval()"),
            std::string::npos);
  EXPECT_NE(error_of([] {
              AttentionMask::allowed(std::vector<bool>(3), {2, 2});
            }).find("3 values for shape [2, 2], which has 4"),
            std::string::npos);
}

}  // namespace
}  // namespace llm_utils
