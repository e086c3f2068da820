// Ring attention, backward (sequence_parallel.hpp). The K/V shards travel as in the forward.
// For the block in hand each rank computes its queries' share of dK and dV (attention_backward
// with the whole row's out and lse, so P = exp(S - lse) and D = rowsum(dO * O) are the whole
// sequence's), then adds the sums that came with the block from r - 1 and sends them on to
// r + 1: after P steps every block's sums are home. dQ accumulates locally.
//
// The forward's line per block was `out, lse <- merge(out, lse, softmax(Q K_b^T) V_b)`; with the
// whole row's lse, its derivative splits over the blocks: dQ = sum_b dS_b K_b, dK_b = dS_b^T Q,
// dV_b = P_b^T dO, each term what attention_backward computes for block b.

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

namespace {
constexpr int kKvTag = 0, kGradTag = 1;
}

void ring_attention_backward(const Communicator& comm, ConstTensorView q, ConstTensorView k,
                             ConstTensorView v, ConstTensorView out, ConstTensorView lse,
                             ConstTensorView dout, TensorView dq, TensorView dk, TensorView dv,
                             const AttentionOptions& options, SequenceLayout layout,
                             RingStats* stats) {
  constexpr const char* fn = "ring_attention_backward";
  Communicator::Impl& c = comm.impl();
  const detail::SequenceProblem p = detail::check_sequence_problem(
      c, fn, q, k, v, detail::CallTensors::of_backward(out, lse, dout, dq, dk, dv), options,
      layout);
  // The fused backward on every block, whatever the options say: it recomputes P from the lse
  // it is given (the whole row's), which is what splitting the keys needs; the reference
  // backward recomputes the softmax over the keys in hand, right only for all of them.
  AttentionOptions opts = detail::with_explicit_scale(options, p.d);
  opts.backend = Backend::flash;
  const int64_t sd = p.seq_dim;
  const bool want_dq = dq.data() != nullptr, want_dk = dk.data() != nullptr;
  if (want_dq) detail::fill(dq, 0.0f);

  const auto q_chunks = p.q_chunks(p.rank);
  const int next = (p.rank + 1) % p.ranks, prev = (p.rank + p.ranks - 1) % p.ranks;
  // Without transfers (RingStats::skip_transfers) the ring runs as on one rank, P times.
  const bool transfers = (stats == nullptr || !stats->skip_transfers) && p.ranks > 1;
  detail::StepClock clock(stats);
  KvBlock held = KvBlock::packed(p, p.rank, k, v), arriving;
  KvBlock sending[2];  // the dK/dV sums sent at the last two steps (in flight until waited)
  MPI_Request sent[2] = {MPI_REQUEST_NULL, MPI_REQUEST_NULL};
  for (int step = 0; step < p.ranks; ++step) {
    const int owner = transfers ? (p.rank - step + p.ranks) % p.ranks : p.rank;
    MPI_Request transfer[3] = {MPI_REQUEST_NULL, MPI_REQUEST_NULL, MPI_REQUEST_NULL};
    if (transfers && step + 1 < p.ranks) {
      arriving = KvBlock::empty(p, (owner + p.ranks - 1) % p.ranks);
      transfer[0] = c.isend(held.data(), held.numel(), next, fn, kKvTag);
      transfer[1] = c.irecv(arriving.data(), arriving.numel(), prev, fn, kKvTag);
    }
    // The sums of the block in hand from the ranks before (none at step 0: our own block).
    KvBlock incoming;
    if (transfers && step > 0) {
      incoming = KvBlock::empty(p, owner, want_dk);
      transfer[2] = c.irecv(incoming.data(), incoming.numel(), prev, fn, kGradTag);
    }
    KvBlock grads = KvBlock::empty(p, owner, want_dk);  // this rank's share for the block
    for (const BlockCall& call : detail::block_calls(q_chunks, p.kv_chunks(owner), opts)) {
      const auto rows = [&](auto view) { return view.narrow(sd, call.q_start, call.q_rows); };
      const auto keys = [&](auto view) { return view.narrow(sd, call.k_start, call.k_rows); };
      const ConstTensorView qs = rows(q);
      Tensor part_dq(want_dq ? qs.shape() : Shape{0});              // (.., q_rows, d)
      Tensor part_dk(want_dk ? keys(held.k()).shape() : Shape{0});  // (.., k_rows, d)
      Tensor part_dv(keys(held.v()).shape());                       // (.., k_rows, dv)
      attention_backward(qs, keys(held.k()), keys(held.v()), rows(out), rows(lse), rows(dout),
                         want_dq ? part_dq.view() : TensorView{},
                         want_dk ? part_dk.view() : TensorView{}, part_dv, call.options);
      if (want_dq) detail::add_into(part_dq, rows(dq));
      if (want_dk) detail::add_into(part_dk, keys(grads.k()));
      detail::add_into(part_dv, keys(grads.v()));
    }
    clock.computed();
    if (transfers && step > 0) {
      c.wait_all(
          {&transfer[2], 1}, fn,
          "the dK/dV sums of step " + std::to_string(step) + " from rank " + std::to_string(prev));
      detail::add_into(incoming.v(), grads.v());
      if (want_dk) detail::add_into(incoming.k(), grads.k());
    }
    if (!transfers) {
      sending[0] = std::move(grads);
    } else {
      // The buffer sent two steps ago is free once that send completes.
      const int slot = step % 2;
      c.wait_all({&sent[slot], 1}, fn, "rank " + std::to_string(next) + " to take a dK/dV sum");
      sending[slot] = std::move(grads);
      sent[slot] = c.isend(sending[slot].data(), sending[slot].numel(), next, fn, kGradTag);
    }
    if (transfers && step + 1 < p.ranks) {
      c.wait_all({transfer, 2}, fn,
                 "the K/V block of step " + std::to_string(step + 1) + " from rank " +
                     std::to_string(prev));
      held = std::move(arriving);
    }
    clock.waited();
  }
  // Our own block's sums, back from the last rank that used it.
  KvBlock total;
  if (!transfers) {
    total = std::move(sending[0]);
  } else {
    total = KvBlock::empty(p, p.rank, want_dk);
    MPI_Request home = c.irecv(total.data(), total.numel(), prev, fn, kGradTag);
    c.wait_all({&home, 1}, fn, "this rank's dK/dV sums from rank " + std::to_string(prev));
    c.wait_all(sent, fn, "rank " + std::to_string(next) + " to take the last dK/dV sums");
  }
  detail::copy_into(total.v(), dv);
  if (want_dk) detail::copy_into(total.k(), dk);
}

}  // namespace llm_utils::dist
