// llm_utils.PagedKVCache: the page pool MultiHeadAttention decodes many sequences through
// (nn/paged_kv_cache.hpp).

#include <vector>

#include "bindings.hpp"
#include "llm_utils/nn/paged_kv_cache.hpp"

namespace llm_utils::python {

void bind_paged_cache(py::module_& m) {
  py::class_<PagedKVCache>(m, "PagedKVCache", R"doc(
A paged KV cache (vLLM's PagedAttention): one pool of ``num_pages`` pages of ``page_size``
tokens holds the keys and values of many sequences; a sequence takes a page when its last one
is full and gives them all back when removed. ``MultiHeadAttention.forward(x, paged_cache=...,
sequence_ids=...)`` appends to it and attends over it. One cache per attention layer.

Example::

    cache = llm_utils.PagedKVCache(256, 64, mha.num_kv_groups, mha.head_dim)
    a, b = cache.add_sequence(), cache.add_sequence()
    y = mha(prompts, cu_seqlens=[0, 5, 8], paged_cache=cache, sequence_ids=[a, b])
    y = mha(next_tokens, paged_cache=cache, sequence_ids=[a, b])   # (2, 1, d_in)
    cache.remove_sequence(a)
)doc")
      .def(py::init<int64_t, int64_t, int64_t, int64_t>(), py::arg("num_pages"),
           py::arg("page_size"), py::arg("kv_heads"), py::arg("head_dim"))
      .def_property_readonly("num_pages", &PagedKVCache::num_pages, "Pages in the pool.")
      .def_property_readonly("page_size", &PagedKVCache::page_size, "Tokens per page.")
      .def_property_readonly("kv_heads", &PagedKVCache::kv_heads,
                             "Key/value heads per token (the module's num_kv_groups).")
      .def_property_readonly("head_dim", &PagedKVCache::head_dim, "Features per head.")
      .def_property_readonly("free_pages", &PagedKVCache::free_pages, "Pages no sequence holds.")
      .def("add_sequence", &PagedKVCache::add_sequence,
           "Registers a new, empty sequence; returns its id.")
      .def("remove_sequence", &PagedKVCache::remove_sequence, py::arg("id"),
           "Gives the sequence's pages back (ValueError for an unknown id).")
      .def("__contains__", &PagedKVCache::contains, py::arg("id"))
      .def("length", &PagedKVCache::length, py::arg("id"), "Tokens held for the sequence.")
      .def(
          "pages",
          [](const PagedKVCache& c, int64_t id) {
            const auto p = c.pages(id);
            return std::vector<int64_t>(p.begin(), p.end());
          },
          py::arg("id"), "The sequence's pages, in order (its block table).")
      .def("sequence_ids", &PagedKVCache::sequence_ids, "The ids held, in increasing order.")
      .def_property_readonly(
          "keys", [](const PagedKVCache& c) { return copy_to_numpy(c.keys(), false); },
          "(num_pages, page_size, kv_heads, head_dim): a read-only copy of the key pool.")
      .def_property_readonly(
          "values", [](const PagedKVCache& c) { return copy_to_numpy(c.values(), false); },
          "(num_pages, page_size, kv_heads, head_dim): a read-only copy of the value pool.");
}

}  // namespace llm_utils::python
