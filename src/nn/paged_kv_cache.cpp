// PagedKVCache: the page pool, the sequences' block tables, and appending tokens to them.

#include "llm_utils/nn/paged_kv_cache.hpp"

#include <set>
#include <string>

#include "llm_utils/error.hpp"

namespace llm_utils {

PagedKVCache::PagedKVCache(int64_t num_pages, int64_t page_size, int64_t kv_heads,
                           int64_t head_dim) {
  if (num_pages < 1 || page_size < 1 || kv_heads < 1 || head_dim < 1) {
    throw ArgumentError(
        "PagedKVCache: num_pages, page_size, kv_heads and head_dim must be >= 1, "
        "got " +
        std::to_string(num_pages) + ", " + std::to_string(page_size) + ", " +
        std::to_string(kv_heads) + ", " + std::to_string(head_dim));
  }
  keys_ = Tensor({num_pages, page_size, kv_heads, head_dim});
  values_ = Tensor({num_pages, page_size, kv_heads, head_dim});
  // Taken from the back: page 0 first.
  for (int64_t p = num_pages - 1; p >= 0; --p) free_.push_back(p);
}

int64_t PagedKVCache::add_sequence() {
  const int64_t id = next_id_++;
  sequences_.emplace(id, Sequence{});
  return id;
}

const PagedKVCache::Sequence& PagedKVCache::find(const char* fn, int64_t id) const {
  const auto it = sequences_.find(id);
  if (it == sequences_.end()) {
    throw ArgumentError(std::string("PagedKVCache.") + fn + ": no sequence with id " +
                        std::to_string(id));
  }
  return it->second;
}

void PagedKVCache::remove_sequence(int64_t id) {
  const Sequence& s = find("remove_sequence", id);
  free_.insert(free_.end(), s.pages.rbegin(), s.pages.rend());
  sequences_.erase(id);
}

int64_t PagedKVCache::length(int64_t id) const {
  return find("length", id).length;
}

std::span<const int64_t> PagedKVCache::pages(int64_t id) const {
  return find("pages", id).pages;
}

std::vector<int64_t> PagedKVCache::sequence_ids() const {
  std::vector<int64_t> ids;
  for (const auto& [id, s] : sequences_) ids.push_back(id);
  return ids;
}

std::vector<int64_t> PagedKVCache::append(std::span<const int64_t> ids,
                                          std::span<const int64_t> counts) {
  if (ids.size() != counts.size()) {
    throw ArgumentError("PagedKVCache.append: " + std::to_string(ids.size()) + " ids but " +
                        std::to_string(counts.size()) + " counts");
  }
  // Every check before any change.
  std::set<int64_t> seen;
  int64_t pages_needed = 0, tokens = 0;
  for (size_t i = 0; i < ids.size(); ++i) {
    const Sequence& s = find("append", ids[i]);
    if (!seen.insert(ids[i]).second) {
      throw ArgumentError("PagedKVCache.append: sequence " + std::to_string(ids[i]) +
                          " is listed twice");
    }
    if (counts[i] < 0) {
      throw ArgumentError("PagedKVCache.append: sequence " + std::to_string(ids[i]) +
                          " gets a negative count " + std::to_string(counts[i]));
    }
    pages_needed += pages_for(s.length + counts[i]) - static_cast<int64_t>(s.pages.size());
    tokens += counts[i];
  }
  if (pages_needed > free_pages()) {
    throw ArgumentError("PagedKVCache.append: the new tokens need " + std::to_string(pages_needed) +
                        " more pages, " + std::to_string(free_pages()) + " of " +
                        std::to_string(num_pages()) + " are free");
  }
  std::vector<int64_t> rows;
  rows.reserve(static_cast<size_t>(tokens));
  for (size_t i = 0; i < ids.size(); ++i) {
    Sequence& s = sequences_.at(ids[i]);
    for (int64_t t = s.length; t < s.length + counts[i]; ++t) {
      if (t / page_size() == static_cast<int64_t>(s.pages.size())) {
        s.pages.push_back(free_.back());
        free_.pop_back();
      }
      rows.push_back(s.pages[static_cast<size_t>(t / page_size())] * page_size() + t % page_size());
    }
    s.length += counts[i];
  }
  return rows;
}

}  // namespace llm_utils
