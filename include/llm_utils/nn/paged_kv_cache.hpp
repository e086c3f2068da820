#pragma once
/// \file paged_kv_cache.hpp
/// A paged KV cache for decoding many sequences at once (vLLM's PagedAttention): one pool of
/// fixed-size pages holds the keys and values of every sequence; each sequence owns a list of
/// pages (its block table), takes a new page only when its last one is full, and gives all of
/// them back when removed. Sequences of any lengths share one batch without padding, and memory
/// grows with the tokens actually held, one page at a time.
///
/// MultiHeadAttention appends to it and attends over it (AttentionForwardOptions::paged_cache);
/// the kernel is attention_forward_paged (attention.hpp). One cache serves one attention layer
/// (a model with L layers keeps L caches and adds each sequence to all of them).
///
/// Example:
/// \code
///   llm_utils::PagedKVCache cache(/*num_pages=*/256, /*page_size=*/64, mha.num_kv_groups(),
///                                 mha.head_dim());
///   const int64_t a = cache.add_sequence(), b = cache.add_sequence();
///   const int64_t ids[] = {a, b};
///   // prompts of 5 and 3 tokens, packed: x (8, d_in), cu_seqlens {0, 5, 8}
///   const int64_t cu[] = {0, 5, 8};
///   y = mha.forward(x, {.cu_seqlens = cu, .paged_cache = &cache, .sequence_ids = ids});
///   // then one token each: x (2, 1, d_in)
///   y = mha.forward(x_next, {.paged_cache = &cache, .sequence_ids = ids});
///   cache.remove_sequence(a);
/// \endcode
///
/// Not thread-safe: one cache must not be used from two threads at once.

#include <cstdint>
#include <map>
#include <span>
#include <vector>

#include "llm_utils/tensor.hpp"

namespace llm_utils {

class PagedKVCache {
 public:
  /// Throws ArgumentError unless every size is positive.
  PagedKVCache(int64_t num_pages, int64_t page_size, int64_t kv_heads, int64_t head_dim);

  int64_t num_pages() const { return keys_.size(0); }
  int64_t page_size() const { return keys_.size(1); }
  int64_t kv_heads() const { return keys_.size(2); }
  int64_t head_dim() const { return keys_.size(3); }

  /// Registers a new, empty sequence and returns its id (ids are never reused).
  int64_t add_sequence();
  /// Gives the sequence's pages back to the pool. ArgumentError for an unknown id.
  void remove_sequence(int64_t id);
  bool contains(int64_t id) const { return sequences_.count(id) != 0; }
  /// Tokens held for the sequence. ArgumentError for an unknown id.
  int64_t length(int64_t id) const;
  /// The sequence's pages, in order (its block table). ArgumentError for an unknown id. The span
  /// is valid until the next append or remove_sequence.
  std::span<const int64_t> pages(int64_t id) const;
  /// The ids of the sequences held, in increasing order.
  std::vector<int64_t> sequence_ids() const;
  /// Pages in no sequence's table.
  int64_t free_pages() const { return static_cast<int64_t>(free_.size()); }
  /// Pages a sequence holding `tokens` tokens needs.
  int64_t pages_for(int64_t tokens) const { return (tokens + page_size() - 1) / page_size(); }

  /// (num_pages, page_size, kv_heads, head_dim): token t of a sequence lives at row
  /// t % page_size of page pages(id)[t / page_size]. Rows of pages nobody holds are unspecified.
  const Tensor& keys() const { return keys_; }
  const Tensor& values() const { return values_; }

  /// Grows each listed sequence by its count of tokens, taking the pages it needs, and returns
  /// where each new token's key and value row goes: (sum of counts) offsets, in order, of rows
  /// of keys() / values() as (num_pages * page_size, kv_heads * head_dim) matrices. All or
  /// nothing: ArgumentError (and no change) for an unknown or repeated id, a negative count, or
  /// fewer free pages than needed. Used by MultiHeadAttention, which writes the rows.
  std::vector<int64_t> append(std::span<const int64_t> ids, std::span<const int64_t> counts);
  /// Writable pools for the appender.
  TensorView keys_mut() { return keys_; }
  TensorView values_mut() { return values_; }

 private:
  struct Sequence {
    int64_t length = 0;
    std::vector<int64_t> pages;
  };
  const Sequence& find(const char* fn, int64_t id) const;

  Tensor keys_;                // (num_pages, page_size, G, hd)
  Tensor values_;              // (num_pages, page_size, G, hd)
  std::vector<int64_t> free_;  // free page indices, taken from the back
  std::map<int64_t, Sequence> sequences_;
  int64_t next_id_ = 0;
};

}  // namespace llm_utils
