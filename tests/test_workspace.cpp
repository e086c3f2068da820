// The kernels' buffer cache (src/cpu/workspace.hpp): blocks are reused by the thread that freed
// them, aligned, bounded, and freed on request; and the fused kernels' results do not depend
// on whether their buffers come from the cache (stale contents included).

#include <gtest/gtest.h>

#include <cmath>
#include <cstdint>
#include <cstring>
#include <thread>
#include <utility>
#include <vector>

#include "cpu/workspace.hpp"
#include "llm_utils/attention.hpp"
#include "llm_utils/bfloat16.hpp"
#include "llm_utils/random.hpp"
#include "llm_utils/runtime.hpp"
#include "llm_utils/tensor.hpp"

namespace llm_utils {
namespace {

constexpr std::size_t kMiB = std::size_t{1} << 20;

TEST(Workspace, ReusesAFreedBlockOfTheSameThread) {
  release_cached_memory();
  void* first = cpu::workspace_allocate(kMiB);
  cpu::workspace_deallocate(first);
  EXPECT_GE(cached_memory_bytes(), kMiB);
  void* second = cpu::workspace_allocate(kMiB - 100);
  EXPECT_EQ(second, first);
  EXPECT_EQ(cached_memory_bytes(), 0u);
  cpu::workspace_deallocate(second);
  release_cached_memory();
  EXPECT_EQ(cached_memory_bytes(), 0u);
}

TEST(Workspace, NeverHandsOutABlockSmallerThanTheRequest) {
  release_cached_memory();
  void* block = cpu::workspace_allocate(kMiB);  // capacity exactly 1 MiB (a multiple of 64)
  cpu::workspace_deallocate(block);
  const std::size_t cached = cached_memory_bytes();
  EXPECT_EQ(cached, kMiB);
  void* bigger = cpu::workspace_allocate(kMiB + 1);
  EXPECT_NE(bigger, block);
  std::memset(bigger, 0xCD, kMiB + 1);
  cpu::workspace_deallocate(bigger);
  // A block reused for a smaller request goes back with its own capacity.
  void* smaller = cpu::workspace_allocate(kMiB - 4096);
  EXPECT_EQ(smaller, block);
  const std::size_t before = cached_memory_bytes();
  cpu::workspace_deallocate(smaller);
  EXPECT_EQ(cached_memory_bytes(), before + kMiB);
  release_cached_memory();
}

TEST(Workspace, BlocksAre64ByteAlignedAndWritable) {
  for (std::size_t bytes : {std::size_t{1}, std::size_t{100}, kMiB + 3}) {
    auto* p = static_cast<unsigned char*>(cpu::workspace_allocate(bytes));
    EXPECT_EQ(reinterpret_cast<std::uintptr_t>(p) % 64, 0u) << bytes;
    std::memset(p, 0xAB, bytes);
    cpu::workspace_deallocate(p);
  }
  release_cached_memory();
}

TEST(Workspace, DoesNotHandOutABlockMoreThanTwiceTheRequest) {
  release_cached_memory();
  void* big = cpu::workspace_allocate(8 * kMiB);
  cpu::workspace_deallocate(big);
  void* small = cpu::workspace_allocate(kMiB);
  EXPECT_NE(small, big);
  EXPECT_GE(cached_memory_bytes(), 8 * kMiB);  // the big block is still cached
  cpu::workspace_deallocate(small);
  release_cached_memory();
}

TEST(Workspace, KeepsAtMostTheCapPerThread) {
  release_cached_memory();
  std::vector<void*> blocks;
  const std::size_t count = cpu::kMaxCachedBytes / (8 * kMiB) + 3;
  for (std::size_t i = 0; i < count; ++i) blocks.push_back(cpu::workspace_allocate(8 * kMiB));
  for (void* b : blocks) cpu::workspace_deallocate(b);
  EXPECT_LE(cached_memory_bytes(), cpu::kMaxCachedBytes);
  EXPECT_GE(cached_memory_bytes(), cpu::kMaxCachedBytes - 8 * kMiB - 64);
  release_cached_memory();
}

TEST(Workspace, SmallBlocksGoStraightBack) {
  release_cached_memory();
  cpu::workspace_deallocate(cpu::workspace_allocate(1000));
  EXPECT_EQ(cached_memory_bytes(), 0u);
}

TEST(Workspace, EachThreadHasItsOwnCache) {
  release_cached_memory();
  void* block = cpu::workspace_allocate(2 * kMiB);
  std::size_t cached_there = 0;
  // Freed on another thread: it goes to that thread's cache, which its exit frees.
  std::thread([&] {
    cpu::workspace_deallocate(block);
    cached_there = cached_memory_bytes();
  }).join();
  EXPECT_GE(cached_there, 2 * kMiB);
  EXPECT_EQ(cached_memory_bytes(), 0u);
}

TEST(Workspace, WorkspaceVectorValueInitialisesReusedStorage) {
  release_cached_memory();
  { cpu::WorkspaceVector<float> v(kMiB / sizeof(float), 7.0f); }
  cpu::WorkspaceVector<float> w(kMiB / sizeof(float));
  for (float x : w) ASSERT_EQ(x, 0.0f);
  release_cached_memory();
}

// The fused forward and backward give the same bits whether their buffers are fresh or reused
// blocks that still hold another problem's operands.
TEST(Workspace, KernelResultsDoNotDependOnTheCache) {
  // N x d floats above the cache's 64 KiB floor, so the packed operands and partials are cached.
  const int64_t n = 520, d = 48;
  auto make = [](int64_t rows, int64_t cols, float seed) {
    Tensor t({1, rows, cols});
    for (int64_t i = 0; i < t.numel(); ++i)
      t.data()[i] = std::sin(seed * static_cast<float>(i + 1));
    return t;
  };
  const Tensor q = make(n, d, 0.37f), k = make(n, d, 0.91f), v = make(n, d, 1.3f);
  const Tensor dout = make(n, d, 0.53f);
  AttentionOptions options;
  options.causal = true;
  options.backend = Backend::flash;
  auto run = [&](Tensor& out, Tensor& dq, Tensor& dk, Tensor& dv) {
    Tensor lse({1, n});
    attention_forward(q, k, v, out, lse, options);
    attention_backward(q, k, v, out, lse, dout, dq, dk, dv, options);
  };
  release_cached_memory();
  Tensor out1({1, n, d}), dq1({1, n, d}), dk1({1, n, d}), dv1({1, n, d});
  run(out1, dq1, dk1, dv1);
  ASSERT_GT(cached_memory_bytes(), 0u);  // the second run below reuses blocks
  // Fill the cache with blocks of garbage of the sizes the kernels ask for.
  const Tensor q2 = make(n, d, 5.0f), k2 = make(n, d, -3.0f), v2 = make(n, d, 2.0f);
  {
    Tensor out({1, n, d}), lse({1, n}), dq({1, n, d}), dk({1, n, d}), dv({1, n, d});
    attention_forward(q2, k2, v2, out, lse, options);
    attention_backward(q2, k2, v2, out, lse, dout, dq, dk, dv, options);
  }
  const std::size_t cached_after_one_call = cached_memory_bytes();
  Tensor out2({1, n, d}), dq2({1, n, d}), dk2({1, n, d}), dv2({1, n, d});
  run(out2, dq2, dk2, dv2);
  // The second call took its blocks from the cache: had it allocated new ones, their return
  // would have grown it.
  EXPECT_EQ(cached_memory_bytes(), cached_after_one_call);
  for (auto [a, b] : {std::pair{&out1, &out2}, {&dq1, &dq2}, {&dk1, &dk2}, {&dv1, &dv2}}) {
    ASSERT_EQ(std::memcmp(a->data(), b->data(), sizeof(float) * static_cast<size_t>(a->numel())),
              0);
  }
  release_cached_memory();
}

// The key split's per-chunk parts (few queries, many keys) and the bfloat16 packed operands
// (pairs, with odd rows padded) from the cache: the same bits as from fresh blocks.
TEST(Workspace, SplitAndBfloat16KernelsDoNotDependOnTheCache) {
  // Two query blocks (the second of one row) against 64 key blocks: split 8 ways, K^T built whole.
  const int64_t n = 65, m = 4095, d = 128;
  Generator g(5);
  const Tensor q = g.uniform({1, n, d}, -1.0, 1.0), k = g.uniform({1, m, d}, -1.0, 1.0);
  const Tensor v = g.uniform({1, m, d}, -1.0, 1.0);
  const BFloat16Tensor qb = BFloat16Tensor::from_float(q), kb = BFloat16Tensor::from_float(k);
  const BFloat16Tensor vb = BFloat16Tensor::from_float(v);
  AttentionOptions options;
  options.backend = Backend::flash;
  auto run = [&](Tensor& out, BFloat16Tensor& out_b) {
    Tensor lse({1, n}), lse_b({1, n});
    attention_forward(q, k, v, out, lse, options);
    attention_forward(qb, kb, vb, out_b, lse_b, options);
  };
  release_cached_memory();
  Tensor out1({1, n, d});
  BFloat16Tensor out1_b({1, n, d});
  run(out1, out1_b);
  ASSERT_GT(cached_memory_bytes(), 0u);
  {  // garbage into the cached blocks
    const Tensor k2 = g.uniform({1, m, d}, -9.0, 9.0), v2 = g.uniform({1, m, d}, -9.0, 9.0);
    const BFloat16Tensor k2b = BFloat16Tensor::from_float(k2), v2b = BFloat16Tensor::from_float(v2);
    Tensor out({1, n, d}), lse({1, n});
    BFloat16Tensor out_b({1, n, d});
    attention_forward(q, k2, v2, out, lse, options);
    attention_forward(qb, k2b, v2b, out_b, lse, options);
  }
  Tensor out2({1, n, d});
  BFloat16Tensor out2_b({1, n, d});
  run(out2, out2_b);
  ASSERT_EQ(
      std::memcmp(out1.data(), out2.data(), sizeof(float) * static_cast<size_t>(out1.numel())), 0);
  ASSERT_EQ(std::memcmp(out1_b.data(), out2_b.data(),
                        sizeof(bfloat16) * static_cast<size_t>(out1_b.numel())),
            0);
  release_cached_memory();
}

}  // namespace
}  // namespace llm_utils
