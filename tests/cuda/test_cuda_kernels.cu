// The CUDA kernels (src/cuda/flash_cuda.hpp) against a double-precision reference written here,
// on a GPU: forward (out, lse) and backward (dq, dk, dv) for float32, bfloat16 and float16, head
// dims 64 and 128 (tensor cores for the 16-bit types) and 40 (SIMT), causal with and without a
// query offset, cross attention, grouped-query heads, an additive key-padding mask with hidden
// keys, and q / out read and written through strided (B, N, H, d) layouts.
//
// Self-contained (no other library), so that a machine with only CUDA builds and runs it:
//   nvcc -std=c++17 -O3 -arch=sm_90 -Isrc src/cuda/forward.cu src/cuda/backward.cu \
//        tests/cuda/test_cuda_kernels.cu -o test_cuda_kernels && ./test_cuda_kernels
// Exits 0 when every check passes, 1 otherwise (and 2 without a CUDA device). CMake builds it
// wherever it finds nvcc (a compile check) and registers it with CTest only where it found a GPU.

#include <cuda_bf16.h>
#include <cuda_fp16.h>
#include <cuda_runtime.h>

#include <cmath>
#include <cstdint>
#include <cstdio>
#include <cstring>
#include <random>
#include <string>
#include <vector>

#include "cuda/flash_cuda.hpp"

namespace ck = llm_utils::cuda_kernels;

namespace {

int failures = 0;

void check(bool ok, const std::string& what) {
  if (!ok) {
    ++failures;
    std::printf("FAILED: %s\n", what.c_str());
  }
}

void cuda_ok(cudaError_t e, const char* what) {
  if (e != cudaSuccess) {
    std::printf("CUDA error in %s: %s\n", what, cudaGetErrorString(e));
    std::exit(1);
  }
}

// ---------------------------------------------------------------- element types on the host

uint16_t bf16_bits(float x) {
  uint32_t u;
  std::memcpy(&u, &x, 4);
  if ((u & 0x7FFFFFFFu) > 0x7F800000u) return 0x7FC0;
  u += 0x7FFFu + ((u >> 16) & 1u);
  return static_cast<uint16_t>(u >> 16);
}
float from_bf16_bits(uint16_t b) {
  const uint32_t u = static_cast<uint32_t>(b) << 16;
  float x;
  std::memcpy(&x, &u, 4);
  return x;
}
uint16_t f16_bits(float x) {
  const __half h = __float2half_rn(x);
  uint16_t b;
  std::memcpy(&b, &h, 2);
  return b;
}
float from_f16_bits(uint16_t b) {
  __half h;
  std::memcpy(&h, &b, 2);
  return __half2float(h);
}

size_t element_size(ck::ElementType t) {
  return t == ck::ElementType::float32 ? 4 : 2;
}
// x rounded to the type and back.
float round_to(ck::ElementType t, float x) {
  if (t == ck::ElementType::bfloat16) return from_bf16_bits(bf16_bits(x));
  if (t == ck::ElementType::float16) return from_f16_bits(f16_bits(x));
  return x;
}
void store(ck::ElementType t, std::vector<unsigned char>& bytes, size_t index, float x) {
  if (t == ck::ElementType::float32) {
    std::memcpy(bytes.data() + 4 * index, &x, 4);
  } else {
    const uint16_t b = t == ck::ElementType::bfloat16 ? bf16_bits(x) : f16_bits(x);
    std::memcpy(bytes.data() + 2 * index, &b, 2);
  }
}
float load(ck::ElementType t, const std::vector<unsigned char>& bytes, size_t index) {
  if (t == ck::ElementType::float32) {
    float x;
    std::memcpy(&x, bytes.data() + 4 * index, 4);
    return x;
  }
  uint16_t b;
  std::memcpy(&b, bytes.data() + 2 * index, 2);
  return t == ck::ElementType::bfloat16 ? from_bf16_bits(b) : from_f16_bits(b);
}

// ---------------------------------------------------------------- one case

struct Case {
  const char* name;
  ck::ElementType type;
  int64_t batch, heads, kv_heads, n, m, d, dv;
  bool causal;
  int64_t query_offset;
  // 0: none; 1: key padding (B, 1, 1, M), every fifth key hidden, small values elsewhere;
  // 2: per row (B, 1, N, M): batch 0 hides keys [0, 70) (whole first tiles: rows that have seen
  //    no key yet), row 3 hides every key (out 0, lse -inf, no gradient), small values elsewhere.
  int mask;
  bool heads_inside;     // q, out, dout, dq stored as (B, N, H, d) and read through strides
  float range = 1.0f;    // inputs uniform in [-range, range]
  bool only_dv = false;  // the backward without dq and dk
};

// A (B, heads, rows, cols) array on the host in logical order, its device copy in the case's
// layout, and the strides that layout has.
struct Array {
  int64_t batch, heads, rows, cols;
  bool heads_inside;
  std::vector<float> values;  // logical (B, heads, rows, cols), rounded to the element type
  ck::Strides strides;
  void* device = nullptr;

