// Paged keys and values (attention.hpp's attention_forward_paged, nn/paged_kv_cache.hpp): the
// paged kernel against attention_forward_varlen on the same keys laid out contiguously, for
// page sizes that cut the kernel's key steps anywhere, GQA, every variant, a decode batch whose
// long sequence the kernel splits into chunks, on both backends, every ISA, 1 and 2 threads;
// the cache's page accounting; MultiHeadAttention decoding several sequences of different
// lengths through one cache against each sequence's own full forward; and the errors.

#include <gtest/gtest.h>

#include <algorithm>
#include <numeric>
#include <string>
#include <vector>

#include "kernel_test_util.hpp"

namespace llm_utils {
namespace {

using testing::kernel_close;

// S sequences in pages: contiguous keys (T_k, G, d) / values (T_k, G, dv) packed by cu_k, the
// same tokens scattered over the pages of a pool in a shuffled order, and the block table.
struct PagedCase {
  int64_t page_size;
  std::vector<int64_t> seqlens_k, queries;  // (S) tokens held, new tokens (its last ones)
  int64_t heads, kv_heads, d, dv;
  Tensor q, k, v;              // q (T_q, H, d); k, v packed contiguously
  Tensor k_pages, v_pages;     // (P, page_size, G, d / dv)
  std::vector<int64_t> table;  // (S, pages_per_sequence)
  int64_t pages_per_sequence = 0;
  std::vector<int64_t> cu_q, cu_k;

  PagedCase(int64_t page, std::vector<int64_t> lens, std::vector<int64_t> nq, int64_t h, int64_t g,
            int64_t d_, int64_t dv_, uint64_t seed)
      : page_size(page),
        seqlens_k(std::move(lens)),
        queries(std::move(nq)),
        heads(h),
        kv_heads(g),
        d(d_),
        dv(dv_) {
    Generator gen(seed);
    cu_q = {0};
    cu_k = {0};
    for (size_t s = 0; s < seqlens_k.size(); ++s) {
      cu_q.push_back(cu_q.back() + queries[s]);
      cu_k.push_back(cu_k.back() + seqlens_k[s]);
      pages_per_sequence = std::max(pages_per_sequence, (seqlens_k[s] + page - 1) / page);
    }
    q = gen.uniform({cu_q.back(), h, d}, -1, 1);
    k = gen.uniform({cu_k.back(), g, d}, -1, 1);
    v = gen.uniform({cu_k.back(), g, dv}, -1, 1);
    // A pool with a few spare pages, handed out in a shuffled order.
    const int64_t used = static_cast<int64_t>(seqlens_k.size()) * pages_per_sequence;
    const int64_t pool = used + 3;
    std::vector<int64_t> order(static_cast<size_t>(pool));
    std::iota(order.begin(), order.end(), 0);
    for (int64_t i = pool - 1; i > 0; --i) {
      std::swap(order[static_cast<size_t>(i)],
                order[static_cast<size_t>(gen.next_u32() % static_cast<uint32_t>(i + 1))]);
    }
    k_pages = gen.uniform({pool, page, g, d}, -9, 9);  // garbage where no token lives
    v_pages = gen.uniform({pool, page, g, dv}, -9, 9);
    table.assign(static_cast<size_t>(used), -1);
    for (size_t s = 0; s < seqlens_k.size(); ++s) {
      for (int64_t t = 0; t < seqlens_k[s]; ++t) {
        int64_t& page_of =
            table[s * static_cast<size_t>(pages_per_sequence) + static_cast<size_t>(t / page)];
        if (page_of < 0)
          page_of =
              order[s * static_cast<size_t>(pages_per_sequence) + static_cast<size_t>(t / page)];
        const int64_t src = cu_k[s] + t, row = page_of * page + t % page;
        std::copy(k.data() + src * g * d, k.data() + (src + 1) * g * d,
                  k_pages.data() + row * g * d);
        std::copy(v.data() + src * g * dv, v.data() + (src + 1) * g * dv,
                  v_pages.data() + row * g * dv);
      }
    }
    for (int64_t& e : table) e = std::max<int64_t>(e, 0);  // unused entries: any valid page
  }

