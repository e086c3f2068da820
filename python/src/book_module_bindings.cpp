// The book's causal and multi-head classes (CausalAttention, MultiHeadAttentionWrapper,
// MultiHeadAttention) with its keyword arguments and PyTorch's module conventions.

#include <cstring>
#include <memory>
#include <optional>
#include <string>
#include <utility>
#include <vector>

#include "bindings.hpp"
#include "llm_utils/attention.hpp"
#include "llm_utils/error.hpp"
#include "llm_utils/nn/attention_mask.hpp"
#include "llm_utils/nn/multihead_attention.hpp"
#include "llm_utils/nn/paged_kv_cache.hpp"
#include "llm_utils/nn/parameter.hpp"

namespace llm_utils::python {
namespace {

py::object linear_of(py::object self, Linear& layer) {
  return py::cast(&layer, py::return_value_policy::reference_internal, self);
}

// A mask argument: None, a boolean array (attn_mask: True = may attend, as SDPA; key padding:
// True = padding, as nn.MultiheadAttention) or a float array added to the scores.
AttentionMask mask_from(py::handle obj, bool true_is_padding, const std::string& what) {
  if (obj.is_none()) return {};
  py::object arr = py::reinterpret_borrow<py::object>(obj);
  if (!py::isinstance<py::array>(arr)) arr = py::module_::import("numpy").attr("asarray")(obj);
  const py::array a = py::reinterpret_borrow<py::array>(arr);
  if (a.dtype().kind() == 'b') {
    const auto flags = py::array_t<bool, py::array::c_style | py::array::forcecast>::ensure(a);
    if (!flags) throw py::error_already_set();
    const Shape shape(flags.shape(), flags.shape() + flags.ndim());
    return true_is_padding ? AttentionMask::padding(flags.data(), shape)
                           : AttentionMask::allowed(flags.data(), shape);
  }
  const FloatArray values = as_float32(a, what);
  return AttentionMask::additive(view_of(values));
}

}  // namespace

void bind_book_modules(py::module_& m) {
  py::class_<CausalAttention, Module> causal(m, "CausalAttention", R"doc(
The book's causal self-attention (chapter 3.5): token i attends to tokens 0..i only, with
dropout on the attention weights in training mode (scaled by 1 / (1 - dropout); masks drawn from
our generator, reproducible from the seed, not PyTorch's bits).

Args:
    d_in, d_out: input and output features per token.
    context_length: the longest sequence forward accepts (the size of the ``mask`` buffer).
    dropout: probability in [0, 1).
    qkv_bias: whether W_query, W_key, W_value have a bias (default False).
    generator: keyword-only; the Generator for weights and dropout (default: the default one).

Example::

    llm_utils.manual_seed(123)
    ca = CausalAttention(d_in=3, d_out=2, context_length=6, dropout=0.0)
    ctx = ca(batch)        # (2, 6, 3) -> (2, 6, 2), the book's numbers
)doc");
  causal
      .def(py::init([](int64_t d_in, int64_t d_out, int64_t context_length, double dropout,
                       bool qkv_bias, Generator* generator, const std::string& dtype) {
             return make_in_dtype<CausalAttention>(dtype, d_in, d_out, context_length, dropout,
                                                   qkv_bias, generator);
           }),
           py::arg("d_in"), py::arg("d_out"), py::arg("context_length"), py::arg("dropout"),
           py::arg("qkv_bias") = false, py::kw_only(), py::arg("generator") = nullptr,
           py::arg("dtype") = "float32",
           "Builds W_query, W_key, W_value in that order, then the mask buffer. dtype:\n"
           "'float32' or 'bfloat16' (Module.set_dtype).")
      .def_property_readonly(
          "W_query", [](py::object s) { return linear_of(s, s.cast<CausalAttention&>().W_query); },
          "The query projection, ``Linear(d_in, d_out, bias=qkv_bias)``.")
      .def_property_readonly(
          "W_key", [](py::object s) { return linear_of(s, s.cast<CausalAttention&>().W_key); },
          "The key projection, as W_query.")
      .def_property_readonly(
          "W_value", [](py::object s) { return linear_of(s, s.cast<CausalAttention&>().W_value); },
          "The value projection, as W_query.")
      .def_property_readonly(
          "mask", [](const CausalAttention& s) { return copy_to_numpy(s.mask, false); },
          "(context_length, context_length): 1 above the diagonal (a read-only copy).")
      .def_property_readonly("d_in", &CausalAttention::d_in, "Input features per token.")
      .def_property_readonly("d_out", &CausalAttention::d_out,
                             "Output features per token (per head for the wrapper).")
      .def_property_readonly("context_length", &CausalAttention::context_length,
                             "The longest sequence forward accepts.")
      .def_property_readonly("dropout", &CausalAttention::dropout,
                             "The dropout probability on the attention weights.")
      .def_property_readonly(
          "attn_weights",
          [](const CausalAttention& s) {
            return after_forward([&] { return py::object(copy_to_numpy(s.attn_weights())); });
          },
          "The attention weights of the last forward, before dropout: (seq_len, seq_len) or\n"
          "(batch, seq_len, seq_len) (beyond the book, which keeps none).");
  bind_copy(causal);

  py::class_<MultiHeadAttentionWrapper, Module> wrapper(m, "MultiHeadAttentionWrapper", R"doc(
The book's stack of ``num_heads`` CausalAttention heads (chapter 3.6.1), built in order, their
outputs concatenated: (..., seq_len, d_out * num_heads).

Args: d_in, d_out, context_length, dropout, num_heads, qkv_bias, as the book; generator
keyword-only.
)doc");
  wrapper
      .def(py::init([](int64_t d_in, int64_t d_out, int64_t context_length, double dropout,
                       int64_t num_heads, bool qkv_bias, Generator* generator,
                       const std::string& dtype) {
             return make_in_dtype<MultiHeadAttentionWrapper>(
                 dtype, d_in, d_out, context_length, dropout, num_heads, qkv_bias, generator);
           }),
           py::arg("d_in"), py::arg("d_out"), py::arg("context_length"), py::arg("dropout"),
           py::arg("num_heads"), py::arg("qkv_bias") = false, py::kw_only(),
           py::arg("generator") = nullptr, py::arg("dtype") = "float32")
      .def_property_readonly(
          "heads",
          [](py::object self) {
            py::list out;
            for (auto& head : self.cast<MultiHeadAttentionWrapper&>().heads) {
              out.append(py::cast(&head, py::return_value_policy::reference_internal, self));
            }
            return out;
          },
          "The CausalAttention heads, in order.")
      .def_property_readonly("num_heads", &MultiHeadAttentionWrapper::num_heads, "Number of heads.")
      .def_property_readonly(
          "d_out", [](const MultiHeadAttentionWrapper& w) { return w.heads.front().d_out(); },
          "Output features per head (the output has d_out * num_heads).");
  bind_copy(wrapper);

  py::class_<MultiHeadAttention, Module> mha(m, "MultiHeadAttention", R"doc(
The book's multi-head attention (chapter 3.6.2): one set of projections split into ``num_heads``
heads of ``d_out // num_heads`` features, causal attention per head, heads merged and passed
through ``out_proj = Linear(d_out, d_out)``. Dropout as CausalAttention.

Args: d_in, d_out (divisible by num_heads, else ValueError), context_length, dropout,
num_heads, qkv_bias, as the book; generator keyword-only.

Example::

    llm_utils.manual_seed(123)
    mha = MultiHeadAttention(3, 2, context_length=6, dropout=0.0, num_heads=2)
    ctx = mha(batch)       # (2, 6, 3) -> (2, 6, 2), the book's numbers
)doc");
  mha.def(py::init([](int64_t d_in, int64_t d_out, int64_t context_length, double dropout,
                      int64_t num_heads, bool qkv_bias, std::optional<int64_t> num_kv_groups,
                      std::optional<double> scale, bool causal, int64_t window_left, double softcap,
                      bool alibi, bool sinks, bool rope, double rope_theta,
                      std::optional<py::dict> rope_scaling, Generator* generator,
                      const std::string& dtype) {
            MultiHeadAttentionOptions options;
            options.num_kv_groups = num_kv_groups.value_or(0);
            options.scale = scale;
            options.causal = causal;
            options.window_left = window_left;
            options.softcap = static_cast<float>(softcap);
            options.alibi = alibi;
            options.sinks = sinks;
            if (rope) {
              options.rope =
                  rope_options(rope_theta, rope_scaling, "MultiHeadAttention: rope_scaling");
            }
            return make_in_dtype<MultiHeadAttention>(dtype, d_in, d_out, context_length, dropout,
                                                     num_heads, qkv_bias, options, generator);
          }),
          py::arg("d_in"), py::arg("d_out"), py::arg("context_length"), py::arg("dropout"),
          py::arg("num_heads"), py::arg("qkv_bias") = false, py::kw_only(),
          py::arg("num_kv_groups") = py::none(), py::arg("scale") = py::none(),
          py::arg("causal") = true, py::arg("window_left") = -1, py::arg("softcap") = 0.0,
          py::arg("alibi") = false, py::arg("sinks") = false, py::arg("rope") = false,
          py::arg("rope_theta") = 10000.0, py::arg("rope_scaling") = py::none(),
          py::arg("generator") = nullptr, py::arg("dtype") = "float32",
          "Builds W_query, W_key, W_value, out_proj in that order, then the mask buffer.\n"
          "Beyond the book (keyword-only): num_kv_groups (grouped-query attention: W_key and\n"
          "W_value have num_kv_groups * head_dim outputs; None = num_heads), scale (multiplies\n"
          "the scores, as SDPA's; None = 1 / sqrt(head_dim)), causal (False: no causal mask),\n"
          "dtype ('float32' or 'bfloat16': Module.set_dtype); and the variants of later models\n"
          "(docs/variants.md): window_left (sliding window: token i stops seeing tokens before\n"
          "i - window_left; -1 none), softcap (scores become softcap * tanh(s / softcap); 0\n"
          "none), alibi (ALiBi with llm_utils.kernels.alibi_slopes(num_heads)), sinks (a\n"
          "learnable logit per head, the parameter ``sinks``, zeros at first), rope (rotary\n"
          "embedding on q and k, base rope_theta, Llama 3.1 scaling from rope_scaling: a dict\n"
          "of factor, low_freq_factor, high_freq_factor, original_context_length).")
      .def(
          "forward",
          [](MultiHeadAttention& m, const ArrayLike& x, const Any& attn_mask,
             const Any& key_padding_mask, bool use_cache,
             std::optional<std::vector<int64_t>> cu_seqlens, PagedKVCache* paged_cache,
             std::optional<std::vector<int64_t>> sequence_ids) {
            const std::string where = "MultiHeadAttention.forward";
            const FloatArray a = as_float32(x.obj, where + ": x");
            AttentionForwardOptions options;
            options.attn_mask = mask_from(attn_mask.obj, false, where + ": attn_mask");
            options.key_padding_mask =
                mask_from(key_padding_mask.obj, true, where + ": key_padding_mask");
            options.use_cache = use_cache;
            if (cu_seqlens) {
              if (cu_seqlens->empty()) {
                throw py::value_error(where + ": cu_seqlens needs at least one entry (0)");
              }
              options.cu_seqlens = *cu_seqlens;
            }
            options.paged_cache = paged_cache;
            if (sequence_ids) options.sequence_ids = *sequence_ids;
            if ((paged_cache == nullptr) != !sequence_ids) {
              throw py::value_error(where + ": paged_cache and sequence_ids go together");
            }
            Tensor out;
            {
              py::gil_scoped_release release;
              out = m.forward(view_of(a), options);
            }
            return to_numpy(std::move(out));
          },
          py::arg("x"), py::arg("attn_mask") = py::none(), py::arg("key_padding_mask") = py::none(),
          py::arg("use_cache") = false, py::kw_only(), py::arg("cu_seqlens") = py::none(),
          py::arg("paged_cache") = nullptr, py::arg("sequence_ids") = py::none(),
          "x (seq_len, d_in) or (batch, seq_len, d_in), seq_len <= context_length -> context\n"
          "vectors, float32. In training mode with dropout > 0 the attention weights are dropped.\n"
          "attn_mask: broadcast to (batch, num_heads, queries, keys); bool True = may attend\n"
          "(SDPA's convention), or float added to the scaled scores. key_padding_mask: (batch,\n"
          "keys) or (keys); bool True = padding, hidden (nn.MultiheadAttention's convention), or\n"
          "float. use_cache: append this call's keys and values to the KV cache and attend over\n"
          "all cached tokens (inference: eval() first if dropout > 0; no backward follows).\n"
          "A query whose keys are all hidden gets a zero row.\n"
          "cu_seqlens: packed variable-length sequences, x (T, d_in), sequence s its rows\n"
          "[cu_seqlens[s], cu_seqlens[s + 1]), each attending within itself (backward as usual).\n"
          "paged_cache, sequence_ids: decode through a PagedKVCache: x (S, n, d_in) brings n new\n"
          "tokens to each listed sequence (or (T, d_in) with cu_seqlens), appended to the cache,\n"
          "each attending over all of its tokens (inference: no backward follows).")
      .def("reset_cache", &MultiHeadAttention::reset_cache,
           "Empties the KV cache (before a new sequence).")
      .def_property_readonly("cache_size", &MultiHeadAttention::cache_size,
                             "Tokens in the KV cache.")
      .def_property_readonly("num_kv_groups", &MultiHeadAttention::num_kv_groups,
                             "Key/value heads (num_heads unless grouped-query attention).")
      .def_property_readonly("causal", &MultiHeadAttention::causal,
                             "Whether the causal mask applies.")
      .def_property_readonly("window_left", &MultiHeadAttention::window_left,
                             "The sliding window (-1: none).")
      .def_property_readonly("softcap", &MultiHeadAttention::softcap,
                             "The logit softcap (0: none).")
      .def_property_readonly(
          "alibi_slopes",
          [](const MultiHeadAttention& s) -> py::object {
            if (s.alibi_slopes().empty()) return py::none();
            return copy_to_numpy(s.alibi_slopes(), false);
          },
          "(num_heads) ALiBi slopes, or None.")
      .def_property_readonly(
          "rope_theta",
          [](const MultiHeadAttention& s) -> py::object {
            if (s.rope() == nullptr) return py::none();
            return py::float_(s.rope()->options().theta);
          },
          "RoPE's base, or None without RoPE.")
      .def_property(
          "sinks",
          [](const MultiHeadAttention& s) -> py::object {
            if (!s.sinks) return py::none();
            return alias_parameter(*s.sinks);
          },
          [](MultiHeadAttention& s, py::handle v) {
            if (!s.sinks) throw py::value_error("MultiHeadAttention.sinks: built without sinks");
            assign_parameter(*s.sinks, v, "MultiHeadAttention.sinks");
          },
          "(num_heads) the sink logits (a parameter over the module's memory), or None.")
      .def_property_readonly(
          "W_query",
          [](py::object s) { return linear_of(s, s.cast<MultiHeadAttention&>().W_query); },
          "The query projection, ``Linear(d_in, d_out, bias=qkv_bias)``.")
      .def_property_readonly(
          "W_key", [](py::object s) { return linear_of(s, s.cast<MultiHeadAttention&>().W_key); },
          "The key projection, as W_query.")
      .def_property_readonly(
          "W_value",
          [](py::object s) { return linear_of(s, s.cast<MultiHeadAttention&>().W_value); },
          "The value projection, as W_query.")
      .def_property_readonly(
          "out_proj",
          [](py::object s) { return linear_of(s, s.cast<MultiHeadAttention&>().out_proj); },
          "The output projection, ``Linear(d_out, d_out)`` with bias.")
      .def_property_readonly(
          "mask", [](const MultiHeadAttention& s) { return copy_to_numpy(s.mask, false); },
          "(context_length, context_length): 1 above the diagonal (a read-only copy).")
      .def_property_readonly("d_in", &MultiHeadAttention::d_in, "Input features per token.")
      .def_property_readonly("d_out", &MultiHeadAttention::d_out,
                             "Output features per token (per head for the wrapper).")
      .def_property_readonly("num_heads", &MultiHeadAttention::num_heads, "Number of heads.")
      .def_property_readonly("head_dim", &MultiHeadAttention::head_dim,
                             "Features per head: d_out // num_heads.")
      .def_property_readonly("context_length", &MultiHeadAttention::context_length,
                             "The longest sequence forward accepts.")
      .def_property_readonly("dropout", &MultiHeadAttention::dropout,
                             "The dropout probability on the attention weights.")
      .def_property_readonly(
          "attn_weights",
          [](const MultiHeadAttention& s) {
            return after_forward([&] { return py::object(copy_to_numpy(s.attn_weights())); });
          },
          "The attention weights of the last forward without the KV cache, before dropout:\n"
          "(num_heads, seq_len, seq_len) or (batch, num_heads, seq_len, seq_len) (beyond the\n"
          "book, which keeps none).");
  bind_copy(mha);
}

}  // namespace llm_utils::python
