// block_calls and merge_partial (block_attention.hpp).

#include "dist/block_attention.hpp"

#include <cmath>
#include <limits>

#include "dist/view_ops.hpp"
#include "llm_utils/error.hpp"

namespace llm_utils::dist::detail {
namespace {

// The mask's rows [row, row + rows) and columns [col, col + cols) of the whole (.., N, M), its
// broadcast (size-1) dimensions left as they are.
ConstTensorView mask_slice(ConstTensorView mask, int64_t row, int64_t rows, int64_t col,
                           int64_t cols) {
  if (mask.data() == nullptr) return mask;
  if (mask.size(-2) != 1) mask = mask.narrow(mask.dim() - 2, row, rows);
  if (mask.size(-1) != 1) mask = mask.narrow(mask.dim() - 1, col, cols);
  return mask;
}

}  // namespace

std::vector<BlockCall> block_calls(const std::vector<SequenceChunk>& q_chunks,
                                   const std::vector<SequenceChunk>& kv_chunks,
                                   const AttentionOptions& options) {
  const ConstTensorView& mask = options.additive_mask;
  const bool mask_varies = mask.data() != nullptr && (mask.size(-2) != 1 || mask.size(-1) != 1);
  std::vector<BlockCall> calls;
  if (!options.causal && !mask_varies) {
    int64_t q_rows = 0, k_rows = 0;
    for (const SequenceChunk& c : q_chunks) q_rows += c.length;
    for (const SequenceChunk& c : kv_chunks) k_rows += c.length;
    if (q_rows > 0) calls.push_back({0, q_rows, 0, k_rows, options});
    return calls;
  }
  int64_t q_at = 0;
  for (const SequenceChunk& qc : q_chunks) {
    int64_t k_at = 0;
    for (const SequenceChunk& kc : kv_chunks) {
      BlockCall call{q_at, qc.length, k_at, kc.length, options};
      int64_t offset = qc.start - kc.start + options.query_offset;  // key j seen by query i when
      call.options.query_offset = 0;                                // j <= i + offset
      bool hidden = qc.length == 0;
      if (options.causal) {
        hidden = hidden || offset + qc.length - 1 < 0;
        // Queries before row -offset see none of these keys: start the call at that row.
        const int64_t skip = offset < 0 ? -offset : 0;
        call.q_start += skip;
        call.q_rows -= skip;
        offset += skip;
        // Every key visible to every row: no mask needed.
        call.options.causal = offset < kc.length - 1;
        call.options.query_offset = call.options.causal ? offset : 0;
      }
      if (!hidden && call.q_rows > 0) {
        call.options.additive_mask =
            mask_slice(mask, qc.start + (call.q_start - q_at), call.q_rows, kc.start, kc.length);
        calls.push_back(call);
      }
      k_at += kc.length;
    }
    q_at += qc.length;
  }
  return calls;
}

void merge_partial(ConstTensorView part_out, ConstTensorView part_lse, TensorView out,
                   TensorView lse) {
  const ConstTensorView po = with_leading_ones(part_out, 4), pl = with_leading_ones(part_lse, 3);
  const TensorView o = with_leading_ones(out, 4), l = with_leading_ones(lse, 3);
  const int64_t batch = o.size(0), heads = o.size(1), rows = o.size(2), dv = o.size(3);
  const int64_t po_r = po.stride(2), o_r = o.stride(2);
  constexpr float minus_inf = -std::numeric_limits<float>::infinity();
#pragma omp parallel for collapse(2) schedule(static)
  for (int64_t b = 0; b < batch; ++b) {
    for (int64_t h = 0; h < heads; ++h) {
      const float* pob = po.data() + b * po.stride(0) + h * po.stride(1);
      const float* plb = pl.data() + b * pl.stride(0) + h * pl.stride(1);
      float* ob = o.data() + b * o.stride(0) + h * o.stride(1);
      float* lb = l.data() + b * l.stride(0) + h * l.stride(1);
      for (int64_t i = 0; i < rows; ++i) {
        const float part = plb[i * pl.stride(2)];
        float& running = lb[i * l.stride(2)];
        float* orow = ob + i * o_r;
        const float* prow = pob + i * po_r;
        if (part == minus_inf) continue;  // these keys are all hidden from row i
        if (running == minus_inf) {
          for (int64_t j = 0; j < dv; ++j) orow[j] = prow[j];
          running = part;
          continue;
        }
        // NaN in either side gives NaN (the comparison picks it or the exp makes it).
        const float top = running > part ? running : part;
        const float w_run = std::exp(running - top), w_part = std::exp(part - top);
        const float sum = w_run + w_part, inv = 1.0f / sum;
        const float a = w_run * inv, c = w_part * inv;
        for (int64_t j = 0; j < dv; ++j) orow[j] = a * orow[j] + c * prow[j];
        running = top + std::log(sum);
      }
    }
  }
}

void fill(TensorView t, float value) {
  if (t.dim() > 4) throw ArgumentError("fill: rank " + std::to_string(t.dim()) + " > 4");
  const TensorView f = with_leading_ones(t, 4);
  for (int64_t a = 0; a < f.size(0); ++a) {
    for (int64_t b = 0; b < f.size(1); ++b) {
      for (int64_t c = 0; c < f.size(2); ++c) {
        float* row = f.data() + a * f.stride(0) + b * f.stride(1) + c * f.stride(2);
        for (int64_t e = 0; e < f.size(3); ++e) row[e * f.stride(3)] = value;
      }
    }
  }
}

}  // namespace llm_utils::dist::detail
