// Backend::cuda (attention_cuda.hpp, llm_utils/cuda.hpp): the host side. Each call packs the
// problem's host tensors (strided views allowed) into contiguous device buffers, runs the
// kernels of src/cuda (flash_cuda.hpp) on the default stream, waits, and unpacks the results
// into the caller's views. In a build without CUDA every entry point says so.

#include "kernels/attention_cuda.hpp"

#include <algorithm>
#include <cstdio>
#include <string>
#include <type_traits>
#include <vector>

#include "llm_utils/cuda.hpp"
#include "llm_utils/error.hpp"

#ifndef LLM_UTILS_HAVE_CUDA
#define LLM_UTILS_HAVE_CUDA 0
#endif
#if LLM_UTILS_HAVE_CUDA
#include <cuda_runtime_api.h>

#include "cuda/flash_cuda.hpp"
#endif

namespace llm_utils {
namespace detail {
namespace {

// The largest head dim the CUDA kernels take.
constexpr int64_t kCudaMaxHeadDim = 256;

// What the CUDA kernels compute: scale, causal offset, additive mask, grouped heads, head dims
// up to 256.
void check_supported(const AttentionShape& p) {
  if (p.window_left >= 0 || p.softcap != 0.0f || p.alibi_slopes != nullptr || p.sinks != nullptr ||
      p.seq_starts_q != nullptr) {
    throw ArgumentError(
        "Backend::cuda takes the causal mask, additive masks and grouped-query heads; "
        "window_left, softcap, alibi_slopes, sinks and packed sequences run on the CPU "
        "backends (reference, flash)");
  }
  if (p.d > kCudaMaxHeadDim || p.dv > kCudaMaxHeadDim) {
    throw ArgumentError("Backend::cuda takes head dims up to 256, got d=" + std::to_string(p.d) +
                        ", dv=" + std::to_string(p.dv));
  }
}

#if LLM_UTILS_HAVE_CUDA

namespace ck = cuda_kernels;

void cuda_check(cudaError_t e, const std::string& what) {
  if (e != cudaSuccess) throw Error("Backend::cuda: " + what + ": " + cudaGetErrorString(e));
}

void require_device() {
  if (cuda_device_count() == 0) {
    throw ArgumentError("Backend::cuda: no CUDA device is available (the driver reports none)");
  }
}

// Device memory, freed with its owner.
class DeviceBuffer {
 public:
  DeviceBuffer() = default;
  explicit DeviceBuffer(size_t bytes) {
    if (bytes > 0)
      cuda_check(cudaMalloc(&ptr_, bytes), "cudaMalloc of " + std::to_string(bytes) + " bytes");
  }
  DeviceBuffer(const DeviceBuffer&) = delete;
  DeviceBuffer& operator=(const DeviceBuffer&) = delete;
  DeviceBuffer(DeviceBuffer&& other) noexcept : ptr_(other.ptr_) { other.ptr_ = nullptr; }
  DeviceBuffer& operator=(DeviceBuffer&& other) noexcept {
    std::swap(ptr_, other.ptr_);
    return *this;
  }
  ~DeviceBuffer() {
    if (ptr_ != nullptr) cudaFree(ptr_);
  }
  void* get() const { return ptr_; }

