#pragma once
/// \file sequence_shards.hpp
/// How a sequence of N rows is split over P ranks for sequence parallelism, and the copies
/// between a whole tensor and one rank's shard.
///
/// - `contiguous`: rank r holds rows [start_r, start_r + n_r), the P parts as equal as they can
///   be (the first N % P ranks one row more).
/// - `zigzag`: the sequence cut into 2P chunks as equal as they can be; rank r holds chunk r and
///   chunk 2P - 1 - r, in that order. Under a causal mask every rank then has the same work
///   (ring-flash-attention's zigzag), where contiguous leaves rank P - 1 with P times rank 0's.
///
/// A shard holds its rows in the order above, chunk after chunk, along the sequence dimension
/// (the second last of q, k, v, out; the last of lse).
///
/// Example:
/// \code
///   using namespace llm_utils::dist;
///   Tensor q_local = shard_sequence(q, -2, world.size(), world.rank(), SequenceLayout::zigzag);
/// \endcode

#include <cstdint>
#include <string>
#include <vector>

#include "llm_utils/tensor.hpp"

namespace llm_utils::dist {

class Communicator;

enum class SequenceLayout { contiguous, zigzag };

/// "contiguous" or "zigzag".
const char* layout_name(SequenceLayout layout);
/// Parses "contiguous" or "zigzag"; throws ArgumentError naming the value otherwise.
SequenceLayout parse_layout(const std::string& name);

/// Rows [start, start + length) of the whole sequence.
struct SequenceChunk {
  int64_t start = 0;
  int64_t length = 0;
};

/// The chunks rank `rank` of `ranks` holds of a sequence of n rows, in the order it holds them.
/// Throws ArgumentError unless n >= 0 and 0 <= rank < ranks.
std::vector<SequenceChunk> sequence_chunks(int64_t n, int ranks, int rank, SequenceLayout layout);
/// The number of rows rank `rank` holds.
int64_t shard_length(int64_t n, int ranks, int rank, SequenceLayout layout);

/// Rank `rank`'s rows of `whole` along dimension `dim` (negative counts from the end), copied
/// into a contiguous tensor.
Tensor shard_sequence(ConstTensorView whole, int64_t dim, int ranks, int rank,
                      SequenceLayout layout);
/// The inverse of shard_sequence: copies `shard` into its rows of `whole` (n = whole's size
/// along dim).
void place_shard(ConstTensorView shard, TensorView whole, int64_t dim, int ranks, int rank,
                 SequenceLayout layout);
/// Every rank's shard put together, on every rank: the whole tensor (its size along dim the sum
/// of the shards').
Tensor gather_sequence(const Communicator& comm, ConstTensorView shard, int64_t dim,
                       SequenceLayout layout);

}  // namespace llm_utils::dist
