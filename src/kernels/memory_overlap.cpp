#include "kernels/memory_overlap.hpp"

#include <algorithm>
#include <cstdint>
#include <numeric>
#include <utility>
#include <vector>

namespace llm_utils::detail {
namespace {

// A view's bytes: a subset of { base + k * period + [0, run) : k >= 0 }, within [base, last].
struct Footprint {
  uintptr_t base;
  uintptr_t last;   // its last byte
  uint64_t run;     // contiguous bytes
  uint64_t period;  // 0: one run only
};

Footprint footprint(const MemoryExtent& v) {
  const Shape& shape = v.shape;
  const Shape& strides = v.strides;
  const uint64_t element = v.element_size;
  // (stride, size) in bytes of every dimension that repeats, innermost first.
  std::vector<std::pair<uint64_t, uint64_t>> dims;
  uint64_t extent = 0;  // offset of the last element, in bytes
  for (size_t i = 0; i < shape.size(); ++i) {
    // A dimension of one element, or broadcast with stride 0, adds no bytes of its own.
    if (shape[i] <= 1 || strides[i] == 0) continue;
    const auto stride = static_cast<uint64_t>(strides[i]) * element;
    dims.emplace_back(stride, static_cast<uint64_t>(shape[i]));
    extent += stride * static_cast<uint64_t>(shape[i] - 1);
  }
  std::sort(dims.begin(), dims.end());
  const auto base = reinterpret_cast<uintptr_t>(v.data);
  // The innermost dimensions that continue one contiguous run.
  uint64_t run = element;
  size_t merged = 0;
  while (merged < dims.size() && dims[merged].first == run) {
    run *= dims[merged].second;
    ++merged;
  }
  uint64_t period = 0;
  for (size_t i = merged; i < dims.size(); ++i) period = std::gcd(period, dims[i].first);
  return {base, base + extent + element - 1, run, period};
}

// Whether [x, x + lx) and [y, y + ly) meet modulo r (lx, ly <= r).
bool meet_modulo(uint64_t x, uint64_t lx, uint64_t y, uint64_t ly, uint64_t r) {
  const uint64_t dy = (y + r - x % r) % r;  // y's start, counted from x's, modulo r
  // y's run starts inside x's, or wraps round into it.
  return dy < lx || dy + ly > r;
}

}  // namespace

bool may_overlap(const MemoryExtent& a, const MemoryExtent& b) {
  if (shape_numel(a.shape) == 0 || shape_numel(b.shape) == 0) return false;
  const Footprint fa = footprint(a), fb = footprint(b);
  if (fa.last < fb.base || fb.last < fa.base) return false;
  // Both periodic with runs that fit in the common period: compare the runs' residues.
  const uint64_t r = std::gcd(fa.period, fb.period);
  if (fa.period == 0 || fb.period == 0 || fa.run > r || fb.run > r) return true;
  return meet_modulo(fa.base, fa.run, fb.base, fb.run, r);
}

}  // namespace llm_utils::detail
