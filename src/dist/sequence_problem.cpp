// check_sequence_problem (sequence_problem.hpp).

#include "dist/sequence_problem.hpp"

#include <string>

#include "kernels/attention_checks.hpp"
#include "kernels/attention_dispatch.hpp"
#include "llm_utils/error.hpp"

namespace llm_utils::dist::detail {
namespace kd = llm_utils::detail;

namespace {

// Report slots.
enum Slot : size_t {
  rank_of_q,
  n_local,
  m_local,
  d_of_q,
  dv_of_v,
  lead0,
  lead1,
  kv_lead0,
  kv_lead1,
  causal,
  query_offset,
  mask_rank,
  mask_dims /* 4 slots */
};

Shape with_size(Shape s, size_t dim, int64_t size) {
  s[dim] = size;
  return s;
}

}  // namespace

Shape SequenceProblem::kv_shape_of(int r, int64_t last) const {
  Shape s = with_size(k_shape, static_cast<size_t>(seq_dim), kv_rows(r));
  s.back() = last;
  return s;
}

AttentionOptions with_explicit_scale(const AttentionOptions& options, int64_t d) {
  AttentionOptions o = options;
  if (!o.scale_divisor) o.scale_divisor = kd::default_divisor(d);
  return o;
}

SequenceProblem check_sequence_problem(Communicator::Impl& comm, const char* fn, ConstTensorView q,
                                       ConstTensorView k, ConstTensorView v, const CallTensors& t,
                                       const AttentionOptions& options, SequenceLayout layout) {
  AttentionOptions local_options = options;
  local_options.additive_mask = {};
  local_options.causal = false;  // the offset is checked below, the mask against the whole
  local_options.query_offset = 0;
  const auto reports = checked_on_every_rank(comm, fn, [&](RankReport& mine) {
    const kd::AttentionShape s = kd::checked_shape(fn, q, k, v, local_options);
    if (options.window_left >= 0 || options.softcap != 0.0f ||
        options.alibi_slopes.data() != nullptr || options.sinks.data() != nullptr) {
      throw ArgumentError(std::string(fn) +
                          ": window_left, softcap, alibi_slopes and sinks are not supported over "
                          "a split sequence");
    }
    if (options.query_offset < 0) {
      throw ArgumentError(std::string(fn) + ": query_offset must be >= 0, got " +
                          std::to_string(options.query_offset));
    }
    const Shape out_shape = kd::with_leading_of(q.shape(), {s.n, s.dv});
    Shape lse_shape(q.shape().begin(), q.shape().end() - 1);
    kd::NamedExtents inputs = {{"q", q}, {"k", k}, {"v", v}};
    kd::NamedExtents outputs;
    if (t.backward) {
      kd::expect_shape(fn, "out", t.out.shape(), out_shape);
      kd::expect_shape(fn, "lse", t.lse.shape(), lse_shape);
      kd::expect_shape(fn, "dout", t.dout.shape(), out_shape);
      kd::expect_matrices(fn, "out", t.out, kd::Rank{q.dim()});
      kd::expect_matrices(fn, "dout", t.dout, kd::Rank{q.dim()});
      inputs.insert(inputs.end(), {{"out", t.out}, {"lse", t.lse}, {"dout", t.dout}});
      if (t.dq.data() != nullptr) {
        kd::expect_shape(fn, "dq", t.dq.shape(), q.shape());
        outputs.emplace_back("dq", t.dq);
      }
      if (t.dk.data() != nullptr) {
        kd::expect_shape(fn, "dk", t.dk.shape(), k.shape());
        outputs.emplace_back("dk", t.dk);
      }
      if (t.dv.data() == nullptr && v.numel() > 0) {
        throw ArgumentError(std::string(fn) + ": dv is required (dq and dk may be empty)");
      }
      kd::expect_shape(fn, "dv", t.dv.shape(), v.shape());
      outputs.emplace_back("dv", t.dv);
    } else {
      kd::expect_shape(fn, "out", t.out_w.shape(), out_shape);
      kd::expect_shape(fn, "lse", t.lse_w.shape(), lse_shape);
      kd::expect_matrices(fn, "out", t.out_w, kd::Rank{q.dim()});
      outputs = {{"out", t.out_w}, {"lse", t.lse_w}};
    }
    kd::check_no_overlap(fn, kd::with_mask(inputs, options), outputs);
    const Shape& ms = options.additive_mask.shape();
    if (options.additive_mask.data() != nullptr && ms.size() > 4) {
      throw ArgumentError(std::string(fn) + ": additive_mask has rank " +
                          std::to_string(ms.size()) + ", at most 4 is supported");
    }
    auto& v_ = mine.values;
    v_[rank_of_q] = q.dim();
    v_[n_local] = s.n;
    v_[m_local] = s.m;
    v_[d_of_q] = s.d;
    v_[dv_of_v] = s.dv;
    v_[lead0] = q.dim() >= 3 ? q.size(0) : 1;
    v_[lead1] = q.dim() == 4 ? q.size(1) : 1;
    v_[kv_lead0] = k.dim() >= 3 ? k.size(0) : 1;
    v_[kv_lead1] = k.dim() == 4 ? k.size(1) : 1;
    v_[causal] = options.causal ? 1 : 0;
    v_[query_offset] = options.query_offset;
    v_[mask_rank] = options.additive_mask.data() != nullptr ? static_cast<int64_t>(ms.size()) : 0;
    for (size_t i = 0; i < ms.size() && options.additive_mask.data() != nullptr; ++i) {
      v_[mask_dims + i] = ms[i];
    }
  });

  SequenceProblem p;
  p.ranks = comm.size;
  p.rank = comm.rank;
  p.layout = layout;
  p.seq_dim = q.dim() - 2;
  p.d = q.size(-1);
  p.dv = v.size(-1);
  p.q_shape = q.shape();
  p.k_shape = k.shape();
  p.v_shape = v.shape();
  const auto& mine = reports[static_cast<size_t>(comm.rank)].values;
  for (int r = 0; r < comm.size; ++r) {
    const auto& theirs = reports[static_cast<size_t>(r)].values;
    for (size_t slot = 0; slot < RankReport::kValues; ++slot) {
      if (slot == n_local || slot == m_local || theirs[slot] == mine[slot]) continue;
      fail_everywhere(fn, "the ranks disagree: rank " + std::to_string(r) +
                              " passed other shapes or options than rank " +
                              std::to_string(comm.rank) +
                              " (every rank must pass the same batch, heads, d, dv, mask, "
                              "causal and query_offset)");
    }
    p.n += theirs[n_local];
    p.m += theirs[m_local];
  }
  for (int r = 0; r < comm.size; ++r) {
    const auto& theirs = reports[static_cast<size_t>(r)].values;
    for (const auto& [what, got, total] :
         {std::tuple{"query", theirs[n_local], p.n}, std::tuple{"key", theirs[m_local], p.m}}) {
      const int64_t expected = shard_length(total, comm.size, r, layout);
      if (got == expected) continue;
      fail_everywhere(fn, "rank " + std::to_string(r) + " holds " + std::to_string(got) + " " +
                              what + " rows; the " + layout_name(layout) + " layout of " +
                              std::to_string(total) + " rows over " + std::to_string(comm.size) +
                              " ranks gives it " + std::to_string(expected) +
                              " (dist::shard_sequence makes the shards)");
    }
  }
  // The mask against the whole problem: the same verdict on every rank, whose masks agree.
  if (options.additive_mask.data() != nullptr) {
    kd::MemoryExtent whole_q = q, whole_k = k, whole_v = v;
    whole_q.shape[static_cast<size_t>(p.seq_dim)] = p.n;
    whole_k.shape[static_cast<size_t>(p.seq_dim)] = p.m;
    whole_v.shape[static_cast<size_t>(p.seq_dim)] = p.m;
    AttentionOptions mask_only;
    mask_only.additive_mask = options.additive_mask;
    mask_only.scale_divisor = options.scale_divisor;
    kd::checked_shape(fn, whole_q, whole_k, whole_v, mask_only);
  }
  return p;
}

}  // namespace llm_utils::dist::detail
