// The CUDA backward (flash_cuda.hpp): FlashAttention-2's recomputation from the forward's lse,
// in float32 SIMT arithmetic for every element type (tensor cores in the backward are future
// work: docs/cuda.md).
//
//   row_dots      D_i = dout_i . out_i                              (one warp per row)
//   backward_tile one block per 32-key tile of one key/value head: for every query head of its
//                 group and every 32-query tile that sees the keys, recompute
//                   P = exp(S - lse),  dP = dO V^T,  dS = P (dP - D)
//                 then dV += P^T dO and dK += dS^T Q stay in the block's registers (summed over
//                 the group's heads, written once at the end), and dQ += dS K goes to float32
//                 accumulators with atomicAdd (every key tile adds to it)
//   write_dq      the accumulators converted to dq's type and strides
//
// With S = scale * Q K^T (+ mask), dQ = scale * dS K and dK = scale * dS^T Q; the mask and the
// causal limit are constants.

#include "cuda/common.cuh"

namespace llm_utils::cuda_kernels {
namespace {

constexpr int kTile = 32;      // keys and queries per tile
constexpr int kThreads = 256;  // 8 per key of the tile for dK and dV, 8 per query for dQ
constexpr int kMaxD = 256;
constexpr int kPerThread = kMaxD / 8;  // features of dK, dV (and dQ) one thread accumulates

template <typename T>
__global__ void row_dots(Problem p, BackwardTensors t, float* drow) {
  const int64_t row = static_cast<int64_t>(blockIdx.x) * (blockDim.x / 32) + threadIdx.x / 32;
  const int lane = threadIdx.x % 32;
  if (row >= p.batch * p.heads * p.n) return;
  const int64_t g = row / p.n, i = row % p.n, b = g / p.heads, h = g % p.heads;
  const T* out = static_cast<const T*>(t.out) + b * t.out_strides.batch + h * t.out_strides.head +
                 i * t.out_strides.row;
  const T* dout = static_cast<const T*>(t.dout) + b * t.dout_strides.batch +
                  h * t.dout_strides.head + i * t.dout_strides.row;
  float sum = 0.0f;
  for (int64_t c = lane; c < p.dv; c += 32) sum = fmaf(to_float(dout[c]), to_float(out[c]), sum);
  for (int off = 16; off > 0; off /= 2) sum += __shfl_xor_sync(0xffffffffu, sum, off);
  if (lane == 0) drow[row] = sum;
}

int tile_smem_bytes(int64_t d, int64_t dv) {
  // K, Q (32, d + 1); V, dO (32, dv + 1); P, dS (32, 33); lse, D (32)
  return static_cast<int>(
      (2 * kTile * (d + 1) + 2 * kTile * (dv + 1) + 2 * kTile * 33 + 2 * kTile) * sizeof(float));
}

// Rows [r0, r0 + 32) of a (rows, cols) matrix into a float tile with leading dimension ld.
template <typename T>
__device__ __forceinline__ void stage(float* tile, int ld, const T* src, int64_t row_stride,
                                      int64_t r0, int64_t rows, int64_t cols) {
  for (int64_t idx = threadIdx.x; idx < kTile * cols; idx += blockDim.x) {
    const int64_t r = idx / cols, c = idx % cols;
    tile[r * ld + c] = r0 + r < rows ? to_float(src[(r0 + r) * row_stride + c]) : 0.0f;
  }
}

template <typename T>
__global__ void __launch_bounds__(kThreads)
    backward_tile(Problem p, BackwardTensors t, const float* drow, float* dq_acc) {
  extern __shared__ float smem[];
  const int d = static_cast<int>(p.d), dv = static_cast<int>(p.dv);
  const int ldk = d + 1, ldv = dv + 1;
  float* sk = smem;                // (32, d + 1) keys of the tile
  float* sq = sk + kTile * ldk;    // (32, d + 1) queries of the current query tile
  float* sv = sq + kTile * ldk;    // (32, dv + 1) values of the tile
  float* sdo = sv + kTile * ldv;   // (32, dv + 1) dout of the query tile
  float* sp = sdo + kTile * ldv;   // (32 queries, 33) P
  float* sds = sp + kTile * 33;    // (32 queries, 33) dS (without the scale)
  float* slse = sds + kTile * 33;  // (32) lse of the query tile
  float* sdr = slse + kTile;       // (32) D of the query tile
  const int tid = threadIdx.x;
  // Key/value heads along x (up to 2^31 - 1), key tiles along y (65535 tiles of 32 keys).
  const int64_t j0 = static_cast<int64_t>(blockIdx.y) * kTile;
  const int64_t kvg = blockIdx.x, b = kvg / p.kv_heads, kv = kvg % p.kv_heads;
  const int64_t group = p.heads / p.kv_heads;
  const T* k = static_cast<const T*>(p.k) + b * p.k_strides.batch + kv * p.k_strides.head;
  const T* v = static_cast<const T*>(p.v) + b * p.v_strides.batch + kv * p.v_strides.head;
  stage(sk, ldk, k, p.k_strides.row, j0, p.m, d);
  stage(sv, ldv, v, p.v_strides.row, j0, p.m, dv);

  const int key = tid / 8;  // dK, dV: key j0 + key, features tid % 8 + 8 u
  float dk_acc[kPerThread] = {}, dv_acc[kPerThread] = {};
  // Under the causal mask query i sees key j0 from i = j0 - query_offset on.
  const int64_t first = p.causal ? (j0 - p.query_offset > 0 ? j0 - p.query_offset : 0) : 0;

  for (int64_t hq = kv * group; hq < (kv + 1) * group; ++hq) {
    const int64_t g = b * p.heads + hq;
    const T* q = static_cast<const T*>(p.q) + b * p.q_strides.batch + hq * p.q_strides.head;
    const T* dout =
        static_cast<const T*>(t.dout) + b * t.dout_strides.batch + hq * t.dout_strides.head;
    for (int64_t i0 = first / kTile * kTile; i0 < p.n; i0 += kTile) {
      __syncthreads();  // the last tile's readers are done (and K, V are staged)
      stage(sq, ldk, q, p.q_strides.row, i0, p.n, d);
      stage(sdo, ldv, dout, t.dout_strides.row, i0, p.n, dv);
      if (tid < kTile) {
        const int64_t i = i0 + tid;
        slse[tid] = i < p.n ? t.lse[g * p.n + i] : kMinusInf;
        sdr[tid] = i < p.n ? drow[g * p.n + i] : 0.0f;
      }
      __syncthreads();
      // P and dS of the 32 x 32 pairs, 4 per thread: a warp takes one query, a lane one key.
#pragma unroll
      for (int u = 0; u < kTile * kTile / kThreads; ++u) {
        const int pair = tid + kThreads * u, r = pair / kTile, jj = pair % kTile;
        const int64_t i = i0 + r, j = j0 + jj;
        float prob = 0.0f, ds = 0.0f;
        if (i < p.n && j < visible_end(p, i) && slse[r] != kMinusInf) {
          float s = 0.0f, dp = 0.0f;
          for (int c = 0; c < d; ++c) s = fmaf(sq[r * ldk + c], sk[jj * ldk + c], s);
          for (int c = 0; c < dv; ++c) dp = fmaf(sdo[r * ldv + c], sv[jj * ldv + c], dp);
          // forward: P = exp(scale * q.k + mask - lse), O = P V
          prob = expf(s * p.scale + mask_at(p.mask, g, i, j) - slse[r]);
          ds = prob * (dp - sdr[r]);
        }
        sp[r * 33 + jj] = prob;
        sds[r * 33 + jj] = ds;
      }
      __syncthreads();
      // dV += P^T dO and dK += dS^T Q for this thread's key and features.
#pragma unroll
      for (int u = 0; u < kPerThread; ++u) {
        const int c = tid % 8 + 8 * u;
        if (c < dv) {
          float sum = 0.0f;
          for (int r = 0; r < kTile; ++r) sum = fmaf(sp[r * 33 + key], sdo[r * ldv + c], sum);
          dv_acc[u] += sum;
        }
        if (c < d) {
          float sum = 0.0f;
          for (int r = 0; r < kTile; ++r) sum = fmaf(sds[r * 33 + key], sq[r * ldk + c], sum);
          dk_acc[u] += sum;
        }
      }
      // dQ += scale * dS K, query i0 + tid / 8, features tid % 8 + 8 u.
      const int64_t i = i0 + tid / 8;
      if (t.dq != nullptr && i < p.n) {
        float* acc_row = dq_acc + (g * p.n + i) * p.d;
#pragma unroll
        for (int u = 0; u < kPerThread; ++u) {
          const int c = tid % 8 + 8 * u;
          if (c >= d) continue;
          float sum = 0.0f;
          for (int jj = 0; jj < kTile; ++jj)
            sum = fmaf(sds[(tid / 8) * 33 + jj], sk[jj * ldk + c], sum);
          atomicAdd(acc_row + c, sum * p.scale);
        }
      }
    }
  }

  const int64_t j = j0 + key;
  if (j >= p.m) return;
  T* dk_row = t.dk == nullptr ? nullptr
                              : static_cast<T*>(t.dk) + b * t.dk_strides.batch +
                                    kv * t.dk_strides.head + j * t.dk_strides.row;
  T* dv_row = static_cast<T*>(t.dv) + b * t.dv_strides.batch + kv * t.dv_strides.head +
              j * t.dv_strides.row;
#pragma unroll
  for (int u = 0; u < kPerThread; ++u) {
    const int c = tid % 8 + 8 * u;
    if (c < dv) dv_row[c] = from_float<T>(dv_acc[u]);
    if (dk_row != nullptr && c < d) dk_row[c] = from_float<T>(dk_acc[u] * p.scale);
  }
}

template <typename T>
__global__ void write_dq(Problem p, BackwardTensors t, const float* dq_acc) {
  const int64_t idx = static_cast<int64_t>(blockIdx.x) * blockDim.x + threadIdx.x;
  if (idx >= p.batch * p.heads * p.n * p.d) return;
  const int64_t c = idx % p.d, row = idx / p.d, i = row % p.n, g = row / p.n;
  const int64_t b = g / p.heads, h = g % p.heads;
  T* dq =
      static_cast<T*>(t.dq) + b * t.dq_strides.batch + h * t.dq_strides.head + i * t.dq_strides.row;
  dq[c] = from_float<T>(dq_acc[idx]);
}

template <typename T>
std::string backward_of(const Problem& p, const BackwardTensors& t, float* dq_acc, float* drow,
                        cudaStream_t stream) {
  const int64_t rows = p.batch * p.heads * p.n;
  if (rows > 0) {
    row_dots<T><<<static_cast<unsigned>((rows + 7) / 8), 256, 0, stream>>>(p, t, drow);
    if (std::string e = launch_error("backward: D = dout . out"); !e.empty()) return e;
  }
  if (t.dq != nullptr && rows * p.d > 0) {
    if (cudaMemsetAsync(dq_acc, 0, static_cast<size_t>(rows * p.d) * sizeof(float), stream) !=
        cudaSuccess) {
      return launch_error("backward: clearing dq");
    }
  }
  const int bytes = tile_smem_bytes(p.d, p.dv);
  if (cudaFuncSetAttribute(backward_tile<T>, cudaFuncAttributeMaxDynamicSharedMemorySize, bytes) !=
      cudaSuccess) {
    return launch_error("backward: shared memory");
  }
  if (p.m > 0 && p.batch * p.kv_heads > 0) {
    const dim3 grid(static_cast<unsigned>(p.batch * p.kv_heads),
                    static_cast<unsigned>((p.m + kTile - 1) / kTile));
    backward_tile<T><<<grid, kThreads, bytes, stream>>>(p, t, drow, dq_acc);
    if (std::string e = launch_error("backward"); !e.empty()) return e;
  }
  if (t.dq != nullptr && rows * p.d > 0) {
    const int64_t total = rows * p.d;
    write_dq<T><<<static_cast<unsigned>((total + 255) / 256), 256, 0, stream>>>(p, t, dq_acc);
    return launch_error("backward: writing dq");
  }
  return {};
}

}  // namespace

int64_t backward_workspace_bytes(const Problem& p) {
  const int64_t rows = p.batch * p.heads * p.n;
  return (rows * p.d + rows) * static_cast<int64_t>(sizeof(float));
}

std::string backward(const Problem& p, const BackwardTensors& t, void* workspace, void* stream) {
  if ((p.m + kTile - 1) / kTile > 65535) return "backward: more than 2^21 keys per head";
  if (p.d > kMaxD || p.dv > kMaxD) return "backward: head dims above 256 are not supported on CUDA";
  auto* dq_acc = static_cast<float*>(workspace);         // (B, H, N, d)
  float* drow = dq_acc + p.batch * p.heads * p.n * p.d;  // (B, H, N)
  const auto s = static_cast<cudaStream_t>(stream);
  switch (p.type) {
    case ElementType::float32:
      return backward_of<float>(p, t, dq_acc, drow, s);
    case ElementType::bfloat16:
      return backward_of<__nv_bfloat16>(p, t, dq_acc, drow, s);
    case ElementType::float16:
      return backward_of<__half>(p, t, dq_acc, drow, s);
  }
  return "backward: unknown element type";
}

}  // namespace llm_utils::cuda_kernels
