#pragma once
// The fused forward's building blocks (flash_forward.cpp, flash_forward_paged.cpp): one query
// block against a range of keys with the online softmax (forward_block), the key split's plan,
// and the merge of per-chunk parts by their log-sum-exp.

#include <algorithm>
#include <cmath>
#include <limits>
#include <type_traits>
#include <vector>

#include "cpu/flash_attention.hpp"
#include "cpu/flash_common.hpp"
#include "cpu/flash_operands.hpp"
#include "cpu/microkernels.hpp"

namespace llm_utils::cpu::forward_parts {

using flash::kKeyBlock;
using flash::kMinusInf;
using flash::kQueryBlock;
using flash::Operands;

// Keys per online-softmax step: two key blocks, so the step's fixed costs per row (the
// batched reductions, the bookkeeping of m and l, rescaling the accumulator) and the P V
// product's accumulator loads and stores are paid once per 128 keys.
constexpr int64_t kKeyStep = 2 * kKeyBlock;

// With one query block per batch element each key block is used once, so it is transposed
// (and, in bfloat16, its values interleaved) tile by tile as it is needed (in L1) rather than
// all of K up front (a second pass over memory).
constexpr int64_t kTileTransposeQueries = kQueryBlock;
// The key split aims at this many parallel tasks, each with at least this many key blocks.
constexpr int64_t kTargetTasks = 16;
constexpr int64_t kMinBlocksPerSplit = 8;

// Per-thread scratch for one query block.
template <typename T>
struct ForwardScratch {
  ForwardScratch(int64_t d, int64_t dv)
      : scores(kQueryBlock * kKeyStep),
        kt_tile((d + 1) * kKeyBlock),
        v_tile(std::is_same_v<T, float> ? 0 : kKeyStep * dv),
        p_tile(std::is_same_v<T, float> ? 0 : kQueryBlock * kKeyStep),
        acc(kQueryBlock * dv),
        row_max(kQueryBlock),
        row_sum(kQueryBlock) {}
  std::vector<float> scores;   // (Br, 2 Bc) scores, then probabilities, of one step
  std::vector<T> kt_tile;      // (d, Bc) one key block transposed, when K^T is not built
  std::vector<T> v_tile;       // (Bc, 2 dv) bfloat16: one step's values in pairs, likewise
  std::vector<T> p_tile;       // (Br, 2 Bc) bfloat16: the probabilities rounded
  std::vector<float> acc;      // (Br, dv) unnormalised output
  std::vector<float> row_max;  // (Br) running max of the (raw or prescaled) scores
  std::vector<float> row_sum;  // (Br) running sum of exp
};

// The keys and values as the tile GEMMs read them: K^T and V of every key/value head built up
// front, or (either null) one block at a time into the scratch.
template <typename T>
struct KeyOperands {
  const typename Operands<T>::TransposedB* kt;  // (B*G) blocks of (d, Bc)
  const typename Operands<T>::RowsB* v;         // (B*G) blocks of Bc value rows
};

// tile (br, bc), leading dimension kKeyStep = Q_blk (br, d) K[j0, j0 + bc)^T, bc <= kKeyStep,
// one GEMM per key block: from K^T when given, else from the block transposed into `kt_tile`
// (d, Bc). Either way the same GEMM on the same numbers: the same bits as the backward's
// recomputation.
template <typename T>
void score_tile(const BasicAttentionProblem<T>& p, const KeyOperands<T>& keys, int64_t g,
                const T* q, int64_t br, int64_t j0, int64_t bc, T* kt_tile, float* tile) {
  using Ops = Operands<T>;
  for (int64_t c0 = 0; c0 < bc; c0 += kKeyBlock) {
    const int64_t width = std::min(kKeyBlock, bc - c0), j = j0 + c0;
    if (keys.kt != nullptr) {
      Ops::gemm(br, width, p.d, 1.0f, q, p.q.row_stride, keys.kt->block(p.kv_of(g), j), keys.kt->ld,
                tile + c0, kKeyStep, false);
      continue;
    }
    const int64_t ld =
        Ops::transposed_b_tile(p.key_rows(g, j), width, p.d, p.k.row_stride, kt_tile);
    Ops::gemm(br, width, p.d, 1.0f, q, p.q.row_stride, kt_tile, ld, tile + c0, kKeyStep, false);
  }
}

// Where forward_block writes a query block's rows: out (br, dv) with rows `out_stride` apart,
// and, each when not null, lse (br) with elements `lse_stride` apart, row_max and log_sum (br).
// Out is the problem's element type, or float32 for the key split's parts. `sink`: the query
// head's sink logit to add to the denominator, null for none (and for the split's parts, whose
// merge adds it).
template <typename Out>
struct BlockOutput {
  Out* out;
  int64_t out_stride;
  float* lse;
  int64_t lse_stride;
  float* row_max;
  float* log_sum;
  const float* sink = nullptr;
};

// The softmax statistics of a row, max m and sum l of exp(s - m) (units with exponent scale 1),
// with a sink logit added to the sum: m becomes max(m, sink) and l is rescaled to it. Returns
// the factor, exp(m_old - m_new), that rescales what was summed with the old max.
inline float fold_sink(float sink, float& m, float& l) {
  const float m_new = std::isnan(m) ? m : std::max(m, sink);
  if (m_new == kMinusInf) return 1.0f;  // no key and a -inf sink: nothing to fold
  const float factor = m == kMinusInf ? 0.0f : std::exp(m - m_new);
  l = l * factor + std::exp(sink - m_new);
  m = m_new;
  return factor;
}

// Queries [i0, i0 + br) (br <= kQueryBlock) of query head g against the visible keys in [j_begin,
// j_limit) (j_begin a multiple of kKeyBlock, the range cut at j_limit): output rows normalised over
// those keys and their softmax statistics (RowStats units; lse = row_max * exp_scale + log_sum). A
// row that sees no key of the range gets zeros, lse = -inf, row_max = 0, log_sum = -inf.
template <typename T, typename Out>
void forward_block(const BasicAttentionProblem<T>& p, const KeyOperands<T>& keys, int64_t g,
                   int64_t i0, int64_t br, int64_t j_begin, int64_t j_limit, ForwardScratch<T>& s,
                   const BlockOutput<Out>& o) {
  using Ops = Operands<T>;
  const flash::TileMasker masker{p};
  const T* q = p.q_of(g) + i0 * p.q.row_stride;  // (br, d), rows q.row_stride apart
  const int64_t kv = p.kv_of(g);
  // With an additive mask the tile holds prescaled scores and the exponent uses scale 1.
  const float exp_scale = masker.prescale() ? 1.0f : p.scale;

  std::fill(s.acc.begin(), s.acc.begin() + br * p.dv, 0.0f);
  std::fill(s.row_max.begin(), s.row_max.begin() + br, kMinusInf);
  std::fill(s.row_sum.begin(), s.row_sum.begin() + br, 0.0f);

  // Only the key blocks some query of the block may see.
  const flash::KeySpan span = flash::key_span(p, i0, br);
  const int64_t j_end = std::min(j_limit, span.end);
  int64_t bc = 0;
  for (int64_t j0 = std::max(j_begin, span.begin); j0 < j_end; j0 += bc) {
    // A step never crosses the end of a page of paged keys (whose rows are contiguous).
    bc = std::min({kKeyStep, j_end - j0, p.keys_in_run(j0)});
    float* tile = s.scores.data();  // (br, bc), leading dimension kKeyStep
    score_tile(p, keys, g, q, br, j0, bc, s.kt_tile.data(), tile);
    masker.apply(tile, kKeyStep, g, i0, br, j0, bc, false);
    // Differences before the scale inside: exact near the max, however large the scores are.
    const T* p_blk = Ops::softmax_step(tile, kKeyStep, br, bc, exp_scale, s.row_max.data(),
                                       s.row_sum.data(), s.acc.data(), p.dv, p.dv, s.p_tile.data());
    // acc += P_tile V_blk
    int64_t ldv = 0;
    const T* v_blk = nullptr;  // (bc, dv) as B
    if (keys.v != nullptr) {
      v_blk = keys.v->block(kv, j0);
      ldv = keys.v->ld;
    } else {
      v_blk = Ops::rows_b_tile(p.value_rows(g, j0), bc, p.dv, p.v.row_stride, s.v_tile.data(), ldv);
    }
    // The value blocks of a step are consecutive in V (or V's pairs): one GEMM over bc keys.
    Ops::gemm(br, p.dv, bc, 1.0f, p_blk, kKeyStep, v_blk, ldv, s.acc.data(), p.dv, true);
  }

  for (int64_t r = 0; r < br; ++r) {
    float l = s.row_sum[static_cast<size_t>(r)];
    float m = s.row_max[static_cast<size_t>(r)];
    Out* out_row = o.out + r * o.out_stride;
    float* acc_row = s.acc.data() + r * p.dv;
    float acc_factor = 1.0f;  // folding a sink rescales the accumulated sum with the sum
    if (o.sink != nullptr) acc_factor = fold_sink(*o.sink, m, l);
    const bool hidden = l == 0.0f;  // a fully hidden row: zeros, not 0/0
    const float log_l = hidden ? kMinusInf : std::log(l);
    if (o.lse != nullptr) o.lse[r * o.lse_stride] = hidden ? kMinusInf : m * exp_scale + log_l;
    if (o.row_max != nullptr) {
      o.row_max[r] = hidden ? 0.0f : m;
      o.log_sum[r] = log_l;
    }
    if (hidden) {
      std::fill(out_row, out_row + p.dv, flash::element<Out>(0.0f));
      continue;
    }
    const float inv_l = acc_factor / l;
    for (int64_t c = 0; c < p.dv; ++c) acc_row[c] *= inv_l;
    flash::store_row(acc_row, p.dv, out_row);
  }
}

// How the keys are split: `splits` chunks of `chunk` keys (a multiple of kKeyBlock, so the
// tiles are the unsplit kernel's). Depends on the shape only, never on the thread count, so
// the forward's bits do not either.
struct KeySplit {
  int64_t splits;
  int64_t chunk;
};

inline KeySplit plan_key_split(const detail::AttentionShape& p, int64_t tasks) {
  const int64_t key_blocks = flash::blocks(p.m, kKeyBlock);
  int64_t splits = 1;
  if (tasks < kTargetTasks) {
    splits = std::min(flash::blocks(kTargetTasks, tasks),
                      std::max<int64_t>(1, key_blocks / kMinBlocksPerSplit));
  }
  const int64_t chunk = flash::blocks(key_blocks, splits) * kKeyBlock;
  return {flash::blocks(p.m, chunk), chunk};
}

// Per-chunk parts of the output rows: out (S, B*H*N, dv), row_max and log_sum (S, B*H*N).
struct SplitParts {
  SplitParts(int64_t splits, int64_t rows, int64_t dv)
      : out(static_cast<size_t>(splits * rows * dv)),
        row_max(static_cast<size_t>(splits * rows)),
        log_sum(static_cast<size_t>(splits * rows)) {}
  WorkspaceVector<float> out, row_max, log_sum;
};

// One output row from its per-chunk parts. Each part is normalised by its own chunk's sum l_s,
// so with m = max_s m_s and L = sum_s exp((m_s - m) * scale) l_s:
//   out = sum_s exp((m_s - m) * scale) l_s / L * out_s,  row_max = m,  log_sum = log L.
// `sum` (dv) is scratch for the float32 row.
// A sink logit (null for none) adds exp(sink - m) to L, with m = max(m, sink).
template <typename T>
void merge_row(const SplitParts& parts, int64_t row, int64_t rows, int64_t splits, int64_t dv,
               float exp_scale, const float* sink, float* sum, T* out, float* lse, float* row_max,
               float* log_sum) {
  float m = kMinusInf;
  bool nan = false;
  for (int64_t s = 0; s < splits; ++s) {
    const size_t at = static_cast<size_t>(s * rows + row);
    if (parts.log_sum[at] == kMinusInf) continue;  // the chunk had no visible key
    nan |= std::isnan(parts.row_max[at]) || std::isnan(parts.log_sum[at]);
    m = std::max(m, parts.row_max[at]);
  }
  // A NaN or +inf sink makes the row NaN, as in the unsplit kernel (exp(inf - inf)).
  nan |= sink != nullptr && !(*sink < std::numeric_limits<float>::infinity());
  if (sink != nullptr && !nan) m = std::max(m, *sink);  // exp_scale is 1 with sinks
  if (nan || m == kMinusInf) {                          // a NaN score, or no visible key at all
    const float fill = nan ? std::numeric_limits<float>::quiet_NaN() : 0.0f;
    std::fill(out, out + dv, flash::element<T>(fill));
    *lse = nan ? fill : kMinusInf;
    if (row_max != nullptr) {
      *row_max = nan ? fill : 0.0f;
      *log_sum = *lse;
    }
    return;
  }
  float weights[kTargetTasks];  // exp((m_s - m) * scale) l_s per chunk
  float total = 0.0f;
  for (int64_t s = 0; s < splits; ++s) {
    const size_t at = static_cast<size_t>(s * rows + row);
    const bool empty = parts.log_sum[at] == kMinusInf;
    weights[s] = empty ? 0.0f : std::exp((parts.row_max[at] - m) * exp_scale + parts.log_sum[at]);
    total += weights[s];
  }
  if (sink != nullptr) total += std::exp(*sink - m);
  std::fill(sum, sum + dv, 0.0f);
  for (int64_t s = 0; s < splits; ++s) {
    if (weights[s] == 0.0f) continue;
    const float w = weights[s] / total;
    const float* part = parts.out.data() + (s * rows + row) * dv;
    for (int64_t c = 0; c < dv; ++c) sum[c] += w * part[c];
  }
  flash::store_row(sum, dv, out);
  const float log_total = std::log(total);
  *lse = m * exp_scale + log_total;
  if (row_max != nullptr) {
    *row_max = m;
    *log_sum = log_total;
  }
}

// A block of at most kQueryBlock queries of one head: [i0, i0 + rows).
struct QueryBlock {
  int64_t i0, rows;
};

// The query blocks of one head: kQueryBlock rows at a time from 0; with packed sequences, from
// each sequence's first query, so that a block's keys are all one sequence's (a block that
// straddled two sequences would compute the tiles of both and mask them).
inline std::vector<QueryBlock> query_blocks(const detail::AttentionShape& p) {
  std::vector<QueryBlock> out;
  const auto cut = [&out](int64_t begin, int64_t end) {
    for (int64_t i0 = begin; i0 < end; i0 += kQueryBlock) {
      out.push_back({i0, std::min(kQueryBlock, end - i0)});
    }
  };
  if (p.seq_starts_q == nullptr) {
    cut(0, p.n);
  } else {
    for (int64_t s = 0; s < p.sequences; ++s) cut(p.seq_starts_q[s], p.seq_starts_q[s + 1]);
  }
  return out;
}

// Rows with no key at all (M = 0): out = 0, lse = -inf, row_max = 0, log_sum = -inf, as for a
// fully masked row; with a sink, lse = row_max = the sink and log_sum = 0 (only the sink).
template <typename T>
void forward_without_keys(const BasicAttentionProblem<T>& p, const BasicForwardOutputs<T>& o) {
  for (int64_t g = 0; g < p.query_heads(); ++g) {
    float sink = p.sinks != nullptr ? p.sinks[g % p.heads] : kMinusInf;
    // A NaN or +inf sink makes the row NaN, as wherever there are keys.
    const bool nan = !(sink < std::numeric_limits<float>::infinity());
    if (nan) sink = std::numeric_limits<float>::quiet_NaN();
    const bool has_sink = sink != kMinusInf;
    for (int64_t i = 0; i < p.n; ++i) {
      T* out_row = p.query_matrix(o.out, g) + i * o.out.row_stride;
      std::fill(out_row, out_row + p.dv, flash::element<T>(nan ? sink : 0.0f));
      p.query_matrix(o.lse, g)[i * o.lse.row_stride] = sink;
      if (o.stats.given()) {
        o.stats.row_max[g * p.n + i] = has_sink ? sink : 0.0f;
        o.stats.log_sum[g * p.n + i] = has_sink && !nan ? 0.0f : (nan ? sink : kMinusInf);
      }
    }
  }
}

}  // namespace llm_utils::cpu::forward_parts
