// Ring attention, forward (sequence_parallel.hpp). Rank r starts with its own K/V shard; at step
// s it holds rank (r - s)'s, sends it on to r + 1 and receives (r - s - 1)'s from r - 1 while
// the fused kernel runs on the block in hand; each block's partial output is merged into the
// running one by log-sum-exp (block_attention.hpp).

#include <chrono>
#include <limits>
#include <string>
#include <utility>

#include "dist/block_attention.hpp"
#include "dist/ring_buffers.hpp"
#include "dist/sequence_problem.hpp"
#include "dist/view_ops.hpp"
#include "llm_utils/dist/sequence_parallel.hpp"

namespace llm_utils::dist {
using detail::BlockCall;
using detail::KvBlock;

void ring_attention_forward(const Communicator& comm, ConstTensorView q, ConstTensorView k,
                            ConstTensorView v, TensorView out, TensorView lse,
                            const AttentionOptions& options, SequenceLayout layout,
                            RingStats* stats) {
  constexpr const char* fn = "ring_attention_forward";
  Communicator::Impl& c = comm.impl();
  const detail::SequenceProblem p = detail::check_sequence_problem(
      c, fn, q, k, v, detail::CallTensors::of_forward(out, lse), options, layout);
  const AttentionOptions opts = detail::with_explicit_scale(options, p.d);
  const int64_t sd = p.seq_dim;

  detail::fill(out, 0.0f);
  detail::fill(lse, -std::numeric_limits<float>::infinity());
  const auto q_chunks = p.q_chunks(p.rank);
  const int next = (p.rank + 1) % p.ranks, prev = (p.rank + p.ranks - 1) % p.ranks;

  const bool transfers = stats == nullptr || !stats->skip_transfers;
  detail::StepClock clock(stats);
  KvBlock held = KvBlock::packed(p, p.rank, k, v);  // the K/V shard of rank (rank - step)
  KvBlock arriving;
  for (int step = 0; step < p.ranks; ++step) {
    const int owner = transfers ? (p.rank - step + p.ranks) % p.ranks : p.rank;
    MPI_Request transfer[2] = {MPI_REQUEST_NULL, MPI_REQUEST_NULL};
    if (transfers && step + 1 < p.ranks) {
      arriving = KvBlock::empty(p, (owner + p.ranks - 1) % p.ranks);
      transfer[0] = c.isend(held.data(), held.numel(), next, fn);
      transfer[1] = c.irecv(arriving.data(), arriving.numel(), prev, fn);
    }
    for (const BlockCall& call : detail::block_calls(q_chunks, p.kv_chunks(owner), opts)) {
      const ConstTensorView qs = q.narrow(sd, call.q_start, call.q_rows);
      Tensor part_out(detail::with_rows(out.shape(), sd, call.q_rows));  // (.., q_rows, dv)
      Tensor part_lse(detail::with_rows(lse.shape(), sd, call.q_rows));  // (.., q_rows)
      attention_forward(qs, held.k().narrow(sd, call.k_start, call.k_rows),
                        held.v().narrow(sd, call.k_start, call.k_rows), part_out, part_lse,
                        call.options);
      detail::merge_partial(part_out, part_lse, out.narrow(sd, call.q_start, call.q_rows),
                            lse.narrow(sd, call.q_start, call.q_rows));
    }
    clock.computed();
    if (transfers && step + 1 < p.ranks) {
      c.wait_all(transfer, fn,
                 "the K/V block of step " + std::to_string(step + 1) + " from rank " +
                     std::to_string(prev));
      held = std::move(arriving);
    }
    clock.waited();
  }
}

double ring_transfer_seconds(const Communicator& comm, int64_t floats, int steps) {
  constexpr const char* fn = "ring_transfer_seconds";
  Communicator::Impl& c = comm.impl();
  comm.barrier();
  const int next = (c.rank + 1) % c.size, prev = (c.rank + c.size - 1) % c.size;
  Tensor held({floats}), arriving({floats});
  const auto start = std::chrono::steady_clock::now();
  for (int step = 0; step < steps && c.size > 1; ++step) {
    MPI_Request transfer[2] = {c.isend(held.data(), floats, next, fn),
                               c.irecv(arriving.data(), floats, prev, fn)};
    c.wait_all(transfer, fn, "a block from rank " + std::to_string(prev));
    std::swap(held, arriving);
  }
  comm.barrier();
  return std::chrono::duration<double>(std::chrono::steady_clock::now() - start).count();
}

}  // namespace llm_utils::dist
