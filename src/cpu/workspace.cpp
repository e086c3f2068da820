#include "cpu/workspace.hpp"

#include <algorithm>
#include <cstdlib>

namespace llm_utils::cpu {
namespace {

constexpr std::size_t kAlignment = 64;
// Each block starts with a header of one alignment unit holding its usable size, so a freed
// block's size is known whatever size the vector asked for (a reused block may be larger).
constexpr std::size_t kHeader = kAlignment;
// Small blocks are left to malloc, which reuses them without faults.
constexpr std::size_t kMinCachedBytes = std::size_t{64} << 10;

std::size_t& capacity_of(void* block) {
  return *reinterpret_cast<std::size_t*>(static_cast<char*>(block) - kHeader);
}

void* new_block(std::size_t bytes) {
  const std::size_t padded = (bytes + kAlignment - 1) / kAlignment * kAlignment;
  if (padded < bytes || padded > static_cast<std::size_t>(-1) - kHeader) throw std::bad_alloc();
  void* raw = std::aligned_alloc(kAlignment, padded + kHeader);
  if (raw == nullptr) throw std::bad_alloc();
  void* block = static_cast<char*>(raw) + kHeader;
  capacity_of(block) = padded;
  return block;
}

void release_block(void* block) noexcept {
  std::free(static_cast<char*>(block) - kHeader);
}

// This thread's cache: not made yet, in use, or destroyed at the thread's exit (a block freed
// after that, by a thread_local destroyed later, goes back to the system).
enum class CacheState : unsigned char { unborn, alive, destroyed };
thread_local CacheState cache_state = CacheState::unborn;

struct Cache {
  std::vector<void*> blocks;  // free blocks, any order
  std::size_t bytes = 0;      // their capacities summed
  Cache() { cache_state = CacheState::alive; }
  Cache(const Cache&) = delete;
  Cache& operator=(const Cache&) = delete;
  ~Cache() {
    clear();
    cache_state = CacheState::destroyed;
  }
  void clear() noexcept {
    for (void* block : blocks) release_block(block);
    blocks.clear();
    bytes = 0;
  }
};

Cache& cache() {
  thread_local Cache c;
  return c;
}

}  // namespace

void* workspace_allocate(std::size_t bytes) {
  bytes = std::max<std::size_t>(bytes, 1);
  if (cache_state == CacheState::destroyed) return new_block(bytes);
  Cache& c = cache();
  // The smallest cached block that fits, if it is not more than twice what is asked.
  auto best = c.blocks.end();
  for (auto it = c.blocks.begin(); it != c.blocks.end(); ++it) {
    const std::size_t cap = capacity_of(*it);
    if (cap >= bytes && cap / 2 <= bytes && (best == c.blocks.end() || cap < capacity_of(*best))) {
      best = it;
    }
  }
  if (best != c.blocks.end()) {
    void* block = *best;
    c.bytes -= capacity_of(block);
    *best = c.blocks.back();
    c.blocks.pop_back();
    return block;
  }
  return new_block(bytes);
}

void workspace_deallocate(void* block) noexcept {
  if (block == nullptr) return;
  const std::size_t cap = capacity_of(block);
  if (cap < kMinCachedBytes) {
    release_block(block);
    return;
  }
  if (cache_state == CacheState::destroyed) {
    release_block(block);
    return;
  }
  Cache& c = cache();
  if (c.bytes + cap > kMaxCachedBytes) {
    release_block(block);
    return;
  }
  try {
    c.blocks.push_back(block);
  } catch (...) {  // no room to remember it: give it back
    release_block(block);
    return;
  }
  c.bytes += cap;
}

void workspace_release() noexcept {
  if (cache_state == CacheState::alive) cache().clear();
}

std::size_t workspace_cached_bytes() noexcept {
  return cache_state == CacheState::alive ? cache().bytes : 0;
}

}  // namespace llm_utils::cpu
