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
// dQ^T collects contributions from every key block, so each thread keeps its own (B, d, N)
// partial sum, added up at the end. Parallel over k/v batch elements x key blocks, so one
// sequence of one head keeps every core busy. With grouped-query attention a task loops over
// the kv_group query heads sharing its keys, so dK_j and dV_j sum over them in one place.

#include <omp.h>

#include <cmath>
#include <vector>

#include "cpu/flash_common.hpp"
#include "cpu/microkernels.hpp"
#include "llm_utils/threads.hpp"

namespace llm_utils::cpu {

using flash::kKeyBlock;
using flash::kMinusInf;
using flash::kQueryBlock;

namespace {

struct BackwardInputs {
  const FlashProblem& p;
  const float* lse;                    // (B, N)
  RowStats stats;                      // (B, N) each, or none: then P comes from lse
  const float* dout;                   // (B, N, dv)
  const flash::BlockedTranspose& qt;   // (B, d, N) = Q^T
  const flash::BlockedTranspose& kt;   // (B / kv_group, d, M) = K^T
  const flash::BlockedTranspose& dot;  // (B, dv, N) = dO^T
  const float* dsum;                   // (B, N) = D
  bool need_qk;                        // false when only dV is wanted (Linear4/5)
};

struct BackwardScratch {
  BackwardScratch(int64_t d, int64_t dv)
      : probs_t(kKeyBlock * kQueryBlock),
        dprobs_t(kKeyBlock * kQueryBlock),
        dk(kKeyBlock * d),
        dv(kKeyBlock * dv) {}
  std::vector<float> probs_t;   // (Bc, Br) P^T of one tile
  std::vector<float> dprobs_t;  // (Bc, Br) dP^T, then dS^T
  std::vector<float> dk;        // (Bc, d) accumulator
  std::vector<float> dv;        // (Bc, dv) accumulator
};

// One key block [j0, j0 + bc) of k/v batch element kv, against every query head of its group.
void backward_key_block(const BackwardInputs& in, int64_t kv, int64_t j0, BackwardScratch& s,
                        flash::BlockedTranspose& dq_t /* (B, d, N), this thread's */, float* dk,
                        float* dv) {
  const FlashProblem& p = in.p;
  const Microkernels& mk = microkernels();
  const flash::TileMasker masker{p};
  const float exp_scale = masker.prescale() ? 1.0f : p.scale;
  const int64_t bc = std::min(kKeyBlock, p.m - j0);
  const int64_t b0 = kv * p.kv_group;
  const float* k_j = p.k_of(b0) + j0 * p.d;   // (bc, d)
  const float* v_j = p.v_of(b0) + j0 * p.dv;  // (bc, dv)
  std::fill(s.dk.begin(), s.dk.end(), 0.0f);
  std::fill(s.dv.begin(), s.dv.end(), 0.0f);

  // Under a causal mask, queries before the first block returned here see none of these keys.
  const int64_t i_begin = flash::first_query_block_seeing(p, j0);
  for (int64_t b = b0; b < b0 + p.kv_group; ++b) {
    for (int64_t i0 = i_begin; i0 < p.n; i0 += kQueryBlock) {
      const int64_t br = std::min(kQueryBlock, p.n - i0);
      float* pt = s.probs_t.data();  // (bc, br), leading dimension kQueryBlock
      mk.gemm(bc, br, p.d, 1.0f, k_j, p.d, in.qt.block(b, i0), in.qt.ld, pt, kQueryBlock, false);
      masker.apply(pt, kQueryBlock, b, i0, br, j0, bc, true);
      const int64_t row = b * p.n + i0;
      const float* centers = in.stats.given() ? in.stats.row_max + row : nullptr;
      const float* offsets = in.stats.given() ? in.stats.log_sum + row : in.lse + row;
      for (int64_t r = 0; r < bc; ++r) {
        mk.exp_centered_each(pt + r * kQueryBlock, br, exp_scale, centers, offsets);
      }

      const float* dout_i = in.dout + (b * p.n + i0) * p.dv;  // (br, dv)
      mk.gemm(bc, p.dv, br, 1.0f, pt, kQueryBlock, dout_i, p.dv, s.dv.data(), p.dv, true);
      if (!in.need_qk) continue;

      float* dst = s.dprobs_t.data();  // (bc, br)
      mk.gemm(bc, br, p.dv, 1.0f, v_j, p.dv, in.dot.block(b, i0), in.dot.ld, dst, kQueryBlock,
              false);
      const float* d_i = in.dsum + b * p.n + i0;
      for (int64_t r = 0; r < bc; ++r) {
        mk.softmax_grad(pt + r * kQueryBlock, dst + r * kQueryBlock, d_i, br);
      }
      const float* q_i = p.q + (b * p.n + i0) * p.d;  // (br, d)
      mk.gemm(bc, p.d, br, p.scale, dst, kQueryBlock, q_i, p.d, s.dk.data(), p.d, true);
      mk.gemm(p.d, br, bc, p.scale, in.kt.block(kv, j0), in.kt.ld, dst, kQueryBlock,
              dq_t.block(b, i0), dq_t.ld, true);
    }
  }

  std::copy(s.dv.begin(), s.dv.begin() + bc * p.dv, dv + (kv * p.m + j0) * p.dv);
  if (in.need_qk && dk != nullptr) {
    std::copy(s.dk.begin(), s.dk.begin() + bc * p.d, dk + (kv * p.m + j0) * p.d);
  }
}

}  // namespace

void flash_backward(const FlashProblem& p, const float* out, const float* lse, RowStats stats,
                    const float* dout, float* dq, float* dk, float* dv) {
  using flash::BlockedTranspose;
  const bool need_qk = dq != nullptr || dk != nullptr;
  const BlockedTranspose qt = BlockedTranspose::of(p.q, p.batch, p.n, p.d, p.n * p.d);  // (B, d, N)
  BlockedTranspose kt, dot;  // (B / kv_group, d, M) and (B, dv, N), when dq or dk is wanted
  std::vector<float> dsum;   // (B, N)
  if (need_qk) {
    kt = BlockedTranspose::of(p.k, p.kv_batch(), p.m, p.d, p.k_stride);
    dot = BlockedTranspose::of(dout, p.batch, p.n, p.dv, p.n * p.dv);
    // D_i = rowsum(dO * O): the softmax backward's row dot product, once per query.
    dsum.resize(static_cast<size_t>(p.batch * p.n));
    const Microkernels& mk = microkernels();
    for (int64_t row = 0; row < p.batch * p.n; ++row) {
      dsum[static_cast<size_t>(row)] = mk.dot(dout + row * p.dv, out + row * p.dv, p.dv);
    }
  }
  const BackwardInputs in{p, lse, stats, dout, qt, kt, dot, dsum.data(), need_qk};

  const int64_t k_blocks = flash::blocks(p.m, kKeyBlock);
  const int64_t tasks = p.kv_batch() * k_blocks;
  const int threads = get_num_threads();
  // Each thread's partial dQ^T (B, d, N); empty when dq and dk are not wanted.
  std::vector<BlockedTranspose> dq_t(static_cast<size_t>(threads));
  if (need_qk) {
    for (BlockedTranspose& partial : dq_t) partial = BlockedTranspose(p.batch, p.n, p.d);
  }
#pragma omp parallel num_threads(threads)
  {
    BackwardScratch scratch(p.d, p.dv);
    BlockedTranspose& my_dq_t = dq_t[static_cast<size_t>(omp_get_thread_num())];
    // Static round-robin: which key blocks a thread's dq partial holds depends on the thread
    // count only, so the sum (and dq) is the same from run to run. Round-robin also balances
    // the causal case, where later key blocks meet fewer queries.
#pragma omp for schedule(static, 1)
    for (int64_t t = 0; t < tasks; ++t) {
      backward_key_block(in, t / k_blocks, (t % k_blocks) * kKeyBlock, scratch, my_dq_t, dk, dv);
    }
  }
  if (dq == nullptr) return;
    // dq (B, N, d) = sum over threads of dq_t (B, d, N), transposed; threads add in a fixed order.
#pragma omp parallel for collapse(2) schedule(static) num_threads(get_num_threads())
  for (int64_t b = 0; b < p.batch; ++b) {
    for (int64_t i = 0; i < p.n; ++i) {
      for (int64_t c = 0; c < p.d; ++c) {
        float acc = 0.0f;
        for (const BlockedTranspose& partial : dq_t) acc += partial.at(b, c, i);
        dq[(b * p.n + i) * p.d + c] = acc;
      }
    }
  }
}

void flash_probabilities(const FlashProblem& p, const float* lse, RowStats stats, float* probs) {
  // (B / kv_group, d, M) = K^T
  const flash::BlockedTranspose kt =
      flash::BlockedTranspose::of(p.k, p.kv_batch(), p.m, p.d, p.k_stride);
  const flash::TileMasker masker{p};
  const float exp_scale = masker.prescale() ? 1.0f : p.scale;
  const int64_t q_blocks = flash::blocks(p.n, kQueryBlock);
#pragma omp parallel for schedule(dynamic, 1) num_threads(get_num_threads())
  for (int64_t t = 0; t < p.batch * q_blocks; ++t) {
    const Microkernels& mk = microkernels();
    const int64_t b = t / q_blocks, i0 = (t % q_blocks) * kQueryBlock;
    const int64_t br = std::min(kQueryBlock, p.n - i0);
    float* rows = probs + (b * p.n + i0) * p.m;  // (br, M)
    for (int64_t j0 = 0; j0 < p.m; j0 += kKeyBlock) {
      mk.gemm(br, std::min(kKeyBlock, p.m - j0), p.d, 1.0f, p.q + (b * p.n + i0) * p.d, p.d,
              kt.block(b / p.kv_group, j0), kt.ld, rows + j0, p.m, false);
    }
    masker.apply(rows, p.m, b, i0, br, 0, p.m, false);
    for (int64_t r = 0; r < br; ++r) {
      const int64_t at = b * p.n + i0 + r;
      const float center = stats.given() ? stats.row_max[at] : 0.0f;
      const float offset = stats.given() ? stats.log_sum[at] : lse[at];
      float* row = rows + r * p.m;
      if (offset == kMinusInf) {
        std::fill(row, row + p.m, 0.0f);
      } else {
        mk.exp_centered_sum(row, p.m, exp_scale, center, offset);
      }
    }
  }
}

}  // namespace llm_utils::cpu
