// The CUDA kernels (src/cuda/flash_cuda.hpp) as a PyTorch extension, for bench/cuda/
// compare_sdpa.py on a GPU: built there by torch.utils.cpp_extension.load from this file and
// src/cuda/*.cu, so that the comparison with PyTorch's scaled_dot_product_attention runs on the
// same tensors, the same stream and the same machine. Not part of the library's build.

#include <ATen/cuda/CUDAContext.h>
#include <c10/cuda/CUDAGuard.h>
#include <torch/extension.h>

#include <initializer_list>
#include <string>
#include <tuple>

#include "cuda/flash_cuda.hpp"

namespace ck = llm_utils::cuda_kernels;

namespace {

ck::ElementType element_type(const torch::Tensor& t) {
  if (t.scalar_type() == torch::kFloat32) return ck::ElementType::float32;
  if (t.scalar_type() == torch::kBFloat16) return ck::ElementType::bfloat16;
  if (t.scalar_type() == torch::kFloat16) return ck::ElementType::float16;
  TORCH_CHECK(false, "llm_utils CUDA kernels: float32, bfloat16 or float16, got ", t.scalar_type());
}

// (B, heads, rows, cols) with a contiguous last dimension.
ck::Strides strides_of(const torch::Tensor& t, const char* name) {
  TORCH_CHECK(t.is_cuda() && t.dim() == 4, name, " must be a 4-D CUDA tensor");
  TORCH_CHECK(t.size(3) <= 1 || t.stride(3) == 1, name, " must have a contiguous last dimension");
  return {t.stride(0), t.stride(1), t.stride(2)};
}

// Every tensor of a call on q's device, in q's dtype (lse: float32) and the expected shape.
void expect(const torch::Tensor& t, const torch::Tensor& q, const char* name,
            std::initializer_list<int64_t> shape, bool float32 = false) {
  TORCH_CHECK(t.device() == q.device(), name, " must be on ", q.device(), ", got ", t.device());
  TORCH_CHECK(t.scalar_type() == (float32 ? torch::kFloat32 : q.scalar_type()), name, " has dtype ",
              t.scalar_type());
  TORCH_CHECK(t.sizes() == torch::IntArrayRef(shape), name, " must have shape ",
              torch::IntArrayRef(shape), ", got ", t.sizes());
}

ck::Problem problem_of(const torch::Tensor& q, const torch::Tensor& k, const torch::Tensor& v,
                       bool causal, double scale) {
  ck::Problem p;
  p.type = element_type(q);
  TORCH_CHECK(q.dim() == 4 && k.dim() == 4 && v.dim() == 4, "q, k, v must be (B, heads, N, d)");
  TORCH_CHECK(k.size(1) > 0 && q.size(1) % k.size(1) == 0, "k's heads ", k.size(1),
              " must divide q's ", q.size(1));
  expect(k, q, "k", {q.size(0), k.size(1), k.size(2), q.size(3)});
  expect(v, q, "v", {q.size(0), k.size(1), k.size(2), v.size(3)});
  p.batch = q.size(0);
  p.heads = q.size(1);
  p.kv_heads = k.size(1);
  p.n = q.size(2);
  p.m = k.size(2);
  p.d = q.size(3);
  p.dv = v.size(3);
  p.scale = static_cast<float>(scale);
  p.causal = causal;
  p.q = q.data_ptr();
  p.k = k.data_ptr();
  p.v = v.data_ptr();
  p.q_strides = strides_of(q, "q");
  p.k_strides = strides_of(k, "k");
  p.v_strides = strides_of(v, "v");
  return p;
}

void check(const std::string& error) {
  TORCH_CHECK(error.empty(), "llm_utils CUDA kernels: ", error);
}

std::tuple<torch::Tensor, torch::Tensor> forward(torch::Tensor q, torch::Tensor k, torch::Tensor v,
                                                 bool causal, double scale) {
  const c10::cuda::CUDAGuard device(q.device());  // q's device and its current stream
  const ck::Problem p = problem_of(q, k, v, causal, scale);
  torch::Tensor out = torch::empty({p.batch, p.heads, p.n, p.dv}, q.options());
  torch::Tensor lse = torch::empty({p.batch, p.heads, p.n}, q.options().dtype(torch::kFloat32));
  check(ck::forward(p, {out.data_ptr(), strides_of(out, "out"), lse.data_ptr<float>()},
                    at::cuda::getCurrentCUDAStream().stream()));
  return {out, lse};
}

std::tuple<torch::Tensor, torch::Tensor, torch::Tensor> backward(torch::Tensor q, torch::Tensor k,
                                                                 torch::Tensor v, torch::Tensor out,
                                                                 torch::Tensor lse,
                                                                 torch::Tensor dout, bool causal,
                                                                 double scale) {
  const c10::cuda::CUDAGuard device(q.device());
  const ck::Problem p = problem_of(q, k, v, causal, scale);
  expect(out, q, "out", {p.batch, p.heads, p.n, p.dv});
  expect(dout, q, "dout", {p.batch, p.heads, p.n, p.dv});
  expect(lse, q, "lse", {p.batch, p.heads, p.n}, true);
  torch::Tensor dq = torch::empty_like(q), dk = torch::empty_like(k), dv = torch::empty_like(v);
  torch::Tensor workspace =
      torch::empty({ck::backward_workspace_bytes(p)}, q.options().dtype(torch::kUInt8));
  lse = lse.contiguous();
  ck::BackwardTensors t;
  t.out = out.data_ptr();
  t.out_strides = strides_of(out, "out");
  t.lse = lse.data_ptr<float>();
  t.dout = dout.data_ptr();
  t.dout_strides = strides_of(dout, "dout");
  t.dq = dq.data_ptr();
  t.dq_strides = strides_of(dq, "dq");
  t.dk = dk.data_ptr();
  t.dk_strides = strides_of(dk, "dk");
  t.dv = dv.data_ptr();
  t.dv_strides = strides_of(dv, "dv");
  check(ck::backward(p, t, workspace.data_ptr(), at::cuda::getCurrentCUDAStream().stream()));
  return {dq, dk, dv};
}

}  // namespace

PYBIND11_MODULE(TORCH_EXTENSION_NAME, m) {
  m.def("forward", &forward, "out, lse = forward(q, k, v, causal, scale) on (B, H, N, d)");
  m.def("backward", &backward, "dq, dk, dv = backward(q, k, v, out, lse, dout, causal, scale)");
}
