// The fused forward over paged keys and values (attention_forward_paged): each sequence is a
// problem of its own (batch 1, its queries bottom-right aligned against its keys, which it
// reaches through its page table), and one parallel loop runs the (sequence, query head,
// query block) tasks of all of them. A query block thus never straddles two sequences, and a
// decode step of S sequences is S * H small tasks. When there are too few tasks to keep the
// threads busy (a small batch), each sequence's keys are split into chunks whose parts are
// merged by their log-sum-exp, as flash_forward does.

#include <omp.h>

#include <algorithm>
#include <memory>
#include <vector>

#include "cpu/flash_forward_block.hpp"
#include "llm_utils/threads.hpp"

namespace llm_utils::cpu {
namespace {

using namespace forward_parts;  // NOLINT(google-build-using-namespace)

struct Task {
  int64_t seq;    // index into the sequences
  int64_t g;      // query head
  int64_t i0;     // first query of the block
  int64_t split;  // key chunk (0 without a split)
};

void forward_paged(std::span<const FlashProblem> seqs, std::span<const ForwardOutputs> outs) {
  const int64_t count = static_cast<int64_t>(seqs.size());
  int64_t total_tasks = 0;
  for (const FlashProblem& p : seqs) {
    if (!p.no_queries() && p.m > 0)
      total_tasks += p.query_heads() * flash::blocks(p.n, kQueryBlock);
  }
  // Longest key ranges first: the dynamic schedule then ends on short tasks.
  std::vector<int64_t> order(static_cast<size_t>(count));
  for (int64_t s = 0; s < count; ++s) order[static_cast<size_t>(s)] = s;
  std::stable_sort(order.begin(), order.end(), [&](int64_t a, int64_t b) {
    return seqs[static_cast<size_t>(a)].m > seqs[static_cast<size_t>(b)].m;
  });
  std::vector<KeySplit> splits(static_cast<size_t>(count), KeySplit{1, 0});
  std::vector<std::unique_ptr<SplitParts>> parts(static_cast<size_t>(count));
  std::vector<Task> tasks;
  tasks.reserve(static_cast<size_t>(total_tasks));
  int64_t d = 0, dv = 0;
  for (const int64_t s : order) {
    const FlashProblem& p = seqs[static_cast<size_t>(s)];
    if (p.no_queries()) continue;
    d = p.d;
    dv = p.dv;
    if (p.m == 0) {
      forward_without_keys(p, outs[static_cast<size_t>(s)]);
      continue;
    }
    KeySplit& split = splits[static_cast<size_t>(s)];
    split = plan_key_split(p, total_tasks);
    if (split.splits > 1) {
      parts[static_cast<size_t>(s)] =
          std::make_unique<SplitParts>(split.splits, p.query_heads() * p.n, p.dv);
    }
    for (int64_t g = 0; g < p.query_heads(); ++g) {
      for (int64_t i0 = 0; i0 < p.n; i0 += kQueryBlock) {
        for (int64_t c = 0; c < split.splits; ++c) tasks.push_back({s, g, i0, c});
      }
    }
  }
  if (tasks.empty()) return;
  // Allocated here, outside the parallel region, where a failed allocation is an exception.
  const int threads = get_num_threads();
  std::vector<ForwardScratch<float>> scratch(static_cast<size_t>(threads),
                                             ForwardScratch<float>(d, dv));
  const KeyOperands<float> tile_by_tile{nullptr, nullptr};  // pages are transposed as used
#pragma omp parallel for schedule(dynamic, 1) num_threads(threads)
  for (size_t t = 0; t < tasks.size(); ++t) {
    const Task& task = tasks[t];
    const FlashProblem& p = seqs[static_cast<size_t>(task.seq)];
    const ForwardOutputs& o = outs[static_cast<size_t>(task.seq)];
    ForwardScratch<float>& s = scratch[static_cast<size_t>(omp_get_thread_num())];
    const KeySplit& split = splits[static_cast<size_t>(task.seq)];
    const int64_t br = std::min(kQueryBlock, p.n - task.i0);
    if (split.splits == 1) {
      forward_block(p, tile_by_tile, task.g, task.i0, br, 0, p.m, s,
                    BlockOutput<float>{p.query_matrix(o.out, task.g) + task.i0 * o.out.row_stride,
                                       o.out.row_stride,
                                       p.query_matrix(o.lse, task.g) + task.i0 * o.lse.row_stride,
                                       o.lse.row_stride, nullptr, nullptr,
                                       p.sinks != nullptr ? p.sinks + task.g % p.heads : nullptr});
      continue;
    }
    SplitParts& part = *parts[static_cast<size_t>(task.seq)];
    const int64_t rows = p.query_heads() * p.n;
    const size_t at = static_cast<size_t>(task.split * rows + task.g * p.n + task.i0);
    forward_block(
        p, tile_by_tile, task.g, task.i0, br, task.split * split.chunk,
        (task.split + 1) * split.chunk, s,
        BlockOutput<float>{part.out.data() + at * static_cast<size_t>(p.dv), p.dv, nullptr, 0,
                           part.row_max.data() + at, part.log_sum.data() + at});
  }
  for (int64_t s = 0; s < count; ++s) {
    if (parts[static_cast<size_t>(s)] == nullptr) continue;
    const FlashProblem& p = seqs[static_cast<size_t>(s)];
    const ForwardOutputs& o = outs[static_cast<size_t>(s)];
    const int64_t rows = p.query_heads() * p.n;
    const float exp_scale = flash::TileMasker{p}.prescale() ? 1.0f : p.scale;
#pragma omp parallel for schedule(static) num_threads(threads)
    for (int64_t row = 0; row < rows; ++row) {
      const int64_t g = row / p.n, i = row % p.n;
      merge_row(*parts[static_cast<size_t>(s)], row, rows, splits[static_cast<size_t>(s)].splits,
                p.dv, exp_scale, p.sinks != nullptr ? p.sinks + g % p.heads : nullptr,
                scratch[static_cast<size_t>(omp_get_thread_num())].acc.data(),
                p.query_matrix(o.out, g) + i * o.out.row_stride,
                p.query_matrix(o.lse, g) + i * o.lse.row_stride, nullptr, nullptr);
    }
  }
}

}  // namespace

void flash_forward_paged(std::span<const FlashProblem> sequences,
                         std::span<const ForwardOutputs> outputs) {
  selected_isa();  // throws here, not inside a parallel region, on a bad LLM_UTILS_ISA
  forward_paged(sequences, outputs);
}

}  // namespace llm_utils::cpu
