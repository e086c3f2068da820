// The fused forward: for each block of queries, stream the key/value blocks once, keeping a
// running row max m and row sum l (online softmax) and rescaling the output accumulator when
// the max grows; the N x M scores never exist beyond one 64 x 128 tile.
//
// When there are too few query blocks to keep every core busy (a decode step: one query per
// head against a long KV cache), the keys are also split into chunks; each (query block, chunk)
// task produces an output normalised over its own chunk and that chunk's log-sum-exp, and a
// final pass merges them (split-K, as FlashDecoding does).

#include <omp.h>

#include <algorithm>
#include <vector>

#include "cpu/flash_forward_block.hpp"
#include "llm_utils/threads.hpp"

namespace llm_utils::cpu {
namespace {

using namespace forward_parts;  // NOLINT(google-build-using-namespace)

template <typename T>
void forward(const BasicAttentionProblem<T>& p, const BasicForwardOutputs<T>& o) {
  using Ops = Operands<T>;
  if (p.no_queries()) return;
  if (p.m == 0) {
    forward_without_keys(p, o);
    return;
  }
  // K^T of every key/value head (B * G blocks), unless transposed tile by tile.
  const bool whole = p.n > kTileTransposeQueries;
  typename Ops::TransposedB kt;
  if (whole) kt = Ops::transposed_b(p.k, p.batch, p.kv_heads, p.m, p.d);
  // V as B: float32 rows are read in place, so always whole; bfloat16 pairs are built whole
  // only when K^T is.
  const bool values_whole = whole || !Ops::kRowsBCopies;
  typename Ops::RowsB v_rows;
  if (values_whole) v_rows = Ops::rows_b(p.v, p.batch, p.kv_heads, p.m, p.dv);
  const KeyOperands<T> keys{whole ? &kt : nullptr, values_whole ? &v_rows : nullptr};
  const std::vector<QueryBlock> blocks = query_blocks(p);
  const int64_t q_blocks = static_cast<int64_t>(blocks.size());
  const int64_t tasks = p.query_heads() * q_blocks;
  const KeySplit split = plan_key_split(p, tasks);
  // Every thread's scratch is allocated here, outside the parallel regions, where a failed
  // allocation is an exception the caller sees rather than std::terminate.
  const int threads = get_num_threads();
  std::vector<ForwardScratch<T>> scratch(static_cast<size_t>(threads),
                                         ForwardScratch<T>(p.d, p.dv));
  const auto stats_at = [&o](float* base, int64_t row) {
    return o.stats.given() ? base + row : nullptr;
  };
  const auto sink_of = [&p](int64_t g) {
    return p.sinks != nullptr ? p.sinks + g % p.heads : nullptr;
  };
  if (split.splits == 1) {
    // Under a causal mask a query block's work grows with its index: the last blocks first
    // (largest first, the dynamic schedule's best order), so no thread is left with a big one
    // at the end. Without the mask the order is immaterial.
#pragma omp parallel for schedule(dynamic, 1) num_threads(threads)
    for (int64_t t = 0; t < tasks; ++t) {
      const int64_t g = t / q_blocks;
      const QueryBlock& b = blocks[static_cast<size_t>(q_blocks - 1 - t % q_blocks)];
      const int64_t i0 = b.i0, row = g * p.n + i0;
      forward_block(
          p, keys, g, i0, b.rows, 0, p.m, scratch[static_cast<size_t>(omp_get_thread_num())],
          BlockOutput<T>{p.query_matrix(o.out, g) + i0 * o.out.row_stride, o.out.row_stride,
                         p.query_matrix(o.lse, g) + i0 * o.lse.row_stride, o.lse.row_stride,
                         stats_at(o.stats.row_max, row), stats_at(o.stats.log_sum, row),
                         sink_of(g)});
    }
    return;
  }
  const int64_t rows = p.query_heads() * p.n;
  SplitParts parts(split.splits, rows, p.dv);
#pragma omp parallel for schedule(dynamic, 1) num_threads(threads)
  for (int64_t t = 0; t < tasks * split.splits; ++t) {
    const int64_t s = t % split.splits, block = t / split.splits;
    const int64_t g = block / q_blocks;
    const QueryBlock& b = blocks[static_cast<size_t>(block % q_blocks)];
    const int64_t i0 = b.i0;
    const size_t at = static_cast<size_t>(s * rows + g * p.n + i0);
    forward_block(
        p, keys, g, i0, b.rows, s * split.chunk, (s + 1) * split.chunk,
        scratch[static_cast<size_t>(omp_get_thread_num())],
        BlockOutput<float>{parts.out.data() + at * static_cast<size_t>(p.dv), p.dv, nullptr, 0,
                           parts.row_max.data() + at, parts.log_sum.data() + at});
  }
  const float exp_scale = flash::TileMasker{p}.prescale() ? 1.0f : p.scale;
#pragma omp parallel for schedule(static) num_threads(threads)
  for (int64_t row = 0; row < rows; ++row) {
    const int64_t g = row / p.n, i = row % p.n;
    merge_row(parts, row, rows, split.splits, p.dv, exp_scale, sink_of(g),
              scratch[static_cast<size_t>(omp_get_thread_num())].acc.data(),
              p.query_matrix(o.out, g) + i * o.out.row_stride,
              p.query_matrix(o.lse, g) + i * o.lse.row_stride, stats_at(o.stats.row_max, row),
              stats_at(o.stats.log_sum, row));
  }
}

}  // namespace

void flash_forward(const FlashProblem& p, const ForwardOutputs& o) {
  selected_isa();  // throws here, not inside a parallel region, on a bad LLM_UTILS_ISA
  forward(p, o);
}

void flash_forward(const Bf16AttentionProblem& p, const BasicForwardOutputs<bfloat16>& o) {
  selected_isa();  // throws here, not inside a parallel region, on a bad LLM_UTILS_ISA
  forward(p, o);
}

}  // namespace llm_utils::cpu