  PagedKeys keys() const { return {k_pages, v_pages, table, pages_per_sequence, seqlens_k}; }
};

struct Outputs {
  Tensor out, lse;
};

Outputs run_paged(const PagedCase& c, const AttentionOptions& o) {
  Outputs r{Tensor({c.cu_q.back(), c.heads, c.dv}), Tensor({c.heads, c.cu_q.back()})};
  attention_forward_paged(c.q, c.keys(), c.cu_q, r.out, r.lse, o);
  return r;
}

// The oracle: varlen on the contiguous keys. Its queries are bottom-right aligned as the paged
// kernel's are (FlashAttention's convention for both).
Outputs run_varlen(const PagedCase& c, AttentionOptions o) {
  o.backend = Backend::reference;
  Outputs r{Tensor({c.cu_q.back(), c.heads, c.dv}), Tensor({c.heads, c.cu_q.back()})};
  attention_forward_varlen(c.q, c.k, c.v, c.cu_q, c.cu_k, r.out, r.lse, o);
  return r;
}

void expect_paged_matches_varlen(const PagedCase& c, const AttentionOptions& o) {
  const Outputs want = run_varlen(c, o);
  testing::KernelEnvironment env;
  AttentionOptions ref = o;
  ref.backend = Backend::reference;
  const Outputs got_ref = run_paged(c, ref);
  EXPECT_TRUE(kernel_close(got_ref.out, want.out)) << "reference out";
  EXPECT_TRUE(kernel_close(got_ref.lse, want.lse)) << "reference lse";
  for (cpu::Isa isa : testing::available_isas()) {
    cpu::force_isa(isa);
    for (int threads : {1, 2}) {
      SCOPED_TRACE(std::string(cpu::isa_name(isa)) + ", threads " + std::to_string(threads));
      set_num_threads(threads);
      AttentionOptions flash = o;
      flash.backend = Backend::flash;
      const Outputs got = run_paged(c, flash);
      EXPECT_TRUE(kernel_close(got.out, want.out)) << "out";
      EXPECT_TRUE(kernel_close(got.lse, want.lse)) << "lse";
    }
  }
}

TEST(PagedAttention, EqualsVarlenOnContiguousKeysForAnyPageSize) {
  // Lengths that end mid-page, an empty sequence, a prefill of 70 queries, decode steps.
  for (int64_t page : {1, 7, 64, 128, 200}) {
    SCOPED_TRACE("page_size " + std::to_string(page));
    const PagedCase c(page, {70, 1, 0, 300, 129}, {70, 1, 0, 1, 5}, 4, 2, 16, 8, 11);
    expect_paged_matches_varlen(c, {});
    expect_paged_matches_varlen(c, {.causal = true});
  }
}

TEST(PagedAttention, EveryVariantAndGqa) {
  const PagedCase c(16, {90, 33, 250}, {3, 33, 1}, 8, 2, 32, 32, 12);
  Generator gen(5);
  const Tensor slopes = alibi_slopes(8), sinks = gen.uniform({8}, -1, 1);
  AttentionOptions o;
  o.causal = true;
  o.window_left = 20;
  o.softcap = 2.0f;
  o.alibi_slopes = slopes;
  o.sinks = sinks;
  o.scale_divisor = 3.0f;
  expect_paged_matches_varlen(c, o);
}

TEST(PagedAttention, ADecodeStepOfOneLongSequenceIsSplitAndMerged) {
  // One query on 3000 keys: a single task, which the kernel splits into key chunks.
  const PagedCase c(48, {3000}, {1}, 1, 1, 64, 64, 13);
  Generator gen(6);
  const Tensor sinks = gen.uniform({1}, -1, 1);
  expect_paged_matches_varlen(c, {.causal = true});
  AttentionOptions o;
  o.causal = true;
  o.window_left = 1000;
  o.sinks = sinks;
  expect_paged_matches_varlen(c, o);
}

TEST(PagedAttention, BadArgumentsAreNamed) {
  const PagedCase c(8, {20, 5}, {2, 1}, 2, 1, 8, 8, 14);
  Tensor out({3, 2, 8}), lse({2, 3});
  PagedKeys kv = c.keys();
  std::vector<int64_t> bad_lengths = {20, 30};  // 30 > 3 pages x 8
  kv.seqlens_k = bad_lengths;
  EXPECT_NE(testing::argument_error_of([&] {
              attention_forward_paged(c.q, kv, c.cu_q, out, lse, {});
            }).find("sequence 1 has seqlens_k 30"),
            std::string::npos);
  kv = c.keys();
  std::vector<int64_t> bad_table = c.table;
  bad_table[1] = 99;
  kv.block_table = bad_table;
  EXPECT_NE(testing::argument_error_of([&] {
              attention_forward_paged(c.q, kv, c.cu_q, out, lse, {});
            }).find("uses page 99"),
            std::string::npos);
  kv = c.keys();
  std::vector<int64_t> too_many_queries = {0, 2, 3};
  std::vector<int64_t> short_lengths = {1, 5};
  kv.seqlens_k = short_lengths;
  EXPECT_NE(testing::argument_error_of([&] {
              attention_forward_paged(c.q, kv, too_many_queries, out, lse, {});
            }).find("has 2 queries but 1 tokens"),
            std::string::npos);
  kv = c.keys();
  EXPECT_NE(testing::argument_error_of([&] {
              attention_forward_paged(c.q, kv, c.cu_q, out, lse, {.query_offset = 1});
            }).find("query_offset"),
            std::string::npos);
  Tensor wrong_out({3, 2, 4});
  EXPECT_NE(testing::argument_error_of([&] {
              attention_forward_paged(c.q, kv, c.cu_q, wrong_out, lse, {});
            }).find("out"),
            std::string::npos);
}

TEST(PagedKVCache, PagesAreTakenWhenNeededAndGivenBack) {
  PagedKVCache cache(4, 3, 1, 2);
  const int64_t a = cache.add_sequence(), b = cache.add_sequence();
  const std::vector<int64_t> ids = {a, b}, counts = {4, 2};
  const std::vector<int64_t> rows = cache.append(ids, counts);
  EXPECT_EQ(cache.length(a), 4);
  EXPECT_EQ(cache.pages(a).size(), 2u);
  EXPECT_EQ(cache.free_pages(), 1);
  ASSERT_EQ(rows.size(), 6u);
  // Token t of a sits at row t % 3 of page pages(a)[t / 3].
  EXPECT_EQ(rows[3], cache.pages(a)[1] * 3 + 0);
  EXPECT_EQ(rows[5], cache.pages(b)[0] * 3 + 1);
  // Not enough pages: nothing changes.
  const std::vector<int64_t> more = {3, 3};
  EXPECT_NE(testing::argument_error_of([&] {
              cache.append(ids, more);
            }).find("need 2 more pages, 1 of 4"),
            std::string::npos);
  EXPECT_EQ(cache.length(a), 4);
  EXPECT_EQ(cache.free_pages(), 1);
  const std::vector<int64_t> twice = {a, a}, ones = {1, 1};
  EXPECT_NE(testing::argument_error_of([&] { cache.append(twice, ones); }).find("listed twice"),
            std::string::npos);
  cache.remove_sequence(a);
  EXPECT_EQ(cache.free_pages(), 3);
  EXPECT_FALSE(cache.contains(a));
  EXPECT_NE(testing::argument_error_of([&] { cache.length(a); }).find("no sequence with id 0"),
            std::string::npos);
}

TEST(PagedKVCache, MultiHeadAttentionDecodesSequencesOfDifferentLengthsTogether) {
  // Three prompts of 5, 2 and 9 tokens prefilled in one packed call, then 4 decode steps of all
  // three in one (3, 1, d_in) call each: every output row equals the row of one full causal
  // forward over that sequence's tokens. With RoPE, GQA, a window and sinks.
  MultiHeadAttentionOptions options;
  options.num_kv_groups = 2;
  options.rope = RopeOptions{};
  options.window_left = 6;
  options.sinks = true;
  manual_seed(7);
  MultiHeadAttention mha(12, 16, 32, 0.0, 4, true, options);
  Generator gen(8);
  mha.sinks->copy_from(gen.uniform({4}, -1, 1));
  mha.eval();
  const std::vector<int64_t> prompt = {5, 2, 9};
  constexpr int64_t kSteps = 4;
  std::vector<Tensor> tokens;  // per sequence (prompt + steps, d_in)
  for (const int64_t n : prompt) tokens.push_back(gen.uniform({n + kSteps, 12}, -1, 1));
  std::vector<Tensor> want;  // per sequence: its full causal forward
  for (const Tensor& t : tokens) want.push_back(mha.forward(t));

  for (int64_t page : {1, 4, 64}) {
    SCOPED_TRACE("page_size " + std::to_string(page));
    PagedKVCache cache(64, page, 2, 4);
    std::vector<int64_t> ids;
    for (size_t s = 0; s < prompt.size(); ++s) ids.push_back(cache.add_sequence());
    Tensor x({16, 12});  // the prompts packed
    std::vector<int64_t> cu = {0};
    for (size_t s = 0; s < prompt.size(); ++s) {
      const Tensor p = testing::rows_of(tokens[s], 0, prompt[s]);
      std::copy(p.data(), p.data() + p.numel(), x.data() + cu.back() * 12);
      cu.push_back(cu.back() + prompt[s]);
    }
    const Tensor y = mha.forward(x, {.cu_seqlens = cu, .paged_cache = &cache, .sequence_ids = ids});
    for (size_t s = 0; s < prompt.size(); ++s) {
      EXPECT_TRUE(testing::parity(testing::rows_of(y, cu[s], prompt[s]),
                                  testing::rows_of(want[s], 0, prompt[s])));
    }
    for (int64_t step = 0; step < kSteps; ++step) {
      Tensor next({3, 1, 12});
      for (size_t s = 0; s < prompt.size(); ++s) {
        const Tensor r = testing::rows_of(tokens[s], prompt[s] + step, 1);
        std::copy(r.data(), r.data() + 12, next.data() + static_cast<int64_t>(s) * 12);
      }
      const Tensor out = mha.forward(next, {.paged_cache = &cache, .sequence_ids = ids});
      for (size_t s = 0; s < prompt.size(); ++s) {
        EXPECT_TRUE(testing::parity(testing::rows_of(out, static_cast<int64_t>(s), 1),
                                    testing::rows_of(want[s], prompt[s] + step, 1)))
            << "sequence " << s << ", step " << step;
      }
    }
    EXPECT_EQ(cache.length(ids[2]), 9 + kSteps);
    EXPECT_THROW(mha.backward(Tensor({3, 1, 16})), StateError);
  }
}

TEST(PagedKVCache, ModuleErrorsChangeNothing) {
  manual_seed(9);
  MultiHeadAttention mha(4, 8, 6, 0.0, 2);
  mha.eval();
  PagedKVCache cache(2, 2, 2, 4);
  const int64_t a = cache.add_sequence();
  const std::vector<int64_t> ids = {a};
  const Tensor x = Generator(1).uniform({1, 5, 4}, -1, 1);
  // 5 tokens need 3 pages of 2; the pool has 2.
  EXPECT_NE(testing::argument_error_of([&] {
              mha.forward(x, {.paged_cache = &cache, .sequence_ids = ids});
            }).find("need 3 more pages, 2 of 2"),
            std::string::npos);
  EXPECT_EQ(cache.length(a), 0);
  EXPECT_EQ(cache.free_pages(), 2);
  const std::vector<int64_t> unknown = {a + 1};
  EXPECT_NE(testing::argument_error_of([&] {
              mha.forward(x, {.paged_cache = &cache, .sequence_ids = unknown});
            }).find("no sequence with id 1"),
            std::string::npos);
  PagedKVCache wrong(4, 2, 1, 4);
  EXPECT_NE(testing::argument_error_of([&] {
              mha.forward(x, {.paged_cache = &wrong, .sequence_ids = ids});
            }).find("1 key/value heads of 4 features, the module has 2 of 4"),
            std::string::npos);
  const std::vector<int64_t> twice = {a, a};
  const Tensor two_sequences = Generator(3).uniform({2, 1, 4}, -1, 1);
  EXPECT_NE(testing::argument_error_of([&] {
              mha.forward(two_sequences, {.paged_cache = &cache, .sequence_ids = twice});
            }).find("forward(paged_cache): sequence_ids lists sequence 0 twice"),
            std::string::npos);
  EXPECT_EQ(cache.length(a), 0);
  PagedKVCache big(8, 2, 2, 4);
  const int64_t b = big.add_sequence();
  const std::vector<int64_t> big_ids = {b};
  mha.forward(x, {.paged_cache = &big, .sequence_ids = big_ids});
  const Tensor two = Generator(2).uniform({1, 2, 4}, -1, 1);
  EXPECT_NE(testing::argument_error_of([&] {
              mha.forward(two, {.paged_cache = &big, .sequence_ids = big_ids});
            }).find("holds 5 tokens and x adds 2, more than context_length=6"),
            std::string::npos);
  EXPECT_EQ(big.length(b), 5);
}

}  // namespace
}  // namespace llm_utils
