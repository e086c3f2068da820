// Attention over paged keys and values (attention.hpp, attention_forward_paged): every check,
// then one problem per sequence (batch 1, its queries bottom-right aligned against its
// seqlens_k[s] keys) for the fused kernel, which reads the pages in place; the reference
// gathers each sequence's pages into contiguous keys and values first.

#include <string>
#include <vector>

#include "cpu/flash_attention.hpp"
#include "detail/attention_problem.hpp"
#include "kernels/attention_checks.hpp"
#include "kernels/attention_cuda.hpp"
#include "kernels/attention_dispatch.hpp"
#include "llm_utils/attention.hpp"
#include "llm_utils/error.hpp"

namespace llm_utils {
namespace {

using detail::AttentionProblem;
using detail::describe;
using detail::expect_shape;
using detail::ForwardOutputs;
using detail::Strided;

constexpr const char* kFn = "attention_forward_paged";

void fail(const std::string& what) {
  throw ArgumentError(std::string(kFn) + ": " + what);
}

// k_pages and v_pages: (P, page_size, G, dim) with contiguous rows, the same P, page_size, G.
void check_pages(const PagedKeys& kv, int64_t heads, int64_t d) {
  for (const auto& [name, t] :
       {std::pair{"k_pages", kv.k_pages}, std::pair{"v_pages", kv.v_pages}}) {
    if (t.dim() != 4 || (t.size(3) > 1 && t.stride(3) != 1)) {
      fail(std::string(name) +
           " must be (pages, page_size, kv_heads, dim) with stride 1 in its last dimension, got " +
           describe(t));
    }
  }
  const ConstTensorView& k = kv.k_pages;
  expect_shape(kFn, "v_pages", kv.v_pages.shape(),
               {k.size(0), k.size(1), k.size(2), kv.v_pages.size(3)});
  if (k.size(3) != d) {
    fail("k_pages has head dim " + std::to_string(k.size(3)) + ", q has " + std::to_string(d));
  }
  if (k.size(1) < 1) fail("page_size must be >= 1, got " + std::to_string(k.size(1)));
  const int64_t kv_heads = k.size(2);
  if (heads > 0 && (kv_heads < 1 || heads % kv_heads != 0)) {
    fail("k_pages' kv_heads " + std::to_string(kv_heads) + " must divide q's heads " +
         std::to_string(heads));
  }
}

// The block table and lengths: S sequences, each within its table row, its queries among its
// tokens, every page it uses inside the pool.
void check_table(const PagedKeys& kv, std::span<const int64_t> cu_q) {
  const int64_t sequences = static_cast<int64_t>(cu_q.size()) - 1;
  if (static_cast<int64_t>(kv.seqlens_k.size()) != sequences) {
    fail("seqlens_k has " + std::to_string(kv.seqlens_k.size()) + " entries, cu_seqlens_q " +
         std::to_string(cu_q.size()) + " (it needs one per sequence, plus one)");
  }
  if (kv.pages_per_sequence < 0 ||
      static_cast<int64_t>(kv.block_table.size()) != sequences * kv.pages_per_sequence) {
    fail("block_table has " + std::to_string(kv.block_table.size()) + " entries, expected " +
         std::to_string(sequences) + " sequences x pages_per_sequence " +
         std::to_string(kv.pages_per_sequence));
  }
  const int64_t page_size = kv.k_pages.size(1), pool = kv.k_pages.size(0);
  for (int64_t s = 0; s < sequences; ++s) {
    const int64_t len = kv.seqlens_k[static_cast<size_t>(s)];
    const int64_t queries = cu_q[static_cast<size_t>(s + 1)] - cu_q[static_cast<size_t>(s)];
    const std::string seq = "sequence " + std::to_string(s);
    if (len < 0 || len > kv.pages_per_sequence * page_size) {
      fail(seq + " has seqlens_k " + std::to_string(len) + ", outside [0, pages_per_sequence " +
           std::to_string(kv.pages_per_sequence) + " x page_size " + std::to_string(page_size) +
           "]");
    }
    if (queries > len) {
      fail(seq + " has " + std::to_string(queries) + " queries but " + std::to_string(len) +
           " tokens (its queries are its last tokens)");
    }
    for (int64_t t = 0; t < (len + page_size - 1) / page_size; ++t) {
      const int64_t page = kv.block_table[static_cast<size_t>(s * kv.pages_per_sequence + t)];
      if (page < 0 || page >= pool) {
        fail(seq + " uses page " + std::to_string(page) + " (block_table entry " +
             std::to_string(t) + "), outside the pool's [0, " + std::to_string(pool) + ")");
      }
    }
  }
}

// Sequence s's keys and values gathered from their pages into contiguous (M, G, dim) tensors
// (the reference's input).
Tensor gather_pages(ConstTensorView pages, std::span<const int64_t> table, int64_t len) {
  const int64_t page_size = pages.size(1), kv_heads = pages.size(2), dim = pages.size(3);
  Tensor out({len, kv_heads, dim});  // (M, G, dim)
  for (int64_t t = 0; t < len; ++t) {
    const float* page = pages.data() + table[static_cast<size_t>(t / page_size)] * pages.stride(0);
    const float* row = page + (t % page_size) * pages.stride(1);
    for (int64_t h = 0; h < kv_heads; ++h) {
      for (int64_t c = 0; c < dim; ++c) {
        out.data()[(t * kv_heads + h) * dim + c] = row[h * pages.stride(2) + c];
      }
    }
  }
  return out;
}

}  // namespace

void attention_forward_paged(ConstTensorView q, const PagedKeys& kv,
                             std::span<const int64_t> cu_seqlens_q, TensorView out, TensorView lse,
                             const AttentionOptions& options) {
  detail::refuse_cuda(kFn, options.backend);
  const Strided<const float> qs = detail::packed(kFn, "q", q);
  const int64_t heads = q.size(1), d = q.size(2);
  check_pages(kv, heads, d);
  const int64_t kv_heads = kv.k_pages.size(2), dv = kv.v_pages.size(3), t_q = q.size(0);
  if (options.additive_mask.data() != nullptr) fail("additive_mask is not accepted with pages");
  if (options.query_offset != 0) {
    fail("query_offset must be 0 (each sequence is bottom-right aligned), got " +
         std::to_string(options.query_offset));
  }
  detail::check_offsets(kFn, "cu_seqlens_q", cu_seqlens_q, t_q);
  check_table(kv, cu_seqlens_q);
  expect_shape(kFn, "out", out.shape(), {t_q, heads, dv});
  expect_shape(kFn, "lse", lse.shape(), {heads, t_q});
  const Strided<float> outs = detail::packed(kFn, "out", out);
  detail::check_no_overlap(
      kFn, detail::with_mask({{"q", q}, {"k_pages", kv.k_pages}, {"v_pages", kv.v_pages}}, options),
      {{"out", out}, {"lse", lse}});

  const int64_t sequences = static_cast<int64_t>(kv.seqlens_k.size());
  std::vector<AttentionProblem> problems;
  std::vector<ForwardOutputs> outputs;
  problems.reserve(static_cast<size_t>(sequences));
  outputs.reserve(static_cast<size_t>(sequences));
  for (int64_t s = 0; s < sequences; ++s) {
    const int64_t q0 = cu_seqlens_q[static_cast<size_t>(s)];
    const int64_t n = cu_seqlens_q[static_cast<size_t>(s + 1)] - q0;
    const int64_t m = kv.seqlens_k[static_cast<size_t>(s)];
    AttentionOptions sequence_options = options;
    sequence_options.query_offset = m - n;  // its queries are its last tokens
    sequence_options.additive_mask = {};
    // k and v: the pool, pages as the "batch" (stride between pages), heads and rows within.
    const Strided<const float> ks{kv.k_pages.data(), kv.k_pages.stride(0), kv.k_pages.stride(2),
                                  kv.k_pages.stride(1)};
    const Strided<const float> vs{kv.v_pages.data(), kv.v_pages.stride(0), kv.v_pages.stride(2),
                                  kv.v_pages.stride(1)};
    AttentionProblem p = detail::make_attention_problem(
        {qs.data + q0 * qs.row_stride, 0, qs.head_stride, qs.row_stride}, ks, vs, 1, heads,
        kv_heads, n, m, d, dv, sequence_options);
    detail::check_divisor(kFn, p.divisor);
    detail::set_variants(kFn, options, p);
    p.pages = kv.block_table.data() + s * kv.pages_per_sequence;
    p.page_size = kv.k_pages.size(1);
    problems.push_back(p);
    outputs.push_back(
        ForwardOutputs{{outs.data + q0 * outs.row_stride, 0, outs.head_stride, outs.row_stride},
                       {lse.data() + q0 * lse.stride(1), 0, lse.stride(0), lse.stride(1)},
                       {}});
  }
  if (options.backend != Backend::reference) {
    cpu::flash_forward_paged(problems, outputs);
    return;
  }
  for (int64_t s = 0; s < sequences; ++s) {
    AttentionProblem p = problems[static_cast<size_t>(s)];
    const std::span<const int64_t> table = kv.block_table.subspan(
        static_cast<size_t>(s * kv.pages_per_sequence), static_cast<size_t>(kv.pages_per_sequence));
    const Tensor keys = gather_pages(kv.k_pages, table, p.m);    // (M, G, d)
    const Tensor values = gather_pages(kv.v_pages, table, p.m);  // (M, G, dv)
    p.pages = nullptr;
    p.k = {keys.data(), 0, d, kv_heads * d};
    p.v = {values.data(), 0, dv, kv_heads * dv};
    detail::attention_forward(p, Backend::reference, outputs[static_cast<size_t>(s)]);
  }
}

}  // namespace llm_utils
