#pragma once
// One rank's queries against one K/V block of the whole sequence: which kernel calls cover
// them (a call per pair of query chunk and key chunk, each with its causal offset and its slice
// of the mask, pairs wholly hidden by the causal mask skipped), and the merge of a call's
// partial output into the running one by log-sum-exp.

#include <cstdint>
#include <vector>

#include "llm_utils/attention.hpp"
#include "llm_utils/dist/sequence_shards.hpp"

namespace llm_utils::dist::detail {

struct BlockCall {
  int64_t q_start = 0;  // rows [q_start, q_start + q_rows) of the rank's query shard
  int64_t q_rows = 0;
  int64_t k_start = 0;  // rows [k_start, k_start + k_rows) of the K/V block
  int64_t k_rows = 0;
  AttentionOptions options;  // causal offset and mask slice for this pair
};

// The calls for queries held as `q_chunks` (whole-sequence positions, in shard order) against a
// block holding `kv_chunks`, under `options` (whose scale must be explicit: the calls see parts
// of the keys). Without a causal mask and with a mask constant along N and M, one call covers
// everything.
std::vector<BlockCall> block_calls(const std::vector<SequenceChunk>& q_chunks,
                                   const std::vector<SequenceChunk>& kv_chunks,
                                   const AttentionOptions& options);

// out (.., rows, dv) and lse (.., rows) hold softmax(S_a) V_a and log sum exp S_a over the keys
// seen so far; part_out and part_lse the same over other keys. Afterwards out and lse are those
// of all the keys together: out = (e^(lse - l) out + e^(part_lse - l) part_out), l the combined
// log-sum-exp. A row with no visible key so far (lse = -inf) takes the part as it is.
void merge_partial(ConstTensorView part_out, ConstTensorView part_lse, TensorView out,
                   TensorView lse);

// Every element of `t` set to `value`.
void fill(TensorView t, float value);

}  // namespace llm_utils::dist::detail
