// The fused forward: for each block of queries, stream the key/value blocks once, keeping a
// running row max m and row sum l (online softmax) and rescaling the output accumulator when
// the max grows; the N x M scores never exist beyond one 64 x 64 tile.

#include <cmath>
#include <vector>

#include "cpu/flash_common.hpp"
#include "cpu/microkernels.hpp"

namespace llm_utils::cpu {

using flash::kKeyBlock;
using flash::kMinusInf;
using flash::kQueryBlock;

namespace {

// Per-thread scratch for one query block.
struct ForwardScratch {
  explicit ForwardScratch(int64_t dv)
      : scores(kQueryBlock * kKeyBlock),
        acc(kQueryBlock * dv),
        row_max(kQueryBlock),
        row_sum(kQueryBlock) {}
  std::vector<float> scores;   // (Br, Bc) scores, then probabilities, of one tile
  std::vector<float> acc;      // (Br, dv) unnormalised output
  std::vector<float> row_max;  // (Br) running max of the (raw or prescaled) scores
  std::vector<float> row_sum;  // (Br) running sum of exp
};

bool greater_or_nan(float candidate, float current) {
  return candidate > current || std::isnan(candidate);
}

void forward_block(const FlashProblem& p, const float* kt, int64_t b, int64_t i0, ForwardScratch& s,
                   float* out, float* lse) {
  const Microkernels& mk = microkernels();
  const flash::TileMasker masker{p};
  const int64_t br = std::min(kQueryBlock, p.n - i0);
  const float* q = p.q + (b * p.n + i0) * p.d;  // (br, d)
  const float* kt_b = kt + b * p.d * p.m;       // (d, M)
  const float* v_b = p.v + b * p.m * p.dv;      // (M, dv)
  // With an additive mask the tile holds prescaled scores and the exponent uses scale 1.
  const float exp_scale = masker.prescale() ? 1.0f : p.scale;

  std::fill(s.acc.begin(), s.acc.begin() + br * p.dv, 0.0f);
  std::fill(s.row_max.begin(), s.row_max.begin() + br, kMinusInf);
  std::fill(s.row_sum.begin(), s.row_sum.begin() + br, 0.0f);

  const int64_t j_end = flash::key_end(p, i0, br);
  for (int64_t j0 = 0; j0 < j_end; j0 += kKeyBlock) {
    const int64_t bc = std::min(kKeyBlock, j_end - j0);
    float* tile = s.scores.data();  // (br, bc), leading dimension kKeyBlock
    // tile = Q_blk K_blk^T
    mk.gemm(br, bc, p.d, 1.0f, q, p.d, kt_b + j0, p.m, tile, kKeyBlock, false);
    masker.apply(tile, kKeyBlock, b, i0, br, j0, bc, false);
    for (int64_t r = 0; r < br; ++r) {
      float* row = tile + r * kKeyBlock;
      const float tile_max = mk.row_max(row, bc);
      float& m = s.row_max[static_cast<size_t>(r)];
      const float m_new = greater_or_nan(tile_max, m) ? tile_max : m;
      if (m_new == kMinusInf) {
        // Every key so far is hidden from this query: nothing to add.
        std::fill(row, row + bc, 0.0f);
        continue;
      }
      const float correction = m == kMinusInf ? 0.0f : std::exp((m - m_new) * exp_scale);
      const float tile_sum = mk.exp_shifted_sum(row, bc, exp_scale, m_new * exp_scale);
      float& l = s.row_sum[static_cast<size_t>(r)];
      l = l * correction + tile_sum;
      if (correction != 1.0f) {
        float* acc_row = s.acc.data() + r * p.dv;
        for (int64_t c = 0; c < p.dv; ++c) acc_row[c] *= correction;
      }
      m = m_new;
    }
    // acc += P_tile V_blk
    mk.gemm(br, p.dv, bc, 1.0f, tile, kKeyBlock, v_b + j0 * p.dv, p.dv, s.acc.data(), p.dv, true);
  }

  for (int64_t r = 0; r < br; ++r) {
    const float l = s.row_sum[static_cast<size_t>(r)];
    const float m = s.row_max[static_cast<size_t>(r)];
    float* out_row = out + (b * p.n + i0 + r) * p.dv;
    const float* acc_row = s.acc.data() + r * p.dv;
    if (l == 0.0f) {  // a fully hidden row: zeros, not 0/0
      std::fill(out_row, out_row + p.dv, 0.0f);
      lse[b * p.n + i0 + r] = kMinusInf;
      continue;
    }
    const float inv_l = 1.0f / l;
    for (int64_t c = 0; c < p.dv; ++c) out_row[c] = acc_row[c] * inv_l;
    lse[b * p.n + i0 + r] = m * exp_scale + std::log(l);
  }
}

}  // namespace

void flash_forward(const FlashProblem& p, float* out, float* lse) {
  std::vector<float> kt(static_cast<size_t>(p.batch * p.d * p.m));  // (B, d, M) = K^T
  flash::transpose_batched(p.k, p.batch, p.m, p.d, kt.data());
  const int64_t q_blocks = flash::blocks(p.n, kQueryBlock);
  const int64_t tasks = p.batch * q_blocks;
#pragma omp parallel
  {
    ForwardScratch scratch(p.dv);
#pragma omp for schedule(dynamic, 1)
    for (int64_t t = 0; t < tasks; ++t) {
      forward_block(p, kt.data(), t / q_blocks, (t % q_blocks) * kQueryBlock, scratch, out, lse);
    }
  }
}

}  // namespace llm_utils::cpu
