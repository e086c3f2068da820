#pragma once
// Memory for the fused kernels' per-call buffers (packed operands, dQ partials, per-thread
// scratch), kept between calls by the thread that made them.
//
// Why: a kernel call at N = 4096 builds about 1 MiB of packed K and V (forward) or 6 MiB of
// operands and partials (backward). glibc maps blocks that large afresh and returns them to
// the system on free, so every call took a page fault per 4 KiB, and with two threads the
// faults of one region serialise in the kernel: 0.75 ms of a 13 ms bfloat16 forward on the
// 2-core Zen 4 (perf: twice the page faults of the one-thread run). Reused blocks are already
// mapped.
//
// Blocks are 64-byte aligned. A freed block goes to the freeing thread's cache while that
// cache holds less than kMaxCachedBytes; past that it is released. An allocation takes the
// smallest cached block that fits and is at most twice its size. Each thread's cache is its
// own (no lock); a block may be freed on another thread than the one that allocated it.

#include <cstddef>
#include <new>
#include <vector>

namespace llm_utils::cpu {

/// At most this many bytes stay cached per thread between calls.
constexpr std::size_t kMaxCachedBytes = std::size_t{64} << 20;

/// `bytes` bytes, 64-byte aligned: a cached block or a new one (std::bad_alloc on failure).
void* workspace_allocate(std::size_t bytes);
/// Returns a block of workspace_allocate to the calling thread's cache, or to the system.
void workspace_deallocate(void* block) noexcept;
/// Frees the calling thread's cached blocks (llm_utils::release_cached_memory).
void workspace_release() noexcept;
/// The bytes the calling thread's cache holds (for tests).
std::size_t workspace_cached_bytes() noexcept;

/// A std::allocator over the workspace, for std::vector.
template <typename T>
struct WorkspaceAllocator {
  using value_type = T;
  WorkspaceAllocator() = default;
  template <typename U>
  explicit WorkspaceAllocator(const WorkspaceAllocator<U>& /*other*/) noexcept {}
  T* allocate(std::size_t n) {
    if (n > static_cast<std::size_t>(-1) / sizeof(T)) throw std::bad_array_new_length();
    return static_cast<T*>(workspace_allocate(n * sizeof(T)));
  }
  void deallocate(T* p, std::size_t /*n*/) noexcept { workspace_deallocate(p); }
  template <typename U>
  bool operator==(const WorkspaceAllocator<U>& /*other*/) const noexcept {
    return true;
  }
  template <typename U>
  bool operator!=(const WorkspaceAllocator<U>& /*other*/) const noexcept {
    return false;
  }
};

/// A vector whose storage comes from the workspace.
template <typename T>
using WorkspaceVector = std::vector<T, WorkspaceAllocator<T>>;

}  // namespace llm_utils::cpu
