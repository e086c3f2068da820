// The fused backward (FlashAttention-2 by recomputation from the saved log-sum-exp), working
// key-major so every product is a row-major GEMM:
//
//   D_i   = sum_c dO_ic O_ic                        (once, for all queries)
//   per key block j (one thread owns dK_j, dV_j), per query block i:
//   S^T   = K_j Q_i^T                               forward was S = Q K^T (* scale, + mask)
//   P^T   = exp((S^T - m_i) * scale - log l_i)      forward was P = softmax(S) = exp(S - lse)
//           (or exp(S^T * scale - lse_i) without the forward's row statistics)
//   dV_j += P^T dO_i                                forward was O = P V
//   dP^T  = V_j dO_i^T                              (O = P V again)
//   dS^T  = P^T * (dP^T - D_i)                      softmax: dS = P (dP - rowsum(dP P)),
//                                                   and rowsum(dP P) = rowsum(dO O) = D
//   dK_j += scale * dS^T Q_i                        S = scale Q K^T
//   dQ_i^T += scale * K_j^T dS^T                    (same line, the other operand)
//
// With grouped-query attention a key block loops over the H / G query heads sharing its keys,
// so dK_j and dV_j sum over them in one place.
//
// dQ collects contributions from every key block of its key/value head. Two schedules keep its
// partial sums to one key/value head's worth per thread, (H / G, d, N), whatever B * H is:
//
// - by head, when there are enough key/value heads to share out: one task is one key/value
//   head (all its key blocks), which owns the dQ of its query heads outright and writes it when
//   done. No reduction, and the same bits for any thread count.
// - by key block, for a few long heads: the key blocks of one head are shared out, each thread
//   adds into its own partial dQ^T of that head, and the partials are summed in thread order
//   before the next head (the same bits from run to run at a given thread count).

#include <omp.h>

#include <algorithm>
#include <cmath>
#include <type_traits>
#include <vector>

#include "cpu/flash_common.hpp"
#include "cpu/flash_operands.hpp"
#include "cpu/microkernels.hpp"
#include "llm_utils/threads.hpp"

