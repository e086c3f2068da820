// Sequence layouts and shard copies (sequence_shards.hpp).

#include "llm_utils/dist/sequence_shards.hpp"

#include <algorithm>
#include <cstring>

#include "dist/communicator_impl.hpp"
#include "dist/view_ops.hpp"
#include "llm_utils/error.hpp"

namespace llm_utils::dist {
namespace {

// Part i of n rows cut into `parts` as equal as possible: the first n % parts one row longer.
SequenceChunk balanced_part(int64_t n, int64_t parts, int64_t i) {
  const int64_t base = n / parts, extra = n % parts;
  return {i * base + std::min(i, extra), base + (i < extra ? 1 : 0)};
}

int64_t normalized_dim(const char* fn, int64_t dim, int64_t rank) {
  const int64_t d = dim < 0 ? dim + rank : dim;
  if (d < 0 || d >= rank) {
    throw ArgumentError(std::string(fn) + ": dim " + std::to_string(dim) +
                        " is out of range for a tensor of rank " + std::to_string(rank));
  }
  return d;
}

}  // namespace

const char* layout_name(SequenceLayout layout) {
  return layout == SequenceLayout::zigzag ? "zigzag" : "contiguous";
}

SequenceLayout parse_layout(const std::string& name) {
  if (name == "contiguous") return SequenceLayout::contiguous;
  if (name == "zigzag") return SequenceLayout::zigzag;
  throw ArgumentError("unknown sequence layout '" + name + "' (expected contiguous or zigzag)");
}

std::vector<SequenceChunk> sequence_chunks(int64_t n, int ranks, int rank, SequenceLayout layout) {
  if (n < 0 || ranks < 1 || rank < 0 || rank >= ranks) {
    throw ArgumentError(
        "sequence_chunks: need n >= 0 and 0 <= rank < ranks, got n=" + std::to_string(n) +
        " rank=" + std::to_string(rank) + " ranks=" + std::to_string(ranks));
  }
  if (layout == SequenceLayout::contiguous) return {balanced_part(n, ranks, rank)};
  const int64_t parts = 2 * static_cast<int64_t>(ranks);
  return {balanced_part(n, parts, rank), balanced_part(n, parts, parts - 1 - rank)};
}

int64_t shard_length(int64_t n, int ranks, int rank, SequenceLayout layout) {
  int64_t total = 0;
  for (const SequenceChunk& c : sequence_chunks(n, ranks, rank, layout)) total += c.length;
  return total;
}

Tensor shard_sequence(ConstTensorView whole, int64_t dim, int ranks, int rank,
                      SequenceLayout layout) {
  const int64_t d = normalized_dim("shard_sequence", dim, whole.dim());
  Shape shape = whole.shape();
  shape[static_cast<size_t>(d)] = shard_length(whole.size(d), ranks, rank, layout);
  Tensor shard(shape);
  int64_t at = 0;
  for (const SequenceChunk& c : sequence_chunks(whole.size(d), ranks, rank, layout)) {
    detail::copy_into(whole.narrow(d, c.start, c.length), shard.view().narrow(d, at, c.length));
    at += c.length;
  }
  return shard;
}

void place_shard(ConstTensorView shard, TensorView whole, int64_t dim, int ranks, int rank,
                 SequenceLayout layout) {
  const int64_t d = normalized_dim("place_shard", dim, whole.dim());
  const int64_t n = whole.size(d);
  Shape expected = whole.shape();
  expected[static_cast<size_t>(d)] = shard_length(n, ranks, rank, layout);
  if (shard.shape() != expected) {
    throw ArgumentError("place_shard: rank " + std::to_string(rank) + "'s shard of " +
                        shape_to_string(whole.shape()) + " must have shape " +
                        shape_to_string(expected) + ", got " + shape_to_string(shard.shape()));
  }
  int64_t at = 0;
  for (const SequenceChunk& c : sequence_chunks(n, ranks, rank, layout)) {
    detail::copy_into(shard.narrow(d, at, c.length), whole.narrow(d, c.start, c.length));
    at += c.length;
  }
}

Tensor gather_sequence(const Communicator& comm, ConstTensorView shard, int64_t dim,
                       SequenceLayout layout) {
  constexpr const char* fn = "gather_sequence";
  Communicator::Impl& c = comm.impl();
  const int64_t d = normalized_dim(fn, dim, shard.dim());
  // Every rank's shard shape, so that the whole shape is known and checked everywhere.
  const auto reports = detail::checked_on_every_rank(c, fn, [&](detail::RankReport& mine) {
    if (shard.dim() > detail::RankReport::kValues) {
      throw ArgumentError(std::string(fn) + ": rank " + std::to_string(shard.dim()) +
                          " tensors are not supported");
    }
    mine.values[0] = shard.dim();
    for (int64_t i = 0; i < shard.dim(); ++i)
      mine.values[static_cast<size_t>(i + 1)] = shard.size(i);
  });
  int64_t n = 0;
  for (int r = 0; r < c.size; ++r) {
    const auto& v = reports[static_cast<size_t>(r)].values;
    bool same = v[0] == shard.dim();
    for (int64_t i = 0; same && i < shard.dim(); ++i) {
      same = i == d || v[static_cast<size_t>(i + 1)] == shard.size(i);
    }
    if (!same) {
      detail::fail_everywhere(fn, "the shards' shapes differ outside dimension " +
                                      std::to_string(d) + " (rank " + std::to_string(r) + ")");
    }
    n += v[static_cast<size_t>(d + 1)];
  }
  for (int r = 0; r < c.size; ++r) {
    const int64_t got = reports[static_cast<size_t>(r)].values[static_cast<size_t>(d + 1)];
    if (got != shard_length(n, c.size, r, layout)) {
      detail::fail_everywhere(fn, "rank " + std::to_string(r) + " holds " + std::to_string(got) +
                                      " rows; the " + layout_name(layout) + " layout of " +
                                      std::to_string(n) + " rows over " + std::to_string(c.size) +
                                      " ranks gives it " +
                                      std::to_string(shard_length(n, c.size, r, layout)));
    }
  }
  // Each rank's shard moves whole (contiguous), then lands in its rows of the result.
  Tensor mine = Tensor::from_view(shard);
  Shape whole_shape = shard.shape();
  whole_shape[static_cast<size_t>(d)] = n;
  Tensor whole(whole_shape);
  std::vector<Tensor> shards(static_cast<size_t>(c.size));
  std::vector<MPI_Request> requests;
  for (int r = 0; r < c.size; ++r) {
    Shape s = whole_shape;
    s[static_cast<size_t>(d)] = shard_length(n, c.size, r, layout);
    shards[static_cast<size_t>(r)] = r == c.rank ? Tensor(mine) : Tensor(s);
    if (r == c.rank) continue;
    requests.push_back(c.irecv(shards[static_cast<size_t>(r)].data(),
                               shards[static_cast<size_t>(r)].numel(), r, fn));
    requests.push_back(c.isend(mine.data(), mine.numel(), r, fn));
  }
  c.wait_all(requests, fn, "the other ranks' shards");
  for (int r = 0; r < c.size; ++r)
    place_shard(shards[static_cast<size_t>(r)], whole, d, c.size, r, layout);
  return whole;
}

}  // namespace llm_utils::dist