  Array(int64_t b, int64_t h, int64_t r, int64_t c, bool inside)
      : batch(b),
        heads(h),
        rows(r),
        cols(c),
        heads_inside(inside),
        values(static_cast<size_t>(b * h * r * c)) {
    strides = inside ? ck::Strides{r * h * c, c, h * c} : ck::Strides{h * r * c, r * c, c};
  }
  size_t offset(int64_t b, int64_t h, int64_t r, int64_t c) const {
    return static_cast<size_t>(b * strides.batch + h * strides.head + r * strides.row + c);
  }
  size_t logical(int64_t b, int64_t h, int64_t r, int64_t c) const {
    return static_cast<size_t>(((b * heads + h) * rows + r) * cols + c);
  }
  void fill(std::mt19937& gen, ck::ElementType t, float range = 1.0f) {
    std::uniform_real_distribution<float> u(-range, range);
    for (float& x : values) x = round_to(t, u(gen));
  }
  void upload(ck::ElementType t) {
    std::vector<unsigned char> bytes(values.size() * element_size(t));
    for (int64_t b = 0; b < batch; ++b)
      for (int64_t h = 0; h < heads; ++h)
        for (int64_t r = 0; r < rows; ++r)
          for (int64_t c = 0; c < cols; ++c)
            store(t, bytes, offset(b, h, r, c), values[logical(b, h, r, c)]);
    cuda_ok(cudaMalloc(&device, bytes.size()), "cudaMalloc");
    cuda_ok(cudaMemcpy(device, bytes.data(), bytes.size(), cudaMemcpyHostToDevice), "upload");
  }
  void allocate(ck::ElementType t) {
    cuda_ok(cudaMalloc(&device, values.size() * element_size(t)), "cudaMalloc");
    cuda_ok(cudaMemset(device, 0xFF, values.size() * element_size(t)), "cudaMemset");  // NaN-ish
  }
  std::vector<float> download(ck::ElementType t) const {
    std::vector<unsigned char> bytes(values.size() * element_size(t));
    cuda_ok(cudaMemcpy(bytes.data(), device, bytes.size(), cudaMemcpyDeviceToHost), "download");
    std::vector<float> out(values.size());
    for (int64_t b = 0; b < batch; ++b)
      for (int64_t h = 0; h < heads; ++h)
        for (int64_t r = 0; r < rows; ++r)
          for (int64_t c = 0; c < cols; ++c)
            out[logical(b, h, r, c)] = load(t, bytes, offset(b, h, r, c));
    return out;
  }
  ~Array() { cudaFree(device); }
};

// Every |a - e| within tol * max(1, max |e|); reports the worst.
void expect_close(const std::vector<float>& actual, const std::vector<double>& expected, double tol,
                  const std::string& what) {
  double scale = 1.0, worst = 0.0;
  size_t at = 0;
  for (double e : expected) {
    if (std::isfinite(e)) scale = std::fmax(scale, std::fabs(e));
  }
  for (size_t i = 0; i < expected.size(); ++i) {
    const double e = expected[i], a = actual[i];
    if (std::isinf(e)) {
      check(a == e, what + ": element " + std::to_string(i) + " should be " + std::to_string(e));
      continue;
    }
    const double err = std::isfinite(a) ? std::fabs(a - e) : INFINITY;
    if (err > worst) {
      worst = err;
      at = i;
    }
  }
  check(worst <= tol * scale, what + ": max error " + std::to_string(worst) + " at " +
                                  std::to_string(at) + " > " + std::to_string(tol * scale));
}

void run_case(const Case& c) {
  std::printf("%s\n", c.name);
  std::mt19937 gen(1234);
  const int64_t B = c.batch, H = c.heads, G = c.kv_heads, N = c.n, M = c.m;
  Array q(B, H, N, c.d, c.heads_inside), k(B, G, M, c.d, false), v(B, G, M, c.dv, false);
  Array out(B, H, N, c.dv, c.heads_inside), dout(B, H, N, c.dv, c.heads_inside);
  Array dq(B, H, N, c.d, c.heads_inside), dk(B, G, M, c.d, false), dv(B, G, M, c.dv, false);
  q.fill(gen, c.type, c.range);
  k.fill(gen, c.type, c.range);
  v.fill(gen, c.type);
  dout.fill(gen, c.type);
  q.upload(c.type);
  k.upload(c.type);
  v.upload(c.type);
  dout.upload(c.type);
  out.allocate(c.type);
  dq.allocate(c.type);
  dk.allocate(c.type);
  dv.allocate(c.type);
  // (B, 1, 1, M) or (B, 1, N, M); mask_at(b, i, j) reads it.
  const int64_t mask_rows = c.mask == 2 ? N : 1;
  std::vector<float> mask_host(static_cast<size_t>(B * mask_rows * M), 0.0f);
  std::uniform_real_distribution<float> small(-0.5f, 0.5f);
  for (int64_t b = 0; b < B; ++b) {
    for (int64_t i = 0; i < mask_rows; ++i) {
      for (int64_t j = 0; j < M; ++j) {
        const bool hidden = c.mask == 1 ? j % 5 == 3 : ((b == 0 && j < 70) || i == 3);
        mask_host[static_cast<size_t>((b * mask_rows + i) * M + j)] =
            hidden ? -INFINITY : small(gen);
      }
    }
  }
  const auto mask_at = [&](int64_t b, int64_t i, int64_t j) {
    return mask_host[static_cast<size_t>((b * mask_rows + (mask_rows == 1 ? 0 : i)) * M + j)];
  };
  float* mask_device = nullptr;
  float* lse_device = nullptr;
  cuda_ok(cudaMalloc(&mask_device, mask_host.size() * 4), "cudaMalloc");
  cuda_ok(cudaMemcpy(mask_device, mask_host.data(), mask_host.size() * 4, cudaMemcpyHostToDevice),
          "mask");
  cuda_ok(cudaMalloc(&lse_device, static_cast<size_t>(B * H * N) * 4), "cudaMalloc");

  ck::Problem p;
  p.type = c.type;
  p.batch = B;
  p.heads = H;
  p.kv_heads = G;
  p.n = N;
  p.m = M;
  p.d = c.d;
  p.dv = c.dv;
  p.scale = static_cast<float>(1.0 / std::sqrt(static_cast<double>(c.d)));
  p.causal = c.causal;
  p.query_offset = c.query_offset;
  // (b, h, i, j) -> (b * mask_rows + i) * M + j, i only for the per-row mask
  if (c.mask != 0) p.mask = ck::Mask{mask_device, H, mask_rows * M, 0, mask_rows == 1 ? 0 : M, 1};
  p.q = q.device;
  p.k = k.device;
  p.v = v.device;
  p.q_strides = q.strides;
  p.k_strides = k.strides;
  p.v_strides = v.strides;

  // The reference, in double.
  std::vector<double> ref_out(out.values.size()), ref_lse(static_cast<size_t>(B * H * N));
  std::vector<double> ref_dq(dq.values.size(), 0.0), ref_dk(dk.values.size(), 0.0),
      ref_dv(dv.values.size(), 0.0);
  for (int64_t b = 0; b < B; ++b) {
    for (int64_t h = 0; h < H; ++h) {
      const int64_t kv = h / (H / G);
      for (int64_t i = 0; i < N; ++i) {
        std::vector<double> s(static_cast<size_t>(M), -INFINITY);
        double mx = -INFINITY;
        for (int64_t j = 0; j < M; ++j) {
          if (c.causal && j > i + c.query_offset) continue;
          double dot = 0;
          for (int64_t x = 0; x < c.d; ++x)
            dot += double(q.values[q.logical(b, h, i, x)]) * k.values[k.logical(b, kv, j, x)];
          s[j] = dot * p.scale + (c.mask != 0 ? mask_at(b, i, j) : 0.0);
          mx = std::fmax(mx, s[j]);
        }
        double sum = 0;
        for (int64_t j = 0; j < M; ++j) sum += std::isinf(s[j]) ? 0.0 : std::exp(s[j] - mx);
        ref_lse[static_cast<size_t>((b * H + h) * N + i)] =
            sum > 0 ? mx + std::log(sum) : -INFINITY;
        std::vector<double> prob(static_cast<size_t>(M), 0.0);
        for (int64_t j = 0; j < M; ++j)
          prob[j] = sum > 0 && !std::isinf(s[j]) ? std::exp(s[j] - mx) / sum : 0.0;
        double drow = 0;
        for (int64_t x = 0; x < c.dv; ++x) {
          double o = 0;
          for (int64_t j = 0; j < M; ++j) o += prob[j] * v.values[v.logical(b, kv, j, x)];
          ref_out[out.logical(b, h, i, x)] = o;
          drow += o * dout.values[dout.logical(b, h, i, x)];
        }
        for (int64_t j = 0; j < M; ++j) {
          if (prob[j] == 0.0) continue;
          double dp = 0;
          for (int64_t x = 0; x < c.dv; ++x)
            dp += double(dout.values[dout.logical(b, h, i, x)]) * v.values[v.logical(b, kv, j, x)];
          const double ds = prob[j] * (dp - drow) * p.scale;
          for (int64_t x = 0; x < c.d; ++x) {
            ref_dq[dq.logical(b, h, i, x)] += ds * k.values[k.logical(b, kv, j, x)];
            ref_dk[dk.logical(b, kv, j, x)] += ds * q.values[q.logical(b, h, i, x)];
          }
          for (int64_t x = 0; x < c.dv; ++x)
            ref_dv[dv.logical(b, kv, j, x)] += prob[j] * dout.values[dout.logical(b, h, i, x)];
        }
      }
    }
  }

  const bool wide = c.type == ck::ElementType::float32;
  const double out_tol = wide ? 2e-5 : (c.type == ck::ElementType::bfloat16 ? 1.0 / 128 : 2e-3);
  const double grad_tol = wide ? 5e-5 : (c.type == ck::ElementType::bfloat16 ? 1.0 / 64 : 4e-3);
  std::string err = ck::forward(p, {out.device, out.strides, lse_device}, nullptr);
  check(err.empty(), std::string(c.name) + ": forward: " + err);
  cuda_ok(cudaDeviceSynchronize(), "forward");
  expect_close(out.download(c.type), ref_out, out_tol, std::string(c.name) + " out");
  std::vector<float> lse(ref_lse.size());
  cuda_ok(cudaMemcpy(lse.data(), lse_device, lse.size() * 4, cudaMemcpyDeviceToHost), "lse");
  expect_close(lse, ref_lse, 1e-5, std::string(c.name) + " lse");

  // A workspace full of garbage, and the backward run twice: each call must clear the dq
  // accumulators itself.
  void* workspace = nullptr;
  const size_t workspace_bytes = static_cast<size_t>(ck::backward_workspace_bytes(p));
  cuda_ok(cudaMalloc(&workspace, workspace_bytes), "cudaMalloc");
  cuda_ok(cudaMemset(workspace, 0x7F, workspace_bytes), "cudaMemset");
  ck::BackwardTensors t;
  t.out = out.device;
  t.out_strides = out.strides;
  t.lse = lse_device;
  t.dout = dout.device;
  t.dout_strides = dout.strides;
  t.dq = dq.device;
  t.dq_strides = dq.strides;
  t.dk = dk.device;
  t.dk_strides = dk.strides;
  t.dv = dv.device;
  t.dv_strides = dv.strides;
  if (c.only_dv) t.dq = t.dk = nullptr;
  for (int pass = 0; pass < 2; ++pass) {
    err = ck::backward(p, t, workspace, nullptr);
    check(err.empty(), std::string(c.name) + ": backward: " + err);
  }
  cuda_ok(cudaDeviceSynchronize(), "backward");
  // The backward starts from the kernel's own (rounded) out: compare with that tolerance.
  if (!c.only_dv) {
    expect_close(dq.download(c.type), ref_dq, grad_tol, std::string(c.name) + " dq");
    expect_close(dk.download(c.type), ref_dk, grad_tol, std::string(c.name) + " dk");
  }
  expect_close(dv.download(c.type), ref_dv, grad_tol, std::string(c.name) + " dv");
  cudaFree(workspace);
  cudaFree(mask_device);
  cudaFree(lse_device);
}

}  // namespace