namespace llm_utils::cpu {

using flash::BlockedTranspose;
using flash::kKeyBlock;
using flash::kQueryBlock;
using flash::Operands;

namespace {

// The by-head schedule needs this many key/value heads per thread to balance its load.
constexpr int64_t kHeadsPerThreadForHeadSchedule = 4;

// The operands every key block reads (flash_operands.hpp), built once per call.
template <typename T>
struct BackwardInputs {
  using Ops = Operands<T>;
  const BasicAttentionProblem<T>& p;
  const BasicBackwardTensors<T>& t;
  const typename Ops::TransposedB& qt;   // (B*H) Q^T as B: S^T = K_j Q_i^T
  const typename Ops::RowsB& dout_rows;  // (B*H) dO as B: dV_j += P^T dO_i
  const typename Ops::TransposedA& kt;   // (B*G) K^T as A: dQ_i^T += K_j^T dS^T, when dq or dk
  const typename Ops::TransposedB& dot;  // (B*H) dO^T as B: dP^T = V_j dO_i^T, when dq or dk
  const typename Ops::RowsB& q_rows;     // (B*H) Q as B: dK_j += dS^T Q_i, when dq or dk
  const float* dsum;                     // (B*H, N) = D
  bool need_qk;                          // false when only dV is wanted (Linear4/5)
};

// Scratch for write_dq_block: sums (d * 64) and rows (64 * d).
struct DqScratch {
  explicit DqScratch(int64_t d) : sums(static_cast<size_t>(d * kQueryBlock)), rows(sums.size()) {}
  std::vector<float> sums, rows;
};

// Per-thread buffers, allocated before the parallel regions.
template <typename T>
struct BackwardScratch {
  BackwardScratch(int64_t d, int64_t dv, int64_t kv_group, int64_t n, bool need_dq)
      : probs_t(kKeyBlock * kQueryBlock),
        dprobs_t(kKeyBlock * kQueryBlock),
        softcap_grad(kKeyBlock * kQueryBlock),
        probs_t_a(Operands<T>::kTileBuffer),
        dscores_t_a(Operands<T>::kTileBuffer),
        dscores_t_b(Operands<T>::kTileBuffer),
        dk(kKeyBlock * d),
        dv(kKeyBlock * dv),
        lse(kQueryBlock),
        dq_t(need_dq ? BlockedTranspose(kv_group, n, d) : BlockedTranspose()),
        dq(need_dq ? d : 0) {}
  std::vector<float> probs_t;       // (Bc, Br) P^T of one tile
  std::vector<float> dprobs_t;      // (Bc, Br) dP^T, then dS^T
  std::vector<float> softcap_grad;  // (Bc, Br) d capped / d scaled score, with a softcap
  std::vector<T> probs_t_a;         // (Bc, Br) bfloat16: P^T rounded, as A
  std::vector<T> dscores_t_a;       // (Bc, Br) bfloat16: dS^T rounded, as A
  std::vector<T> dscores_t_b;       // (Bc / 2, 2 Br) bfloat16: dS^T rounded, in pairs as B
  std::vector<float> dk;            // (Bc, d) accumulator
  std::vector<float> dv;            // (Bc, dv) accumulator
  std::vector<float> lse;           // (Br) one query block's lse, gathered from its strided rows
  BlockedTranspose dq_t;            // (H / G, d, N): dQ^T of one key/value head's query heads
  DqScratch dq;                     // for writing dq from the dq_t partials
};

// Stores rows (rows, cols) from a contiguous float32 accumulator into strided rows.
template <typename T>
void store_rows(const float* src, int64_t rows, int64_t cols, T* dst, int64_t dst_stride) {
  for (int64_t r = 0; r < rows; ++r) flash::store_row(src + r * cols, cols, dst + r * dst_stride);
}

// One key block [j0, j0 + bc) of key/value head kv, against every query head of its group;
// dQ^T of those heads accumulates into dq_t (H / G, d, N), matrix i for the group's i-th query
// head, unless dq_t is null (dq not wanted).
template <typename T>
void backward_key_block(const BackwardInputs<T>& in, int64_t kv, int64_t j0, BackwardScratch<T>& s,
                        BlockedTranspose* dq_t) {
  using Ops = Operands<T>;
  const BasicAttentionProblem<T>& p = in.p;
  const flash::TileMasker masker{p};
  const float exp_scale = masker.prescale() ? 1.0f : p.scale;
  const int64_t bc = std::min(kKeyBlock, p.m - j0);
  const int64_t group = p.kv_group();
  const int64_t g0 = p.first_query_head(kv);
  const int64_t k_rs = p.k.row_stride, v_rs = p.v.row_stride;
  const T* k_j = p.kv_matrix(p.k, kv) + j0 * k_rs;  // (bc, d), rows k_rs apart
  const T* v_j = p.kv_matrix(p.v, kv) + j0 * v_rs;  // (bc, dv), rows v_rs apart
  std::fill(s.dk.begin(), s.dk.end(), 0.0f);
  std::fill(s.dv.begin(), s.dv.end(), 0.0f);

  // With a softcap, the derivative of each capped score by the scaled one.
  float* softcap_grad = p.softcap != 0.0f ? s.softcap_grad.data() : nullptr;  // (bc, br)
  for (int64_t g = g0; g < g0 + group; ++g) {
    for (int64_t i0 = 0; i0 < p.n; i0 += kQueryBlock) {
      const int64_t br = std::min(kQueryBlock, p.n - i0);
      // Query blocks none of whose queries sees these keys (causal, window, packing) add nothing.
      const flash::KeySpan span = flash::key_span(p, i0, br);
      if (span.end <= j0 || span.begin >= j0 + bc) continue;
      float* pt = s.probs_t.data();  // (bc, br), leading dimension kQueryBlock
      Ops::gemm(bc, br, p.d, 1.0f, k_j, k_rs, in.qt.block(g, i0), in.qt.ld, pt, kQueryBlock, false);
      masker.apply(pt, kQueryBlock, g, i0, br, j0, bc, true, softcap_grad);
      const int64_t row = g * p.n + i0;
      // The row statistics are contiguous; lse is (B, H, N) with its own strides.
      const float* centers = in.t.stats.given() ? in.t.stats.row_max + row : nullptr;
      const float* offsets = in.t.stats.given() ? in.t.stats.log_sum + row : s.lse.data();
      if (!in.t.stats.given()) {
        const float* lse_g = p.query_matrix(in.t.lse, g);
        for (int64_t r = 0; r < br; ++r) s.lse[r] = lse_g[(i0 + r) * in.t.lse.row_stride];
      }
      // P^T, and P^T as A for dV_j += P^T dO_i
      const T* pt_a = Ops::probabilities_t(pt, kQueryBlock, bc, br, exp_scale, centers, offsets,
                                           s.probs_t_a.data());
      Ops::gemm(bc, p.dv, br, 1.0f, pt_a, kQueryBlock, in.dout_rows.block(g, i0), in.dout_rows.ld,
                s.dv.data(), p.dv, true);
      if (!in.need_qk) continue;
      if (softcap_grad != nullptr) {
        // forward was `S = cap * tanh(S_scaled / cap)`: dS_scaled = dS * (1 - tanh^2). dS is
        // P^T * (dP^T - D) below, so fold the factor into P^T (dV has used it already).
        for (int64_t r = 0; r < bc; ++r) {
          for (int64_t c = 0; c < br; ++c)
            pt[r * kQueryBlock + c] *= softcap_grad[r * kQueryBlock + c];
        }
      }

      float* dst = s.dprobs_t.data();  // (bc, br)
      Ops::gemm(bc, br, p.dv, 1.0f, v_j, v_rs, in.dot.block(g, i0), in.dot.ld, dst, kQueryBlock,
                false);
      const float* d_i = in.dsum + g * p.n + i0;
      const T* ds_a = nullptr;  // dS^T (bc, br) as A, leading dimension kQueryBlock
      const T* ds_b = nullptr;  // dS^T as B, leading dimension ld_ds
      int64_t ld_ds = 0;
      Ops::dscores_t(pt, dst, kQueryBlock, bc, br, d_i, s.dscores_t_a.data(), s.dscores_t_b.data(),
                     ds_a, ds_b, ld_ds);
      // dK_j += scale * dS^T Q_i
      const int64_t q_ld = in.q_rows.ld;
      Ops::gemm(bc, p.d, br, p.scale, ds_a, kQueryBlock, in.q_rows.block(g, i0), q_ld, s.dk.data(),
                p.d, true);
      if (dq_t != nullptr) {
        // dQ_i^T += scale * K_j^T dS^T
        Ops::gemm(p.d, br, bc, p.scale, in.kt.block(kv, j0), in.kt.ld, ds_b, ld_ds,
                  dq_t->block(g - g0, i0), dq_t->ld, true);
      }
    }
  }

  store_rows(s.dv.data(), bc, p.dv, p.kv_matrix(in.t.dv, kv) + j0 * in.t.dv.row_stride,
             in.t.dv.row_stride);
  if (in.need_qk && in.t.dk.data != nullptr) {
    store_rows(s.dk.data(), bc, p.d, p.kv_matrix(in.t.dk, kv) + j0 * in.t.dk.row_stride,
               in.t.dk.row_stride);
  }
}

// Rows [i0, i0 + 64) of dq of query head g0 + h (g0 the first of key/value head kv's) = the
// transpose of the sum of the partials' blocks (each (d, 64), summed in order from the first),
// through `sums` (d * 64) and, for bfloat16, `rows` (64 * d): one vectorised pass per block
// instead of one strided read per element.
template <typename T>
void write_dq_block(const BasicAttentionProblem<T>& p, const BasicBackwardTensors<T>& t, int64_t kv,
                    const BlockedTranspose* const* partials, int64_t count, int64_t h, int64_t i0,
                    float* sums, float* rows) {
  constexpr int64_t ld = BlockedTranspose::ld;
  const int64_t br = std::min(kQueryBlock, p.n - i0);
  const float* first = partials[0]->block(h, i0);  // (d, 64)
  std::copy(first, first + p.d * ld, sums);
  for (int64_t k = 1; k < count; ++k) {
    const float* block = partials[k]->block(h, i0);
    for (int64_t e = 0; e < p.d * ld; ++e) sums[e] += block[e];
  }
  T* dq = p.query_matrix(t.dq, p.first_query_head(kv) + h) + i0 * t.dq.row_stride;  // (br, d)
  if constexpr (std::is_same_v<T, float>) {
    microkernels().transpose(sums, p.d, br, ld, dq, t.dq.row_stride);
  } else {
    microkernels().transpose(sums, p.d, br, ld, rows, p.d);  // (br, d)
    for (int64_t r = 0; r < br; ++r)
      flash::store_row(rows + r * p.d, p.d, dq + r * t.dq.row_stride);
  }
}

// Zero gradients for every key and value (and no query): nothing attended to them.
template <typename T>
void zero_kv_gradients(const BasicAttentionProblem<T>& p, const BasicBackwardTensors<T>& t) {
  const T zero = flash::element<T>(0.0f);
  for (int64_t kv = 0; kv < p.kv_count(); ++kv) {
    for (int64_t j = 0; j < p.m; ++j) {
      T* dv = p.kv_matrix(t.dv, kv) + j * t.dv.row_stride;
      std::fill(dv, dv + p.dv, zero);
      if (t.dk.data != nullptr) {
        T* dk = p.kv_matrix(t.dk, kv) + j * t.dk.row_stride;
        std::fill(dk, dk + p.d, zero);
      }
    }
  }
}

// dq = 0 for every query: there are no keys (M = 0).
template <typename T>
void zero_q_gradients(const BasicAttentionProblem<T>& p, const BasicBackwardTensors<T>& t) {
  if (t.dq.data == nullptr) return;
  for (int64_t g = 0; g < p.query_heads(); ++g) {
    for (int64_t i = 0; i < p.n; ++i) {
      T* dq = p.query_matrix(t.dq, g) + i * t.dq.row_stride;
      std::fill(dq, dq + p.d, flash::element<T>(0.0f));
    }
  }
}

template <typename T>
void backward(const BasicAttentionProblem<T>& p, const BasicBackwardTensors<T>& t) {
  using Ops = Operands<T>;
  if (p.no_queries() || p.m == 0) {
    zero_kv_gradients(p, t);
    zero_q_gradients(p, t);
    return;
  }
  const bool need_qk = t.dq.data != nullptr || t.dk.data != nullptr;
  const typename Ops::TransposedB qt = Ops::transposed_b(p.q, p.batch, p.heads, p.n, p.d);
  const typename Ops::RowsB dout_rows = Ops::rows_b(t.dout, p.batch, p.heads, p.n, p.dv);
  typename Ops::TransposedA kt;  // (B*G) blocks, when dq or dk is wanted
  typename Ops::TransposedB dot;
  typename Ops::RowsB q_rows;
  WorkspaceVector<float> dsum;  // (B*H, N)
  if (need_qk) {
    kt = Ops::transposed_a(p.k, p.batch, p.kv_heads, p.m, p.d);
    dot = Ops::transposed_b(t.dout, p.batch, p.heads, p.n, p.dv);
    q_rows = Ops::rows_b(p.q, p.batch, p.heads, p.n, p.d);
    // D_i = rowsum(dO * O): the softmax backward's row dot product, once per query.
    dsum.resize(static_cast<size_t>(p.query_heads() * p.n));
#pragma omp parallel for schedule(static) num_threads(get_num_threads())
    for (int64_t row = 0; row < p.query_heads() * p.n; ++row) {
      const int64_t g = row / p.n, i = row % p.n;
      dsum[static_cast<size_t>(row)] =
          Ops::dot(p.query_matrix(t.dout, g) + i * t.dout.row_stride,
                   p.query_matrix(t.out, g) + i * t.out.row_stride, p.dv);
    }
  }
  const BackwardInputs<T> in{p, t, qt, dout_rows, kt, dot, q_rows, dsum.data(), need_qk};

  const int threads = get_num_threads();
  const bool need_dq = t.dq.data != nullptr;
  std::vector<BackwardScratch<T>> scratch;
  scratch.reserve(static_cast<size_t>(threads));
  for (int i = 0; i < threads; ++i) scratch.emplace_back(p.d, p.dv, p.kv_group(), p.n, need_dq);
  const int64_t k_blocks = flash::blocks(p.m, kKeyBlock);

  if (p.kv_count() >= kHeadsPerThreadForHeadSchedule * threads) {
    // By head: each task owns one key/value head and the dq of its query heads.
#pragma omp parallel for schedule(dynamic, 1) num_threads(threads)
    for (int64_t kv = 0; kv < p.kv_count(); ++kv) {
      BackwardScratch<T>& s = scratch[static_cast<size_t>(omp_get_thread_num())];
      BlockedTranspose* dq_t = need_dq ? &s.dq_t : nullptr;
      if (need_dq) s.dq_t.zero();
      for (int64_t j0 = 0; j0 < p.m; j0 += kKeyBlock) backward_key_block(in, kv, j0, s, dq_t);
      if (need_dq) {
        const BlockedTranspose* mine = &s.dq_t;
        for (int64_t h = 0; h < p.kv_group(); ++h) {
          for (int64_t i0 = 0; i0 < p.n; i0 += kQueryBlock) {
            write_dq_block(p, t, kv, &mine, 1, h, i0, s.dq.sums.data(), s.dq.rows.data());
          }
        }
      }
    }
    return;
  }
  // By key block, one key/value head at a time; threads add into their own dq_t partials.
  std::vector<const BlockedTranspose*> partials;
  for (const BackwardScratch<T>& s : scratch) partials.push_back(&s.dq_t);
  for (int64_t kv = 0; kv < p.kv_count(); ++kv) {
    // Zeroed here rather than by their threads: OpenMP may run the region below on fewer
    // threads than asked, and a partial no thread used must still add nothing.
    if (need_dq) {
      for (BackwardScratch<T>& s : scratch) s.dq_t.zero();
    }
#pragma omp parallel num_threads(threads)
    {
      BackwardScratch<T>& s = scratch[static_cast<size_t>(omp_get_thread_num())];
      BlockedTranspose* dq_t = need_dq ? &s.dq_t : nullptr;
      // Static round-robin: which key blocks a thread's partial holds depends on the thread
      // count only, so the sum is the same from run to run. Round-robin also balances the
      // causal case, where later key blocks meet fewer queries.
#pragma omp for schedule(static, 1)
      for (int64_t j = 0; j < k_blocks; ++j) backward_key_block(in, kv, j * kKeyBlock, s, dq_t);
    }
    if (!need_dq) continue;
    // The reduction in parallel over (query head of the group, query block).
    const int64_t q_blocks = flash::blocks(p.n, kQueryBlock);
#pragma omp parallel for schedule(static) num_threads(threads)
    for (int64_t task = 0; task < p.kv_group() * q_blocks; ++task) {
      BackwardScratch<T>& s = scratch[static_cast<size_t>(omp_get_thread_num())];
      write_dq_block(p, t, kv, partials.data(), static_cast<int64_t>(partials.size()),
                     task / q_blocks, (task % q_blocks) * kQueryBlock, s.dq.sums.data(),
                     s.dq.rows.data());
    }
  }
}

template <typename T>
void probabilities(const BasicAttentionProblem<T>& p, Strided<const float> lse, RowStats stats,
                   Strided<float> probs) {
  using Ops = Operands<T>;
  if (p.no_queries()) return;
  // (B*G) blocks of K^T
  const typename Ops::TransposedB kt = Ops::transposed_b(p.k, p.batch, p.kv_heads, p.m, p.d);
  const flash::TileMasker masker{p};
  const float exp_scale = masker.prescale() ? 1.0f : p.scale;
  const int64_t q_blocks = flash::blocks(p.n, kQueryBlock);
#pragma omp parallel for schedule(dynamic, 1) num_threads(get_num_threads())
  for (int64_t task = 0; task < p.query_heads() * q_blocks; ++task) {
    const Microkernels& mk = microkernels();
    const int64_t g = task / q_blocks, i0 = (task % q_blocks) * kQueryBlock;
    const int64_t br = std::min(kQueryBlock, p.n - i0);
    const int64_t ld = probs.row_stride;
    float* rows = p.query_matrix(probs, g) + i0 * ld;  // (br, M), rows ld apart
    for (int64_t j0 = 0; j0 < p.m; j0 += kKeyBlock) {
      Ops::gemm(br, std::min(kKeyBlock, p.m - j0), p.d, 1.0f, p.q_of(g) + i0 * p.q.row_stride,
                p.q.row_stride, kt.block(p.kv_of(g), j0), kt.ld, rows + j0, ld, false);
    }
    masker.apply(rows, ld, g, i0, br, 0, p.m, false);
    for (int64_t r = 0; r < br; ++r) {
      const int64_t at = g * p.n + i0 + r;
      const float center = stats.given() ? stats.row_max[at] : 0.0f;
      const float offset =
          stats.given() ? stats.log_sum[at] : p.query_matrix(lse, g)[(i0 + r) * lse.row_stride];
      float* row = rows + r * ld;
      if (offset == flash::kMinusInf) {
        std::fill(row, row + p.m, 0.0f);
      } else {
        mk.exp_centered_sum(row, p.m, exp_scale, center, offset);
      }
    }
  }
}

}  // namespace

void flash_backward(const FlashProblem& p, const BackwardTensors& t) {
  selected_isa();  // throws here, not inside a parallel region, on a bad LLM_UTILS_ISA
  backward(p, t);
}

void flash_backward(const Bf16AttentionProblem& p, const BasicBackwardTensors<bfloat16>& t) {
  selected_isa();  // throws here, not inside a parallel region, on a bad LLM_UTILS_ISA
  backward(p, t);
}

void flash_probabilities(const FlashProblem& p, Strided<const float> lse, RowStats stats,
                         Strided<float> probs) {
  selected_isa();  // throws here, not inside a parallel region, on a bad LLM_UTILS_ISA
  probabilities(p, lse, stats, probs);
}

void flash_probabilities(const Bf16AttentionProblem& p, Strided<const float> lse, RowStats stats,
                         Strided<float> probs) {
  selected_isa();  // throws here, not inside a parallel region, on a bad LLM_UTILS_ISA
  probabilities(p, lse, stats, probs);
}

}  // namespace llm_utils::cpu
