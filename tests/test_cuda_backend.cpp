// Backend::cuda through the public API (llm_utils/cuda.hpp). On a machine with a CUDA device it
// must equal the CPU reference (float32 and bfloat16, forward and backward, a module); without
// one (or in a build without CUDA) every entry point must refuse with an error that says why,
// before any module state changes. Which of the two a run checks is printed, and the device
// branch cannot pass on a machine without a device: it is not a skip counted as a pass.

#include <gtest/gtest.h>

#include <string>

#include "kernel_test_util.hpp"

namespace llm_utils {
namespace {

using testing::kernel_close;

TEST(CudaBackend, NamesParse) {
  EXPECT_EQ(parse_backend("cuda"), Backend::cuda);
  EXPECT_STREQ(backend_name(Backend::cuda), "cuda");
  EXPECT_EQ(choose_backend(Backend::cuda, 1, 1, 1), Backend::cuda);
  EXPECT_NE(testing::argument_error_of([] { parse_backend("gpu"); }).find("cuda"),
            std::string::npos);
}

TEST(CudaBackend, VariantsAreRefusedBeforeAnythingElse) {
  Generator g(1);
  const Tensor q = g.uniform({2, 8, 16}, -1, 1);
  Tensor out({2, 8, 16}), lse({2, 8});
  AttentionOptions o;
  o.backend = Backend::cuda;
  o.window_left = 3;
  EXPECT_NE(testing::argument_error_of([&] { attention_forward(q, q, q, out, lse, o); })
                .find("window_left, softcap, alibi_slopes, sinks and packed sequences run on the "
                      "CPU"),
            std::string::npos);
  const Tensor wide = g.uniform({2, 8, 300}, -1, 1);
  Tensor wide_out({2, 8, 300});
  EXPECT_NE(testing::argument_error_of([&] {
              attention_forward(wide, wide, wide, wide_out, lse, {.backend = Backend::cuda});
            }).find("head dims up to 256, got d=300"),
            std::string::npos);
  manual_seed(6);
  MultiHeadAttention mha(8, 600, 4, 0.0, 2);  // head_dim 300
  mha.set_backend(Backend::cuda);
  EXPECT_NE(testing::argument_error_of([&] {
              mha.forward(g.uniform({4, 8}, -1, 1));
            }).find("head dims up to 256"),
            std::string::npos);
  const Tensor packed = g.uniform({8, 2, 16}, -1, 1);
  Tensor packed_out({8, 2, 16}), packed_lse({2, 8});
  const std::vector<int64_t> cu = {0, 8};
  EXPECT_NE(testing::argument_error_of([&] {
              attention_forward_varlen(packed, packed, packed, cu, cu, packed_out, packed_lse,
                                       {.backend = Backend::cuda});
            }).find("Backend::cuda does not take packed or paged sequences"),
            std::string::npos);
}

// Forward and backward on cuda against the reference, float32 and bfloat16.
void expect_cuda_matches_reference() {
  Generator g(2);
  const int64_t b = 2, h = 4, kv = 2, n = 130, m = 130, d = 64;
  const Tensor q = g.uniform({b, h, n, d}, -1, 1), k = g.uniform({b, kv, m, d}, -1, 1);
  const Tensor v = g.uniform({b, kv, m, d}, -1, 1), dout = g.uniform({b, h, n, d}, -1, 1);
  const auto run = [&](Backend backend, Tensor& out, Tensor& lse, Tensor& dq, Tensor& dk,
                       Tensor& dv) {
    const AttentionOptions o{.causal = true, .backend = backend};
    attention_forward(q, k, v, out, lse, o);
    attention_backward(q, k, v, out, lse, dout, dq, dk, dv, o);
  };
  Tensor out({b, h, n, d}), lse({b, h, n}), dq(q.shape()), dk(k.shape()), dv(v.shape());
  Tensor out_c({b, h, n, d}), lse_c({b, h, n}), dq_c(q.shape()), dk_c(k.shape()), dv_c(v.shape());
  run(Backend::reference, out, lse, dq, dk, dv);
  run(Backend::cuda, out_c, lse_c, dq_c, dk_c, dv_c);
  EXPECT_TRUE(kernel_close(out_c, out)) << "out";
  EXPECT_TRUE(kernel_close(lse_c, lse)) << "lse";
  EXPECT_TRUE(testing::all_close(dq_c, dq, 5e-5, 5e-5 * testing::max_abs(dq))) << "dq";
  EXPECT_TRUE(testing::all_close(dk_c, dk, 5e-5, 5e-5 * testing::max_abs(dk))) << "dk";
  EXPECT_TRUE(testing::all_close(dv_c, dv, 5e-5, 5e-5 * testing::max_abs(dv))) << "dv";
  // bfloat16: the tensor-core forward against the bfloat16 reference (docs/numerics.md).
  const BFloat16Tensor bq = BFloat16Tensor::from_float(q), bk = BFloat16Tensor::from_float(k),
                       bv = BFloat16Tensor::from_float(v);
  BFloat16Tensor bout({b, h, n, d}), bout_c({b, h, n, d});
  attention_forward(bq, bk, bv, bout, lse, {.causal = true, .backend = Backend::reference});
  attention_forward(bq, bk, bv, bout_c, lse_c, {.causal = true, .backend = Backend::cuda});
  const Tensor want = bout.to_float();
  EXPECT_TRUE(testing::all_close(bout_c.to_float(), want, 0.0, testing::max_abs(want) / 128))
      << "bfloat16 out";
  // A module on cuda equals itself on the CPU.
  manual_seed(3);
  MultiHeadAttention mha(32, 64, 130, 0.0, 4);
  const Tensor x = g.uniform({2, 130, 32}, -1, 1), dy = g.uniform({2, 130, 64}, -1, 1);
  const Tensor y = mha.forward(x), dx = mha.backward(dy);
  mha.set_backend(Backend::cuda);
  mha.zero_grad();
  EXPECT_TRUE(testing::all_close(mha.forward(x), y, 1e-5, 1e-5)) << "module forward";
  EXPECT_TRUE(testing::all_close(mha.backward(dy), dx, 1e-4, 1e-5)) << "module dx";
}

TEST(CudaBackend, RunsOnTheDeviceOrSaysWhyNot) {
  if (cuda_device_count() > 0) {
    std::printf("CUDA device: %s\n", cuda_device_description().c_str());
    expect_cuda_matches_reference();
    return;
  }
  const std::string why = cuda_built() ? "no CUDA device" : "this build has no CUDA";
  std::printf("no CUDA device here (%s): checking the errors\n", why.c_str());
  Generator g(4);
  const Tensor q = g.uniform({8, 16}, -1, 1);
  Tensor out({8, 16}), lse({8});
  EXPECT_NE(testing::argument_error_of([&] {
              attention_forward(q, q, q, out, lse, {.backend = Backend::cuda});
            }).find(why),
            std::string::npos);
  // A module refuses before its state changes: its last forward's backward still works.
  manual_seed(5);
  MultiHeadAttention mha(16, 16, 8, 0.0, 2);
  const Tensor x = g.uniform({8, 16}, -1, 1);
  const Tensor y = mha.forward(x);
  mha.set_backend(Backend::cuda);
  EXPECT_NE(testing::argument_error_of([&] {
              mha.forward(g.uniform({5, 16}, -1, 1));
            }).find(why),
            std::string::npos);
  EXPECT_EQ(mha.backward(Tensor::full({8, 16}, 1.0f)).shape(), Shape({8, 16}));
  EXPECT_THROW(cuda_device_description(0), ArgumentError);
}

}  // namespace
}  // namespace llm_utils