 private:
  void* ptr_ = nullptr;
};

ck::Strides contiguous(int64_t heads, int64_t rows, int64_t cols) {
  return {heads * rows * cols, rows * cols, cols};
}

// A (batch, heads, rows, cols) host array, rows contiguous, packed into a new device buffer.
template <typename T>
DeviceBuffer upload(const Strided<const T>& a, int64_t batch, int64_t heads, int64_t rows,
                    int64_t cols) {
  std::vector<T> host(static_cast<size_t>(batch * heads * rows * cols));
  for (int64_t b = 0; b < batch; ++b) {
    for (int64_t h = 0; h < heads; ++h) {
      for (int64_t r = 0; r < rows; ++r) {
        const T* src = a.row(b, h, r);
        std::copy(src, src + cols, host.data() + ((b * heads + h) * rows + r) * cols);
      }
    }
  }
  DeviceBuffer d(host.size() * sizeof(T));
  if (!host.empty()) {
    cuda_check(cudaMemcpy(d.get(), host.data(), host.size() * sizeof(T), cudaMemcpyHostToDevice),
               "copy to the device");
  }
  return d;
}

// The contiguous device array back into the host view.
template <typename T>
void download(const DeviceBuffer& d, const Strided<T>& a, int64_t batch, int64_t heads,
              int64_t rows, int64_t cols) {
  std::vector<T> host(static_cast<size_t>(batch * heads * rows * cols));
  if (host.empty()) return;
  cuda_check(cudaMemcpy(host.data(), d.get(), host.size() * sizeof(T), cudaMemcpyDeviceToHost),
             "copy from the device");
  for (int64_t b = 0; b < batch; ++b) {
    for (int64_t h = 0; h < heads; ++h) {
      for (int64_t r = 0; r < rows; ++r) {
        const T* src = host.data() + ((b * heads + h) * rows + r) * cols;
        std::copy(src, src + cols, a.row(b, h, r));
      }
    }
  }
}

// The additive mask on the device: the span of host memory its strides reach (negative ones
// too, from a flipped view), copied whole, read through the same strides there.
struct DeviceMask {
  DeviceBuffer buffer;
  ck::Mask mask;
};
DeviceMask upload_mask(const AttentionShape& p) {
  DeviceMask out;
  if (p.mask == nullptr || p.no_queries() || p.m == 0) return out;
  // The lowest and highest element offsets any (g, i, j) reads, relative to p.mask.
  int64_t lo = 0, hi = 0;
  const auto reach = [&](int64_t stride, int64_t extent) {
    lo += std::min<int64_t>(0, stride * (extent - 1));
    hi += std::max<int64_t>(0, stride * (extent - 1));
  };
  reach(p.mask_stride_outer, (p.query_heads() - 1) / p.mask_heads + 1);
  reach(p.mask_stride_head, std::min(p.mask_heads, p.query_heads()));
  reach(p.mask_stride_row, p.n);
  reach(p.mask_stride_col, p.m);
  const size_t count = static_cast<size_t>(hi - lo + 1);
  out.buffer = DeviceBuffer(count * sizeof(float));
  cuda_check(
      cudaMemcpy(out.buffer.get(), p.mask + lo, count * sizeof(float), cudaMemcpyHostToDevice),
      "copy to the device");
  out.mask = {static_cast<const float*>(out.buffer.get()) - lo,
              p.mask_heads,
              p.mask_stride_outer,
              p.mask_stride_head,
              p.mask_stride_row,
              p.mask_stride_col};
  return out;
}

template <typename T>
ck::ElementType element_type() {
  return std::is_same_v<T, float> ? ck::ElementType::float32 : ck::ElementType::bfloat16;
}

// The device problem over contiguous copies of q, k, v.
template <typename T>
ck::Problem device_problem(const BasicAttentionProblem<T>& p, const DeviceBuffer& q,
                           const DeviceBuffer& k, const DeviceBuffer& v, const DeviceMask& mask) {
  ck::Problem cp;
  cp.type = element_type<T>();
  cp.batch = p.batch;
  cp.heads = p.heads;
  cp.kv_heads = p.kv_heads;
  cp.n = p.n;
  cp.m = p.m;
  cp.d = p.d;
  cp.dv = p.dv;
  cp.scale = p.scale;
  cp.causal = p.causal;
  cp.query_offset = p.query_offset;
  cp.mask = mask.mask;
  cp.q = q.get();
  cp.k = k.get();
  cp.v = v.get();
  cp.q_strides = contiguous(p.heads, p.n, p.d);
  cp.k_strides = contiguous(p.kv_heads, p.m, p.d);
  cp.v_strides = contiguous(p.kv_heads, p.m, p.dv);
  return cp;
}

void kernel_check(const std::string& error) {
  if (!error.empty()) throw Error("Backend::cuda: " + error);
  cuda_check(cudaDeviceSynchronize(), "the kernels");
}

template <typename T>
void forward_on_device(const BasicAttentionProblem<T>& p, const BasicForwardOutputs<T>& o) {
  check_supported(p);
  require_device();
  if (p.no_queries()) return;
  const DeviceBuffer q = upload(p.q, p.batch, p.heads, p.n, p.d);
  const DeviceBuffer k = upload(p.k, p.batch, p.kv_heads, p.m, p.d);
  const DeviceBuffer v = upload(p.v, p.batch, p.kv_heads, p.m, p.dv);
  const DeviceMask mask = upload_mask(p);
  DeviceBuffer out(static_cast<size_t>(p.query_heads() * p.n * p.dv) * sizeof(T));
  DeviceBuffer lse(static_cast<size_t>(p.query_heads() * p.n) * sizeof(float));
  kernel_check(ck::forward(
      device_problem(p, q, k, v, mask),
      {out.get(), contiguous(p.heads, p.n, p.dv), static_cast<float*>(lse.get())}, nullptr));
  download(out, o.out, p.batch, p.heads, p.n, p.dv);
  download(lse, o.lse, p.batch, p.heads, p.n, 1);  // lse: one element per "row"
}

template <typename T>
void backward_on_device(const BasicAttentionProblem<T>& p, const BasicBackwardTensors<T>& t) {
  check_supported(p);
  require_device();
  const DeviceBuffer q = upload(p.q, p.batch, p.heads, p.n, p.d);
  const DeviceBuffer k = upload(p.k, p.batch, p.kv_heads, p.m, p.d);
  const DeviceBuffer v = upload(p.v, p.batch, p.kv_heads, p.m, p.dv);
  const DeviceBuffer out = upload(t.out, p.batch, p.heads, p.n, p.dv);
  const DeviceBuffer dout = upload(t.dout, p.batch, p.heads, p.n, p.dv);
  const DeviceBuffer lse = upload(t.lse, p.batch, p.heads, p.n, 1);  // one element per "row"
  const DeviceMask mask = upload_mask(p);
  DeviceBuffer dq(
      t.dq.data != nullptr ? static_cast<size_t>(p.query_heads() * p.n * p.d) * sizeof(T) : 0);
  DeviceBuffer dk(t.dk.data != nullptr ? static_cast<size_t>(p.kv_count() * p.m * p.d) * sizeof(T)
                                       : 0);
  DeviceBuffer dv(static_cast<size_t>(p.kv_count() * p.m * p.dv) * sizeof(T));
  const ck::Problem cp = device_problem(p, q, k, v, mask);
  DeviceBuffer workspace(static_cast<size_t>(ck::backward_workspace_bytes(cp)));
  ck::BackwardTensors ct;
  ct.out = out.get();
  ct.out_strides = contiguous(p.heads, p.n, p.dv);
  ct.lse = static_cast<const float*>(lse.get());
  ct.dout = dout.get();
  ct.dout_strides = ct.out_strides;
  ct.dq = dq.get();
  ct.dq_strides = contiguous(p.heads, p.n, p.d);
  ct.dk = dk.get();
  ct.dk_strides = contiguous(p.kv_heads, p.m, p.d);
  ct.dv = dv.get();
  ct.dv_strides = contiguous(p.kv_heads, p.m, p.dv);
  kernel_check(ck::backward(cp, ct, workspace.get(), nullptr));
  if (t.dq.data != nullptr) download(dq, t.dq, p.batch, p.heads, p.n, p.d);
  if (t.dk.data != nullptr) download(dk, t.dk, p.batch, p.kv_heads, p.m, p.d);
  download(dv, t.dv, p.batch, p.kv_heads, p.m, p.dv);
}

#else  // no CUDA in this build

[[noreturn]] void no_cuda() {
  throw ArgumentError(
      "Backend::cuda: this build has no CUDA (CMake found no CUDA compiler; install the CUDA "
      "toolkit's nvcc and reconfigure)");
}

template <typename T>
void forward_on_device(const BasicAttentionProblem<T>& p, const BasicForwardOutputs<T>&) {
  check_supported(p);
  no_cuda();
}
template <typename T>
void backward_on_device(const BasicAttentionProblem<T>& p, const BasicBackwardTensors<T>&) {
  check_supported(p);
  no_cuda();
}

#endif

}  // namespace

void cuda_attention_forward(const AttentionProblem& p, const ForwardOutputs& o) {
  forward_on_device(p, o);
}
void cuda_attention_forward(const Bf16AttentionProblem& p, const BasicForwardOutputs<bfloat16>& o) {
  forward_on_device(p, o);
}
void cuda_attention_backward(const AttentionProblem& p, const BackwardTensors& t) {
  backward_on_device(p, t);
}
void cuda_attention_backward(const Bf16AttentionProblem& p,
                             const BasicBackwardTensors<bfloat16>& t) {
  backward_on_device(p, t);
}

void cuda_check_available(const std::string& where, bool uses_variants, int64_t head_dim) {
  AttentionShape call;
  call.window_left = uses_variants ? 0 : -1;
  call.d = call.dv = head_dim;
  try {
    check_supported(call);
  } catch (const ArgumentError& e) {
    throw ArgumentError(where + ": " + e.what());
  }
#if LLM_UTILS_HAVE_CUDA
  try {
    require_device();
  } catch (const ArgumentError& e) {
    throw ArgumentError(where + ": " + e.what());
  }
#else
  try {
    no_cuda();
  } catch (const ArgumentError& e) {
    throw ArgumentError(where + ": " + e.what());
  }
#endif
}

void refuse_cuda(const char* fn, Backend backend) {
  if (backend == Backend::cuda) {
    throw ArgumentError(std::string(fn) +
                        ": Backend::cuda does not take packed or paged sequences; use flash or "
                        "reference");
  }
}

}  // namespace detail

bool cuda_built() {
  return LLM_UTILS_HAVE_CUDA != 0;
}

int cuda_device_count() {
#if LLM_UTILS_HAVE_CUDA
  // Asked once: every Backend::cuda call checks it, and the devices a process sees do not change.
  static const int count = [] {
    int n = 0;
    if (cudaGetDeviceCount(&n) != cudaSuccess) {
      cudaGetLastError();  // clear the error: no driver or no device is not a failure here
      return 0;
    }
    return n;
  }();
  return count;
#else
  return 0;
#endif
}

std::string cuda_device_description(int device) {
  if (device < 0 || device >= cuda_device_count()) {
    throw ArgumentError("cuda_device_description: no CUDA device " + std::to_string(device) +
                        " (this process sees " + std::to_string(cuda_device_count()) + ")");
  }
#if LLM_UTILS_HAVE_CUDA
  cudaDeviceProp prop{};
  detail::cuda_check(cudaGetDeviceProperties(&prop, device), "cudaGetDeviceProperties");
  char memory[32];
  std::snprintf(memory, sizeof memory, "%.1f GiB",
                static_cast<double>(prop.totalGlobalMem) / (1024.0 * 1024.0 * 1024.0));
  return std::string(prop.name) + " (compute capability " + std::to_string(prop.major) + "." +
         std::to_string(prop.minor) + ", " + memory + ")";
#else
  return {};
#endif
}

}  // namespace llm_utils
