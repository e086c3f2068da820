// The four classes of llm_utils.selfAttn, with the original's constructor arguments, attribute
// names and PyTorch's module conventions (calling, named_parameters, state_dict, repr).

#include <cstring>
#include <string>
#include <utility>
#include <vector>

#include "bindings.hpp"
#include "llm_utils/error.hpp"
#include "llm_utils/nn/self_attention.hpp"

namespace llm_utils::python {
namespace {

// The context vectors have the input's rank and sequence length, and asking for them costs
// nothing (the attention weights may have to be recomputed on the fused path).
int64_t last_seq_len(const SelfAttentionBase& m) {
  return m.context_vec().size(-2);
}

// With 3-D input the original's loop leaves the layers of the last batch element in place.
int64_t last_batch_element(const SelfAttentionBase& m) {
  const ConstTensorView c = m.context_vec();
  return c.dim() == 3 ? c.size(0) - 1 : 0;
}

std::string module_repr(const SelfAttentionBase& m) {
  std::vector<std::pair<std::string, std::string>> children;
  if (const auto* lin = dynamic_cast<const SelfAttentionLinearProjections*>(&m)) {
    children = {{"W_query", linear_repr(lin->W_query)},
                {"W_key", linear_repr(lin->W_key)},
                {"W_value", linear_repr(lin->W_value)}};
  }
  // After a forward the original also holds its derived layers, in the order forward assigns
  // them; their shapes follow from the last input, so they need not be built here.
  if (dynamic_cast<const SelfAttention_Linear4*>(&m) != nullptr && m.has_forward()) {
    const std::string n = std::to_string(last_seq_len(m));
    const std::string d_out = std::to_string(m.d_out());
    if (dynamic_cast<const SelfAttention_Linear5*>(&m) != nullptr) {
      children.emplace_back("attnQueries2ScoresL", "Linear(in_features=" + d_out +
                                                       ", out_features=" + n + ", bias=False)");
    }
    const std::string context = "Linear(in_features=" + n + ", out_features=" + n + ", bias=False)";
    children.emplace_back("attnValues2ContextL", context);
    children.emplace_back("model", context);
  }
  if (children.empty()) return m.class_name() + "()";
  std::string out = m.class_name() + "(\n";
  for (const auto& [name, text] : children) out += "  (" + name + "): " + text + "\n";
  return out + ")";
}

constexpr const char* kBaseDoc = R"doc(
What the four self-attention classes share beyond ``llm_utils.Module``:

- ``values``, ``attn_weights``, ``context_vec``: copies of what the last forward computed, with
  the rank of its input. Before any forward they do not exist (AttributeError).
- ``state_dict(include_derived=False)``: with ``include_derived``, after a 2-D forward, also
  the derived layer weights the original's Linear4/Linear5 state dict holds then.
)doc";

template <typename T>
void bind_projections(py::class_<T, SelfAttentionBase>& cls) {
  const auto layer = [](Linear T::*member) {
    return [member](py::object self) {
      return py::cast(&(self.cast<T&>().*member), py::return_value_policy::reference_internal,
                      self);
    };
  };
  cls.def_property_readonly("W_query", layer(&T::W_query),
                            "The query projection, ``Linear(d_in, d_out, bias=qkv_bias)``;\n"
                            "``W_query.weight`` (d_out, d_in) aliases the module's memory.")
      .def_property_readonly("W_key", layer(&T::W_key), "The key projection, as W_query.")
      .def_property_readonly("W_value", layer(&T::W_value), "The value projection, as W_query.");
}

// A copy of a derived layer: the library rebuilds them on every forward, so a reference would
// dangle. AttributeError naming `name` before any forward.
template <typename T, typename Get>
py::object derived_layer(const T& m, const char* name, Get&& get) {
  if (!m.has_forward()) {
    throw py::attribute_error(m.class_name() + "." + name + ": no forward has run yet");
  }
  return py::cast(Linear(get(last_batch_element(m))));
}

template <typename T>
void bind_context_layers(py::class_<T, SelfAttentionBase>& cls) {
  const auto context_layer = [](const char* name) {
    return [name](const T& m) {
      return derived_layer(m, name, [&](int64_t b) { return m.attnValues2ContextL(b); });
    };
  };
  cls.def_property_readonly("attnValues2ContextL", context_layer("attnValues2ContextL"),
                            "The frozen ``Linear(seq_len, seq_len, bias=False)`` whose weight is\n"
                            "the attention-weight matrix of the last forward (for 3-D input, of\n"
                            "its last batch element, as the original's per-element loop leaves\n"
                            "it). A snapshot: editing it does not change the module.")
      .def_property_readonly("model", context_layer("model"),
                             "The same layer as attnValues2ContextL.")
      .def("set_advance_generator", &T::set_advance_generator, py::arg("on"),
           "Whether forward advances the default generator as the original's does (default\n"
           "True; switch off when reproducing PyTorch's draws does not matter).");
}

template <typename T>
py::class_<T, SelfAttentionBase> bind_linear_class(py::module_& m, const char* name,
                                                   const char* doc) {
  py::class_<T, SelfAttentionBase> cls(m, name, doc);
  cls.def(py::init([](int64_t d_in, int64_t d_out, bool qkv_bias, Generator* generator,
                      const std::string& dtype) {
            return make_in_dtype<T>(dtype, d_in, d_out, qkv_bias, generator);
          }),
          py::arg("d_in"), py::arg("d_out"), py::arg("qkv_bias") = false, py::kw_only(),
          py::arg("generator") = nullptr, py::arg("dtype") = "float32",
          "Builds the query, key and value layers in that order, drawing from ``generator``\n"
          "(default: the default generator, as PyTorch). dtype: 'float32' or 'bfloat16'\n"
          "(Module.set_dtype).");
  bind_projections(cls);
  bind_copy(cls);
  return cls;
}

}  // namespace