int main() {
  int devices = 0;
  if (cudaGetDeviceCount(&devices) != cudaSuccess || devices == 0) {
    std::printf("no CUDA device\n");
    return 2;
  }
  using T = ck::ElementType;
  const Case cases[] = {
      {"bf16 d=64 causal GQA 8/2", T::bfloat16, 2, 8, 2, 130, 130, 64, 64, true, 0, 0, false},
      {"bf16 d=128 cross, key padding, strided q", T::bfloat16, 2, 4, 4, 70, 200, 128, 128, false,
       0, 1, true},
      {"bf16 d=64 causal offset (decode-like)", T::bfloat16, 1, 4, 1, 5, 300, 64, 64, true, 295, 0,
       false},
      {"bf16 d=64 per-row mask: hidden first tiles, a hidden row, inputs x3", T::bfloat16, 2, 4, 2,
       100, 150, 64, 64, false, 0, 2, false, 3.0f},
      {"f16 d=128 causal GQA 4/2, key padding", T::float16, 2, 4, 2, 100, 100, 128, 128, true, 0, 1,
       false},
      {"f32 d=64 causal GQA 8/2, strided", T::float32, 2, 8, 2, 97, 97, 64, 64, true, 0, 0, true},
      {"f32 d=128 per-row mask, dv only", T::float32, 1, 2, 2, 65, 130, 128, 128, false, 0, 2,
       false, 1.0f, true},
      {"f32 d=40 dv=24 (SIMT)", T::float32, 2, 2, 1, 50, 70, 40, 24, true, 20, 0, false},
      {"bf16 d=40 (SIMT), per-row mask", T::bfloat16, 1, 2, 2, 33, 100, 40, 40, true, 70, 2, false},
  };

  for (const Case& c : cases) run_case(c);
  std::printf(failures == 0 ? "all CUDA checks passed\n" : "%d CUDA checks failed\n", failures);
  return failures == 0 ? 0 : 1;
}
