// Ulysses attention (sequence_parallel.hpp): an all-to-all from sequence shards to head shards,
// the fused kernel on the whole sequence of this rank's heads, and an all-to-all back. Every
// tensor is handled as rank 4 (B, heads, rows, columns); lse as (B, H, rows, 1).

#include <string>
#include <vector>

#include "dist/sequence_problem.hpp"
#include "dist/view_ops.hpp"
#include "llm_utils/dist/sequence_parallel.hpp"

namespace llm_utils::dist {
namespace {

using detail::SequenceProblem;

// Heads [start, start + count) of each rank: the key/value heads split as evenly as they can
// be, each rank's query heads those of its key/value heads.
struct HeadSplit {
  std::vector<int64_t> start, count;
};

HeadSplit split_heads(int64_t heads, int ranks, int64_t per_head = 1) {
  HeadSplit s;
  for (int r = 0; r < ranks; ++r) {
    const int64_t base = heads / ranks, extra = heads % ranks;
    s.start.push_back((r * base + std::min<int64_t>(r, extra)) * per_head);
    s.count.push_back((base + (r < extra ? 1 : 0)) * per_head);
  }
  return s;
}

// A view of rank 2 to 4 as (B, heads, rows, cols); `add_column` reads an lse-like (.., rows)
// view as (B, heads, rows, 1).
template <typename T>
BasicTensorView<T> as_bhnc(BasicTensorView<T> t, bool add_column = false) {
  if (add_column) {
    Shape shape = t.shape(), strides = t.strides();
    shape.push_back(1);
    strides.push_back(1);
    t = BasicTensorView<T>(t.data(), shape, strides);
  }
  return detail::with_leading_ones(t, 4);
}

// One tensor that changes hands: its local (B, X, L, c) shard, how its X heads split, and
// whether its sequence is the keys' (M) or the queries' (N).
struct Exchanged {
  ConstTensorView local;
  const HeadSplit* heads;
  bool keys;
};

int64_t whole_length(const SequenceProblem& p, bool keys) {
  return keys ? p.m : p.n;
}
std::vector<SequenceChunk> chunks_of(const SequenceProblem& p, int r, bool keys) {
  return keys ? p.kv_chunks(r) : p.q_chunks(r);
}

// Sequence shards -> head shards: for each exchanged tensor, this rank's heads over the whole
// sequence, (B, heads of this rank, whole length, c).
std::vector<Tensor> to_head_shards(Communicator::Impl& comm, const SequenceProblem& p,
                                   const std::vector<Exchanged>& parts, const char* fn) {
  const int me = p.rank;
  std::vector<Tensor> whole;
  for (const Exchanged& e : parts) {
    whole.emplace_back(Shape{e.local.size(0), e.heads->count[static_cast<size_t>(me)],
                             whole_length(p, e.keys), e.local.size(3)});
  }
  // To rank r: every part's rows of this rank for r's heads, one message.
  const auto slice_for = [&](const Exchanged& e, int r) {
    return e.local.narrow(1, e.heads->start[static_cast<size_t>(r)],
                          e.heads->count[static_cast<size_t>(r)]);
  };
  // From rank r: its rows for our heads, placed at its chunks' positions.
  const auto place_from = [&](int r, const float* data) {
    for (size_t i = 0; i < parts.size(); ++i) {
      const Exchanged& e = parts[i];
      Shape shape = whole[i].shape();
      shape[2] = shard_length(whole_length(p, e.keys), p.ranks, r, p.layout);
      const ConstTensorView from(data, shape);
      int64_t at = 0;
      for (const SequenceChunk& c : chunks_of(p, r, e.keys)) {
        detail::copy_into(from.narrow(2, at, c.length),
                          whole[i].view().narrow(2, c.start, c.length));
        at += c.length;
      }
      data += shape_numel(shape);
    }
  };
  std::vector<Tensor> outgoing(static_cast<size_t>(p.ranks)),
      incoming(static_cast<size_t>(p.ranks));
  std::vector<MPI_Request> requests;
  for (int r = 0; r < p.ranks; ++r) {
    int64_t out_count = 0, in_count = 0;
    for (const Exchanged& e : parts) {
      out_count += shape_numel(slice_for(e, r).shape());
      in_count += e.local.size(0) * e.heads->count[static_cast<size_t>(me)] *
                  shard_length(whole_length(p, e.keys), p.ranks, r, p.layout) * e.local.size(3);
    }
    Tensor& o = outgoing[static_cast<size_t>(r)];
    o = Tensor({out_count});
    float* at = o.data();
    for (const Exchanged& e : parts) {
      const ConstTensorView s = slice_for(e, r);
      detail::copy_into(s, TensorView(at, s.shape()));
      at += s.numel();
    }
    if (r == me) continue;
    incoming[static_cast<size_t>(r)] = Tensor({in_count});
    requests.push_back(comm.irecv(incoming[static_cast<size_t>(r)].data(), in_count, r, fn));
    requests.push_back(comm.isend(o.data(), out_count, r, fn));
  }
  place_from(me, outgoing[static_cast<size_t>(me)].data());
  comm.wait_all(requests, fn, "the all-to-all from sequence shards to head shards");
  for (int r = 0; r < p.ranks; ++r) {
    if (r != me) place_from(r, incoming[static_cast<size_t>(r)].data());
  }
  return whole;
}

// Head shards -> sequence shards: each (B, heads of this rank, whole length, c) result sent back
// as the rows every rank holds, and written into this rank's (B, X, L, c) `local` outputs.
void to_sequence_shards(Communicator::Impl& comm, const SequenceProblem& p,
                        const std::vector<Tensor>& whole, const std::vector<HeadSplit*>& heads,
                        const std::vector<bool>& keys, const std::vector<TensorView>& local,
                        const char* fn) {
  const int me = p.rank;
  std::vector<Tensor> outgoing(static_cast<size_t>(p.ranks)),
      incoming(static_cast<size_t>(p.ranks));
  std::vector<MPI_Request> requests;
  for (int r = 0; r < p.ranks; ++r) {
    // To rank r: its rows (its chunks, in shard order) of our heads, every part in turn.
    int64_t out_count = 0, in_count = 0;
    for (size_t i = 0; i < whole.size(); ++i) {
      const int64_t rows = shard_length(whole_length(p, keys[i]), p.ranks, r, p.layout);
      out_count += whole[i].size(0) * whole[i].size(1) * rows * whole[i].size(3);
      in_count += local[i].size(0) * heads[i]->count[static_cast<size_t>(r)] * local[i].size(2) *
                  local[i].size(3);
    }
    Tensor& o = outgoing[static_cast<size_t>(r)];
    o = Tensor({out_count});
    float* at = o.data();
    for (size_t i = 0; i < whole.size(); ++i) {
      Shape shape = whole[i].shape();
      shape[2] = shard_length(whole_length(p, keys[i]), p.ranks, r, p.layout);
      const TensorView to(at, shape);
      int64_t row = 0;
      for (const SequenceChunk& c : chunks_of(p, r, keys[i])) {
        detail::copy_into(whole[i].view().narrow(2, c.start, c.length),
                          to.narrow(2, row, c.length));
        row += c.length;
      }
      at += shape_numel(shape);
    }
    if (r == me) continue;
    incoming[static_cast<size_t>(r)] = Tensor({in_count});
    requests.push_back(comm.irecv(incoming[static_cast<size_t>(r)].data(), in_count, r, fn));
    requests.push_back(comm.isend(o.data(), out_count, r, fn));
  }
  const auto place_from = [&](int r, const float* data) {
    for (size_t i = 0; i < whole.size(); ++i) {
      const TensorView dst = local[i].narrow(1, heads[i]->start[static_cast<size_t>(r)],
                                             heads[i]->count[static_cast<size_t>(r)]);
      detail::copy_into(ConstTensorView(data, dst.shape()), dst);
      data += dst.numel();
    }
  };
  place_from(me, outgoing[static_cast<size_t>(me)].data());
  comm.wait_all(requests, fn, "the all-to-all from head shards back to sequence shards");
  for (int r = 0; r < p.ranks; ++r) {
    if (r != me) place_from(r, incoming[static_cast<size_t>(r)].data());
  }
}

// The problem's head split, after the check that every rank gets a key/value head.
struct UlyssesHeads {
  HeadSplit q, kv;
};

UlyssesHeads ulysses_heads(const SequenceProblem& p, ConstTensorView q4, ConstTensorView k4,
                           const char* fn) {
  const int64_t heads = q4.size(1), kv_heads = k4.size(1);
  if (kv_heads < p.ranks) {
    detail::fail_everywhere(fn,
                            "Ulysses shares out key/value heads and needs at least one per "
                            "rank: " +
                                std::to_string(kv_heads) + " key/value heads (" +
                                std::to_string(heads) + " query heads) over " +
                                std::to_string(p.ranks) + " ranks; use the ring");
  }
  return {split_heads(kv_heads, p.ranks, heads / kv_heads), split_heads(kv_heads, p.ranks)};
}

// The options for this rank's heads: the mask read as rank 4 (B|1, H|1, N|1, M|1) and cut to
// those heads; a rank-3 mask shared by groups of heads (Bm neither 1 nor H) is expanded first.
AttentionOptions head_options(const AttentionOptions& options, const SequenceProblem& p,
                              const HeadSplit& q_heads, int64_t heads, Tensor& storage) {
  AttentionOptions o = detail::with_explicit_scale(options, p.d);
  ConstTensorView mask = options.additive_mask;
  if (mask.data() == nullptr) return o;
  const int64_t h0 = q_heads.start[static_cast<size_t>(p.rank)];
  const int64_t hc = q_heads.count[static_cast<size_t>(p.rank)];
  if (static_cast<int64_t>(p.q_shape.size()) == 3 && mask.dim() == 3 && mask.size(0) != 1 &&
      mask.size(0) != heads) {
    const int64_t group = heads / mask.size(0);
    storage = Tensor({hc, mask.size(1), mask.size(2)});
    for (int64_t h = 0; h < hc; ++h) {
      detail::copy_into(mask.select((h0 + h) / group), storage.view().select(h));
    }
    o.additive_mask = storage.view();
    return o;
  }
  if (mask.dim() >= 3 && mask.size(-3) != 1) mask = mask.narrow(mask.dim() - 3, h0, hc);
  o.additive_mask = mask;
  return o;
}

}  // namespace

void ulysses_attention_forward(const Communicator& comm, ConstTensorView q, ConstTensorView k,
                               ConstTensorView v, TensorView out, TensorView lse,
                               const AttentionOptions& options, SequenceLayout layout) {
  constexpr const char* fn = "ulysses_attention_forward";
  Communicator::Impl& c = comm.impl();
  const SequenceProblem p = detail::check_sequence_problem(
      c, fn, q, k, v, detail::CallTensors::of_forward(out, lse), options, layout);
  const ConstTensorView q4 = as_bhnc(q), k4 = as_bhnc(k), v4 = as_bhnc(v);
  UlyssesHeads h = ulysses_heads(p, q4, k4, fn);
  const std::vector<Tensor> whole =
      to_head_shards(c, p, {{q4, &h.q, false}, {k4, &h.kv, true}, {v4, &h.kv, true}}, fn);
  Tensor mask_storage;
  const AttentionOptions opts = head_options(options, p, h.q, q4.size(1), mask_storage);
  Tensor out_h({whole[0].size(0), whole[0].size(1), p.n, p.dv});  // (B, my heads, N, dv)
  Tensor lse_h({whole[0].size(0), whole[0].size(1), p.n});        // (B, my heads, N)
  attention_forward(whole[0], whole[1], whole[2], out_h, lse_h, opts);
  Tensor lse_h4 = std::move(lse_h).reshape({lse_h.size(0), lse_h.size(1), p.n, 1});
  std::vector<Tensor> results;
  results.push_back(std::move(out_h));
  results.push_back(std::move(lse_h4));
  to_sequence_shards(c, p, results, {&h.q, &h.q}, {false, false},
                     {as_bhnc(out), as_bhnc(lse, true)}, fn);
}

void ulysses_attention_backward(const Communicator& comm, ConstTensorView q, ConstTensorView k,
                                ConstTensorView v, ConstTensorView out, ConstTensorView lse,
                                ConstTensorView dout, TensorView dq, TensorView dk, TensorView dv,
                                const AttentionOptions& options, SequenceLayout layout) {
  constexpr const char* fn = "ulysses_attention_backward";
  Communicator::Impl& c = comm.impl();
  const SequenceProblem p = detail::check_sequence_problem(
      c, fn, q, k, v, detail::CallTensors::of_backward(out, lse, dout, dq, dk, dv), options,
      layout);
  const ConstTensorView q4 = as_bhnc(q), k4 = as_bhnc(k), v4 = as_bhnc(v);
  UlyssesHeads h = ulysses_heads(p, q4, k4, fn);
  const std::vector<Tensor> whole = to_head_shards(c, p,
                                                   {{q4, &h.q, false},
                                                    {k4, &h.kv, true},
                                                    {v4, &h.kv, true},
                                                    {as_bhnc(out), &h.q, false},
                                                    {as_bhnc(lse, true), &h.q, false},
                                                    {as_bhnc(dout), &h.q, false}},
                                                   fn);
  Tensor mask_storage;
  const AttentionOptions opts = head_options(options, p, h.q, q4.size(1), mask_storage);
  const bool want_dq = dq.data() != nullptr, want_dk = dk.data() != nullptr;
  const ConstTensorView lse_h(whole[4].data(), {whole[4].size(0), whole[4].size(1), p.n});
  std::vector<Tensor> grads;
  grads.emplace_back(want_dq ? whole[0].shape() : Shape{0, 0, 0, 0});  // (B, my heads, N, d)
  grads.emplace_back(want_dk ? whole[1].shape() : Shape{0, 0, 0, 0});  // (B, my kv heads, M, d)
  grads.emplace_back(whole[2].shape());                                // (B, my kv heads, M, dv)
  attention_backward(whole[0], whole[1], whole[2], whole[3], lse_h, whole[5],
                     want_dq ? grads[0].view() : TensorView{},
                     want_dk ? grads[1].view() : TensorView{}, grads[2], opts);
  std::vector<Tensor> results;
  std::vector<HeadSplit*> heads;
  std::vector<bool> keys;
  std::vector<TensorView> local;
  if (want_dq) {
    results.push_back(std::move(grads[0]));
    heads.push_back(&h.q);
    keys.push_back(false);
    local.push_back(as_bhnc(dq));
  }
  if (want_dk) {
    results.push_back(std::move(grads[1]));
    heads.push_back(&h.kv);
    keys.push_back(true);
    local.push_back(as_bhnc(dk));
  }
  results.push_back(std::move(grads[2]));
  heads.push_back(&h.kv);
  keys.push_back(true);
  local.push_back(as_bhnc(dv));
  to_sequence_shards(c, p, results, heads, keys, local, fn);
}

}  // namespace llm_utils::dist
