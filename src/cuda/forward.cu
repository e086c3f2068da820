// The CUDA forward (flash_cuda.hpp): FlashAttention-2's online softmax over 64-key tiles.
//
// Tensor cores (bfloat16 / float16, head dim 64 or 128): a block of 4 warps takes 64 queries of
// one head, each warp 16 of them. Q's fragments stay in registers for the whole loop; every key
// tile is staged in shared memory (K and V, 64 rows each), S = Q K^T comes out of mma.sync
// m16n8k16 as float32 fragments, the online softmax runs on them in registers (a row lives in
// the 4 lanes of a quad), and P, narrowed to the input type, is fed straight back as the A
// operand of O += P V (mma_layout.hpp). Key tiles past the last query's causal limit are never
// loaded.
//
// SIMT (float32, and any head dim up to 256 in every type): a block of 4 warps takes 32
// queries, each warp 8; per 32-key tile, lane j computes the scores of key j, the warp reduces
// the row max and sum with shuffles, and lane l accumulates output features l, l + 32, ...

#include <type_traits>

#include "cuda/common.cuh"

namespace llm_utils::cuda_kernels {
namespace {

// The block's query head (heads along the grid's x, up to 2^31 - 1 of them; query tiles along
// y) and where its q, out and its key/value head's k, v start.
template <typename T>
struct HeadOf {
  int64_t g;  // flattened query head b * H + h
  const T *q, *k, *v;
  T* out;
  __device__ HeadOf(const Problem& p, const ForwardOutputs& o) : g(blockIdx.x) {
    const int64_t b = g / p.heads, h = g % p.heads, kv = kv_of(p, h);
    q = static_cast<const T*>(p.q) + b * p.q_strides.batch + h * p.q_strides.head;
    k = static_cast<const T*>(p.k) + b * p.k_strides.batch + kv * p.k_strides.head;
    v = static_cast<const T*>(p.v) + b * p.v_strides.batch + kv * p.v_strides.head;
    out = static_cast<T*>(o.out) + b * o.out_strides.batch + h * o.out_strides.head;
  }
};

// ---------------------------------------------------------------- tensor cores

constexpr int kMmaRows = 64;  // queries per block: 4 warps x 16
constexpr int kMmaKeys = 64;  // keys per tile: 8 tiles of 8 columns of S
constexpr int kPad = 8;       // elements of padding after each shared-memory row (16 bytes)

template <int D>
constexpr int mma_smem_bytes() {
  return 3 * 64 * (D + kPad) * 2;  // Q, K, V tiles of 16-bit elements
}

// Rows [r0, r0 + 64) of a (rows, D) matrix with the given row stride into a shared tile with
// leading dimension ld, zeros past `rows`.
template <typename T, int D>
__device__ __forceinline__ void stage_rows(T* tile, int ld, const T* src, int64_t row_stride,
                                           int64_t r0, int64_t rows) {
  for (int idx = threadIdx.x; idx < 64 * D; idx += blockDim.x) {
    const int r = idx / D, c = idx % D;
    tile[r * ld + c] = r0 + r < rows ? src[(r0 + r) * row_stride + c] : from_float<T>(0.0f);
  }
}

template <typename T, int D>
__global__ void __launch_bounds__(128) forward_mma(Problem p, ForwardOutputs o) {
  extern __shared__ __align__(16) unsigned char smem[];
  constexpr int ld = D + kPad;
  T* sq = reinterpret_cast<T*>(smem);  // (64, D) queries
  T* sk = sq + kMmaRows * ld;          // (64, D) keys of the tile
  T* sv = sk + kMmaKeys * ld;          // (64, D) values of the tile
  const int warp = threadIdx.x / 32, lane = threadIdx.x % 32;
  const HeadOf<T> head(p, o);
  const int64_t g = head.g, i0 = static_cast<int64_t>(blockIdx.y) * kMmaRows;
  const T *q = head.q, *k = head.k, *v = head.v;
  T* out = head.out;

  stage_rows<T, D>(sq, ld, q, p.q_strides.row, i0, p.n);
  __syncthreads();
  uint32_t qa[D / 16][4];  // this warp's 16 query rows as A fragments
#pragma unroll
  for (int kk = 0; kk < D / 16; ++kk) mma::load_a(sq + warp * 16 * ld + kk * 16, ld, lane, qa[kk]);

  float acc[D / 8][4] = {};                   // O: (16, D) of this warp, unnormalised
  float row_max[2] = {kMinusInf, kMinusInf};  // rows g and g + 8 of the fragment
  float row_sum[2] = {0.0f, 0.0f};            // this lane's share of each row's sum
  const int64_t rows[2] = {i0 + warp * 16 + lane / 4, i0 + warp * 16 + lane / 4 + 8};
  // The keys any query of the block sees: visible_end grows with the query.
  const int64_t last = (i0 + kMmaRows < p.n ? i0 + kMmaRows : p.n) - 1;
  const int64_t key_end = visible_end(p, last);

  for (int64_t j0 = 0; j0 < key_end; j0 += kMmaKeys) {
    __syncthreads();  // every warp is done with the last tile
    stage_rows<T, D>(sk, ld, k, p.k_strides.row, j0, p.m);
    stage_rows<T, D>(sv, ld, v, p.v_strides.row, j0, p.m);
    __syncthreads();
    // S (16, 64) = Q K^T, in 8 column tiles of 8 keys.
    float s[8][4] = {};
#pragma unroll
    for (int nt = 0; nt < 8; ++nt) {
#pragma unroll
      for (int kk = 0; kk < D / 16; ++kk) {
        uint32_t bk[2];
        mma::load_b_transposed(sk + nt * 8 * ld + kk * 16, ld, lane, bk);
        mma_16x8x16<T>(s[nt], qa[kk], bk);
      }
    }
    // Scale, mask and hide; then the online softmax per row (the quad shares a row).
    float tile_max[2] = {kMinusInf, kMinusInf};
#pragma unroll
    for (int nt = 0; nt < 8; ++nt) {
#pragma unroll
      for (int e = 0; e < 4; ++e) {
        const mma::Coord c = mma::c_coord(lane, e);
        const int64_t i = rows[e / 2], j = j0 + nt * 8 + c.col;
        float x = kMinusInf;
        if (i < p.n && j < visible_end(p, i)) x = s[nt][e] * p.scale + mask_at(p.mask, g, i, j);
        s[nt][e] = x;
        tile_max[e / 2] = fmaxf(tile_max[e / 2], x);
      }
    }
#pragma unroll
    for (int r = 0; r < 2; ++r) {
      const float m_new = fmaxf(row_max[r], quad_max(tile_max[r]));
      // Rows that have seen no key yet keep zeros (exp(-inf) = 0, no 0 * inf).
      const float m_use = m_new == kMinusInf ? 0.0f : m_new;
      const float rescale = row_max[r] == kMinusInf ? 0.0f : __expf(row_max[r] - m_use);
      row_max[r] = m_new;
      float sum = 0.0f;
#pragma unroll
      for (int nt = 0; nt < 8; ++nt) {
#pragma unroll
        for (int e = 2 * r; e < 2 * r + 2; ++e) {
          s[nt][e] = __expf(s[nt][e] - m_use);
          sum += s[nt][e];
        }
      }
      row_sum[r] = row_sum[r] * rescale + sum;
#pragma unroll
      for (int dn = 0; dn < D / 8; ++dn) {
        acc[dn][2 * r] *= rescale;
        acc[dn][2 * r + 1] *= rescale;
      }
    }
    // O += P V: P's A fragments are S's C fragments, narrowed to T.
#pragma unroll
    for (int kk = 0; kk < kMmaKeys / 16; ++kk) {
      uint32_t pa[4];
      mma::a_from_c(
          s[2 * kk], s[2 * kk + 1], [](float lo, float hi) { return pack2<T>(lo, hi); }, pa);
#pragma unroll
      for (int dn = 0; dn < D / 8; ++dn) {
        uint32_t bv[2];
        mma::load_b(sv + kk * 16 * ld + dn * 8, ld, lane, bv);
        mma_16x8x16<T>(acc[dn], pa, bv);
      }
    }
  }

#pragma unroll
  for (int r = 0; r < 2; ++r) {
    const float l = quad_sum(row_sum[r]);
    const int64_t i = rows[r];
    if (i >= p.n) continue;
    const float inv = l > 0.0f ? 1.0f / l : 0.0f;  // a row that saw no key: zeros
#pragma unroll
    for (int dn = 0; dn < D / 8; ++dn) {
      const int col = dn * 8 + 2 * (lane % 4);
      out[i * o.out_strides.row + col] = from_float<T>(acc[dn][2 * r] * inv);
      out[i * o.out_strides.row + col + 1] = from_float<T>(acc[dn][2 * r + 1] * inv);
    }
    if (lane % 4 == 0) o.lse[g * p.n + i] = l > 0.0f ? row_max[r] + logf(l) : kMinusInf;
  }
}

// ---------------------------------------------------------------- SIMT

constexpr int kSimtRows = 32;  // queries per block: 4 warps x 8
constexpr int kSimtKeys = 32;  // keys per tile: one per lane
constexpr int kMaxD = 256;

int simt_smem_bytes(int64_t d, int64_t dv) {
  // queries (32, d), keys (32, d + 1), values (32, dv), P (4 warps, 8 rows, 32 keys)
  return static_cast<int>((kSimtRows * d + kSimtKeys * (d + 1) + kSimtKeys * dv + 4 * 8 * 32) *
                          sizeof(float));
}

template <typename T>
__global__ void __launch_bounds__(128) forward_simt(Problem p, ForwardOutputs o) {
  extern __shared__ float fsmem[];
  const int d = static_cast<int>(p.d), dv = static_cast<int>(p.dv);
  float* sq = fsmem;                     // (32, d)
  float* sk = sq + kSimtRows * d;        // (32, d + 1): lane j reads row j, padded off one bank
  float* sv = sk + kSimtKeys * (d + 1);  // (32, dv)
  float* sp = sv + kSimtKeys * dv;       // (4, 8, 32) each warp's probabilities of one tile
  const int warp = threadIdx.x / 32, lane = threadIdx.x % 32;
  const HeadOf<T> head(p, o);
  const int64_t g = head.g, i0 = static_cast<int64_t>(blockIdx.y) * kSimtRows;
  const T *q = head.q, *k = head.k, *v = head.v;
  T* out = head.out;

  for (int idx = threadIdx.x; idx < kSimtRows * d; idx += blockDim.x) {
    const int r = idx / d, c = idx % d;
    sq[idx] = i0 + r < p.n ? to_float(q[(i0 + r) * p.q_strides.row + c]) : 0.0f;
  }
  constexpr int kPerLane = kMaxD / 32;
  float acc[8][kPerLane] = {};  // 8 rows x features lane, lane + 32, ...
  float row_max[8], row_sum[8];
#pragma unroll
  for (int r = 0; r < 8; ++r) {
    row_max[r] = kMinusInf;
    row_sum[r] = 0.0f;
  }
  const int64_t last = (i0 + kSimtRows < p.n ? i0 + kSimtRows : p.n) - 1;
  const int64_t key_end = visible_end(p, last);
  float* my_p = sp + warp * 8 * 32;

  for (int64_t j0 = 0; j0 < key_end; j0 += kSimtKeys) {
    __syncthreads();
    for (int idx = threadIdx.x; idx < kSimtKeys * d; idx += blockDim.x) {
      const int r = idx / d, c = idx % d;
      sk[r * (d + 1) + c] = j0 + r < p.m ? to_float(k[(j0 + r) * p.k_strides.row + c]) : 0.0f;
    }
    for (int idx = threadIdx.x; idx < kSimtKeys * dv; idx += blockDim.x) {
      const int r = idx / dv, c = idx % dv;
      sv[idx] = j0 + r < p.m ? to_float(v[(j0 + r) * p.v_strides.row + c]) : 0.0f;
    }
    __syncthreads();
    const int64_t j = j0 + lane;
#pragma unroll
    for (int r = 0; r < 8; ++r) {
      const int row = warp * 8 + r;
      const int64_t i = i0 + row;
      float x = kMinusInf;
      if (i < p.n && j < visible_end(p, i)) {
        float dot = 0.0f;
        for (int c = 0; c < d; ++c) dot = fmaf(sq[row * d + c], sk[lane * (d + 1) + c], dot);
        x = dot * p.scale + mask_at(p.mask, g, i, j);
      }
      float m_tile = x;
      for (int off = 16; off > 0; off /= 2) {
        m_tile = fmaxf(m_tile, __shfl_xor_sync(0xffffffffu, m_tile, off));
      }
      const float m_new = fmaxf(row_max[r], m_tile);
      const float m_use = m_new == kMinusInf ? 0.0f : m_new;
      // expf, not __expf: float32 inputs get float32's accuracy.
      const float rescale = row_max[r] == kMinusInf ? 0.0f : expf(row_max[r] - m_use);
      row_max[r] = m_new;
      const float e = expf(x - m_use);
      float sum = e;
      for (int off = 16; off > 0; off /= 2) sum += __shfl_xor_sync(0xffffffffu, sum, off);
      row_sum[r] = row_sum[r] * rescale + sum;
      my_p[r * 32 + lane] = e;
#pragma unroll
      for (int c = 0; c < kPerLane; ++c) acc[r][c] *= rescale;
    }
    __syncwarp();
#pragma unroll
    for (int r = 0; r < 8; ++r) {
#pragma unroll
      for (int c = 0; c < kPerLane; ++c) {
        if (lane + 32 * c >= dv) continue;
        float sum = 0.0f;
        for (int jj = 0; jj < kSimtKeys; ++jj) {
          sum = fmaf(my_p[r * 32 + jj], sv[jj * dv + lane + 32 * c], sum);
        }
        acc[r][c] += sum;
      }
    }
    __syncwarp();
  }

#pragma unroll
  for (int r = 0; r < 8; ++r) {
    const int64_t i = i0 + warp * 8 + r;
    if (i >= p.n) continue;
    const float inv = row_sum[r] > 0.0f ? 1.0f / row_sum[r] : 0.0f;
#pragma unroll
    for (int c = 0; c < kPerLane; ++c) {
      if (lane + 32 * c < dv)
        out[i * o.out_strides.row + lane + 32 * c] = from_float<T>(acc[r][c] * inv);
    }
    if (lane == 0) {
      o.lse[g * p.n + i] = row_sum[r] > 0.0f ? row_max[r] + logf(row_sum[r]) : kMinusInf;
    }
  }
}

// ---------------------------------------------------------------- launch

template <typename T, int D>
std::string launch_mma(const Problem& p, const ForwardOutputs& o, cudaStream_t stream) {
  constexpr int bytes = mma_smem_bytes<D>();
  if (cudaFuncSetAttribute(forward_mma<T, D>, cudaFuncAttributeMaxDynamicSharedMemorySize, bytes) !=
      cudaSuccess) {
    return launch_error("forward (tensor cores): shared memory");
  }
  const dim3 grid(static_cast<unsigned>(p.batch * p.heads),
                  static_cast<unsigned>((p.n + kMmaRows - 1) / kMmaRows));
  forward_mma<T, D><<<grid, 128, bytes, stream>>>(p, o);
  return launch_error("forward (tensor cores)");
}

template <typename T>
std::string launch_simt(const Problem& p, const ForwardOutputs& o, cudaStream_t stream) {
  const int bytes = simt_smem_bytes(p.d, p.dv);
  if (cudaFuncSetAttribute(forward_simt<T>, cudaFuncAttributeMaxDynamicSharedMemorySize, bytes) !=
      cudaSuccess) {
    return launch_error("forward (SIMT): shared memory");
  }
  const dim3 grid(static_cast<unsigned>(p.batch * p.heads),
                  static_cast<unsigned>((p.n + kSimtRows - 1) / kSimtRows));
  forward_simt<T><<<grid, 128, bytes, stream>>>(p, o);
  return launch_error("forward (SIMT)");
}

template <typename T>
std::string forward_of(const Problem& p, const ForwardOutputs& o, cudaStream_t stream) {
  if constexpr (!std::is_same_v<T, float>) {
    if (p.d == p.dv && p.d == 64) return launch_mma<T, 64>(p, o, stream);
    if (p.d == p.dv && p.d == 128) return launch_mma<T, 128>(p, o, stream);
  }
  return launch_simt<T>(p, o, stream);
}

}  // namespace

std::string forward(const Problem& p, const ForwardOutputs& o, void* stream) {
  if (p.batch * p.heads == 0 || p.n == 0) return {};
  if ((p.n + 31) / 32 > 65535) return "forward: more than 2^21 queries per head";
  if (p.d > kMaxD || p.dv > kMaxD) return "forward: head dims above 256 are not supported on CUDA";
  const auto s = static_cast<cudaStream_t>(stream);
  switch (p.type) {
    case ElementType::float32:
      return forward_of<float>(p, o, s);
    case ElementType::bfloat16:
      return forward_of<__nv_bfloat16>(p, o, s);
    case ElementType::float16:
      return forward_of<__half>(p, o, s);
  }
  return "forward: unknown element type";
}

}  // namespace llm_utils::cuda_kernels