void bind_modules(py::module_& m) {
  py::class_<SelfAttentionBase, Module>(m, "SelfAttentionBase", kBaseDoc)
      .def(
          "state_dict",
          [](const SelfAttentionBase& self, bool include_derived) {
            py::dict out;
            for (const auto& [name, t] : self.state_dict(include_derived)) {
              out[py::str(name)] = copy_to_numpy(t);
            }
            return out;
          },
          py::arg("include_derived") = false,
          "The parameters as a dict of float32 array copies under PyTorch's names. With\n"
          "``include_derived``, after a 2-D forward, also the derived layer weights the\n"
          "original's Linear4/Linear5 state dict holds then.")
      .def_property_readonly(
          "values",
          [](const SelfAttentionBase& s) {
            return after_forward([&] { return py::object(copy_to_numpy(s.values())); });
          },
          "The values (x W_v) of the last forward: (seq_len, d_out) or (batch, seq_len, d_out).")
      .def_property_readonly(
          "attn_weights",
          [](const SelfAttentionBase& s) {
            return after_forward([&] { return py::object(copy_to_numpy(s.attn_weights())); });
          },
          "The attention weights of the last forward: (seq_len, seq_len) or\n"
          "(batch, seq_len, seq_len); each row sums to 1.")
      .def_property_readonly(
          "context_vec",
          [](const SelfAttentionBase& s) {
            return after_forward([&] { return py::object(copy_to_numpy(s.context_vec())); });
          },
          "The context vectors of the last forward (what it returned).")
      .def_property_readonly("d_out", &SelfAttentionBase::d_out, "Output features per token.")
      .def("__repr__", &module_repr);

  py::class_<SelfAttention_Params, SelfAttentionBase> params(m, "SelfAttention_Params", R"doc(
Self-attention with bare parameter matrices W_query, W_key, W_value of shape (d_in, d_out),
used as ``x @ W`` and drawn with ``torch.rand`` (U[0, 1)) in that order.

Args:
    d_in: input features per token.
    d_out: output features of the queries, keys and values.
    generator: keyword-only; the Generator to draw from (default: the default generator).

Example::

    llm_utils.manual_seed(123)
    sa = SelfAttention_Params(3, 2)
    ctx = sa(x)            # x (6, 3) -> (6, 2)
    sa.W_query             # (3, 2) float32 array over the module's memory
)doc");
  params
      .def(
          py::init([](int64_t d_in, int64_t d_out, Generator* generator, const std::string& dtype) {
            return make_in_dtype<SelfAttention_Params>(dtype, d_in, d_out, generator);
          }),
          py::arg("d_in"), py::arg("d_out"), py::kw_only(), py::arg("generator") = nullptr,
          py::arg("dtype") = "float32",
          "Draws W_query, W_key, W_value with torch.rand's stream, in that order. dtype:\n"
          "'float32' or 'bfloat16' (Module.set_dtype).")
      .def_property(
          "W_query", [](const SelfAttention_Params& s) { return alias_parameter(s.W_query); },
          [](SelfAttention_Params& s, py::handle v) { assign_parameter(s.W_query, v, "W_query"); },
          "(d_in, d_out) float32 array over the module's memory; assigning copies in.")
      .def_property(
          "W_key", [](const SelfAttention_Params& s) { return alias_parameter(s.W_key); },
          [](SelfAttention_Params& s, py::handle v) { assign_parameter(s.W_key, v, "W_key"); },
          "(d_in, d_out), as W_query.")
      .def_property(
          "W_value", [](const SelfAttention_Params& s) { return alias_parameter(s.W_value); },
          [](SelfAttention_Params& s, py::handle v) { assign_parameter(s.W_value, v, "W_value"); },
          "(d_in, d_out), as W_query.");
  bind_copy(params);

  bind_linear_class<SelfAttention_Linear>(m, "SelfAttention_Linear", R"doc(
Self-attention with ``nn.Linear`` projections W_query, W_key, W_value (weights (d_out, d_in),
PyTorch's default initialisation, built in that order).

Args:
    d_in: input features per token.
    d_out: output features of the queries, keys and values.
    qkv_bias: whether the projections have a bias (default False).
    generator: keyword-only; the Generator to draw from (default: the default generator).

Example::

    llm_utils.manual_seed(789)
    sa = SelfAttention_Linear(3, 2)
    ctx = sa(x)                       # the book's context vectors
    sa.attn_weights, sa.values, sa.context_vec
)doc");

  auto l4 = bind_linear_class<SelfAttention_Linear4>(m, "SelfAttention_Linear4", R"doc(
As SelfAttention_Linear, with the context vectors computed through a linear layer whose weight
*is* the attention-weight matrix: ``attnValues2ContextL(values.T).T``, a frozen
``Linear(seq_len, seq_len, bias=False)`` also reachable as ``model``.

Because that layer is frozen, training gives gradients only to W_value (and its bias); W_query
and W_key keep ``grad is None``, exactly as PyTorch on the original. Like the original, forward
advances the default generator (it builds ``nn.Linear(seq_len, seq_len)``: seq_len**2 draws per
batch element), so that modules built afterwards get PyTorch's weights.

Args: as SelfAttention_Linear.
)doc");
  bind_context_layers(l4);

  auto l5 = bind_linear_class<SelfAttention_Linear5>(m, "SelfAttention_Linear5", R"doc(
As SelfAttention_Linear4, and the scores too go through a frozen linear layer,
``attnQueries2ScoresL = Linear(d_out, seq_len, bias=False)`` whose weight is the keys.
Only W_value (and its bias) gets gradients. Forward advances the default generator by
seq_len*d_out + seq_len**2 draws per batch element, as the original.

Args: as SelfAttention_Linear.
)doc");
  bind_context_layers(l5);
  l5.def_property_readonly(
      "attnQueries2ScoresL",
      [](const SelfAttention_Linear5& s) {
        return derived_layer(s, "attnQueries2ScoresL",
                             [&](int64_t b) { return s.attnQueries2ScoresL(b); });
      },
      "The frozen ``Linear(d_out, seq_len, bias=False)`` whose weight is the keys of the last\n"
      "forward (for 3-D input, of its last batch element). A snapshot.");
}

}  // namespace llm_utils::python
