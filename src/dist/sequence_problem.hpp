#pragma once
// The argument checks every sequence-parallel call makes, on every rank with one shared
// verdict, and the whole problem they establish: each rank's shard lengths, the whole N and M.

#include <cstdint>
#include <vector>

#include "dist/communicator_impl.hpp"
#include "llm_utils/attention.hpp"
#include "llm_utils/dist/sequence_shards.hpp"

namespace llm_utils::dist::detail {

// What a call passed besides q, k, v (empty views for what it has not).
struct CallTensors {
  ConstTensorView out, lse, dout;  // backward's inputs
  TensorView out_w, lse_w;         // forward's outputs
  TensorView dq, dk, dv;           // backward's outputs
  bool backward = false;

  static CallTensors of_forward(TensorView out, TensorView lse) {
    CallTensors t;
    t.out_w = out;
    t.lse_w = lse;
    return t;
  }
  static CallTensors of_backward(ConstTensorView out, ConstTensorView lse, ConstTensorView dout,
                                 TensorView dq, TensorView dk, TensorView dv) {
    return {out, lse, dout, {}, {}, dq, dk, dv, true};
  }
};

struct SequenceProblem {
  int ranks = 1;
  int rank = 0;
  int64_t seq_dim = 0;  // q's (and k's, v's, out's) sequence dimension; lse's last
  int64_t n = 0;        // the whole query length
  int64_t m = 0;        // the whole key length
  int64_t d = 0, dv = 0;
  Shape q_shape, k_shape, v_shape;  // this rank's
  SequenceLayout layout = SequenceLayout::zigzag;

  std::vector<SequenceChunk> q_chunks(int r) const { return sequence_chunks(n, ranks, r, layout); }
  std::vector<SequenceChunk> kv_chunks(int r) const { return sequence_chunks(m, ranks, r, layout); }
  int64_t q_rows(int r) const { return shard_length(n, ranks, r, layout); }
  int64_t kv_rows(int r) const { return shard_length(m, ranks, r, layout); }
  // The shape of rank r's k (or v, with `last` = dv) shard.
  Shape kv_shape_of(int r, int64_t last) const;
};

// Checks the local shapes (attention.hpp's rules), strides and overlaps, shares the verdict,
// then checks that the ranks agree (ranks, batch, heads, d, dv, the mask's shape) and that each
// shard has its layout's length; every rank throws the same error if not.
SequenceProblem check_sequence_problem(Communicator::Impl& comm, const char* fn, ConstTensorView q,
                                       ConstTensorView k, ConstTensorView v, const CallTensors& t,
                                       const AttentionOptions& options, SequenceLayout layout);

// The options with the scale made explicit (attention.hpp's default from d), so that a call on
// a block computes what the whole call would.
AttentionOptions with_explicit_scale(const AttentionOptions& options, int64_t d);

}  // namespace llm_utils::dist::detail
