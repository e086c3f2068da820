#pragma once
/// \file sequence_parallel.hpp
/// Attention over a sequence split across the ranks of a communicator: each rank holds a shard
/// of q, k and v along the sequence (sequence_shards.hpp) and gets its shard of out and lse, and
/// of dq, dk and dv in backward: the same numbers, to rounding, as one process running
/// attention.hpp's kernels on the whole tensors.
///
/// Shapes are attention.hpp's with N and M replaced by each rank's shard lengths (rank 2, 3 or
/// 4; GQA as there). Options mean what they mean for the whole sequence: `causal` and
/// `query_offset` in whole-sequence positions; `additive_mask` is the whole (N, M) mask (or
/// anything that broadcasts to it), given on every rank, of which each rank reads its rows and
/// the columns of the block in hand. Every rank must pass the same options and layout.
///
/// Two strategies:
///
/// - **Ring** (`ring_attention_*`): the K/V shards travel round the ring, rank r sending to r + 1,
///   each step's transfer in flight while the fused kernel runs on the block in hand; the
///   partial outputs are merged by their log-sum-exp. In backward the K/V shards travel again
///   and the dK/dV sums with them, one step behind, until they reach their owner. Memory per
///   rank: its shards plus two K/V blocks (and two dK/dV sums). Any head count.
/// - **Ulysses** (`ulysses_attention_*`): one all-to-all turns sequence shards into head
///   shards (every rank gets the whole sequence for H / P of the heads), the kernel runs
///   locally, a second all-to-all turns the result back. Needs as many key/value heads as ranks
///   (G >= P; rank 3's batch counts as heads); heads are shared out as evenly as they can be.
///
/// Causal load balance: with the zigzag layout (the default) every rank has the same unmasked
/// work; with contiguous shards the last rank has P times the first's.
///
/// Errors: every rank checks its arguments and the verdict is shared before any message moves,
/// so a bad argument on one rank throws the same ArgumentError on every rank. A rank that fails
/// later or stops answering makes the others throw CommError after the communicator's timeout.
///
/// Example:
/// \code
///   using namespace llm_utils;
///   dist::Communicator world = dist::Communicator::world();
///   Tensor q_local = dist::shard_sequence(q, -2, world.size(), world.rank(),
///                                         dist::SequenceLayout::zigzag);  // and k, v
///   Tensor out_local(q_local.shape()), lse_local({q_local.size(0)});
///   dist::ring_attention_forward(world, q_local, k_local, v_local, out_local, lse_local,
///                                {.causal = true});
/// \endcode

#include <memory>
#include <string>

#include "llm_utils/attention.hpp"
#include "llm_utils/dist/communicator.hpp"
#include "llm_utils/dist/sequence_shards.hpp"
#include "llm_utils/nn/attention_executor.hpp"

namespace llm_utils::dist {

/// Which way a sequence-parallel call splits the work.
enum class SequenceStrategy { ring, ulysses };
/// "ring" or "ulysses".
const char* strategy_name(SequenceStrategy strategy);
/// Parses "ring" or "ulysses"; throws ArgumentError naming the value otherwise.
SequenceStrategy parse_strategy(const std::string& name);

/// Where a ring call's time went, for benchmarks (docs/distributed.md): `compute_s` in the
/// kernels and merges, `wait_s` blocked on transfers after the compute of a step (0 when the
/// transfers are hidden). With `skip_transfers` set beforehand every step runs on the rank's
/// own K/V block and nothing is sent: the ring's time without the sends (wrong results).
struct RingStats {
  bool skip_transfers = false;
  double compute_s = 0.0;
  double wait_s = 0.0;
};

void ring_attention_forward(const Communicator& comm, ConstTensorView q, ConstTensorView k,
                            ConstTensorView v, TensorView out, TensorView lse,
                            const AttentionOptions& options,
                            SequenceLayout layout = SequenceLayout::zigzag,
                            RingStats* stats = nullptr);
/// `dq` and `dk` may be empty views when not needed (as attention_backward); `out` and `lse`
/// are the shards ring_attention_forward (or the Ulysses forward) wrote.
void ring_attention_backward(const Communicator& comm, ConstTensorView q, ConstTensorView k,
                             ConstTensorView v, ConstTensorView out, ConstTensorView lse,
                             ConstTensorView dout, TensorView dq, TensorView dk, TensorView dv,
                             const AttentionOptions& options,
                             SequenceLayout layout = SequenceLayout::zigzag,
                             RingStats* stats = nullptr);

/// Seconds `steps` ring steps of sending `floats` float32 values to the next rank (and
/// receiving as many from the previous) take with nothing else to do: the ring's transfers
/// alone, for benchmarks.
double ring_transfer_seconds(const Communicator& comm, int64_t floats, int steps);

void ulysses_attention_forward(const Communicator& comm, ConstTensorView q, ConstTensorView k,
                               ConstTensorView v, TensorView out, TensorView lse,
                               const AttentionOptions& options,
                               SequenceLayout layout = SequenceLayout::zigzag);
void ulysses_attention_backward(const Communicator& comm, ConstTensorView q, ConstTensorView k,
                                ConstTensorView v, ConstTensorView out, ConstTensorView lse,
                                ConstTensorView dout, TensorView dq, TensorView dk, TensorView dv,
                                const AttentionOptions& options,
                                SequenceLayout layout = SequenceLayout::zigzag);

/// The strategy's forward or backward.
void sequence_parallel_forward(SequenceStrategy strategy, const Communicator& comm,
                               ConstTensorView q, ConstTensorView k, ConstTensorView v,
                               TensorView out, TensorView lse, const AttentionOptions& options,
                               SequenceLayout layout = SequenceLayout::zigzag);
void sequence_parallel_backward(SequenceStrategy strategy, const Communicator& comm,
                                ConstTensorView q, ConstTensorView k, ConstTensorView v,
                                ConstTensorView out, ConstTensorView lse, ConstTensorView dout,
                                TensorView dq, TensorView dk, TensorView dv,
                                const AttentionOptions& options,
                                SequenceLayout layout = SequenceLayout::zigzag);

/// An AttentionExecutor (attention_executor.hpp) that runs a module's attention with this
/// strategy over `comm`'s ranks: give MultiHeadAttention::set_attention_executor it, and every
/// rank's forward takes that rank's tokens (x (B, N_r, d_in), N_r as the layout gives, e.g.
/// dist::shard_sequence(x, 1, ...)) and returns their outputs; backward gives their dx and the
/// rank's share of each parameter gradient, which GradientAverager with GradientReduction::sum
/// adds up over the ranks.
///
/// Example:
/// \code
///   mha.set_attention_executor(dist::sequence_parallel_executor(world));
///   Tensor y = mha.forward(dist::shard_sequence(x, 1, world.size(), world.rank(),
///                                               dist::SequenceLayout::zigzag));
///   mha.backward(dy_local);
///   dist::GradientAverager(world, mha.named_parameters(), dist::GradientReduction::sum).average();
/// \endcode
std::shared_ptr<AttentionExecutor> sequence_parallel_executor(
    Communicator comm, SequenceStrategy strategy = SequenceStrategy::ring,
    SequenceLayout layout = SequenceLayout::zigzag);

}  // namespace llm_utils::dist
