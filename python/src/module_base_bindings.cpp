// llm_utils.Module: what the seven attention classes share, PyTorch's nn.Module conventions
// (calling, backward, named_parameters, state_dict, train/eval), bound once for all of them.

#include <string>
#include <utility>
#include <vector>

#include "bindings.hpp"
#include "llm_utils/nn/module.hpp"

namespace llm_utils::python {
namespace {

py::array forward(Module& m, const ArrayLike& x) {
  const FloatArray a = as_float32(x.obj, m.class_name() + ".forward: x");
  Tensor out;
  {
    py::gil_scoped_release release;
    out = m.forward(view_of(a));
  }
  return to_numpy(std::move(out));
}

py::array backward(Module& m, const ArrayLike& grad_output) {
  const FloatArray a = as_float32(grad_output.obj, m.class_name() + ".backward: grad_output");
  Tensor dx;
  {
    py::gil_scoped_release release;
    dx = m.backward(view_of(a));
  }
  return to_numpy(std::move(dx));
}

// PyTorch's `recurse=False` keeps the module's own parameters: those whose name has no dot
// (SelfAttention_Params' W_query), not its children's (W_query.weight of a Linear).
std::vector<std::pair<std::string, ParameterRef>> selected(const Module& m, bool recurse) {
  std::vector<std::pair<std::string, ParameterRef>> out;
  for (auto& [name, p] : m.named_parameters()) {
    if (recurse || name.find('.') == std::string::npos) out.emplace_back(name, p);
  }
  return out;
}

StateDict to_state_dict(py::handle mapping, const std::string& where) {
  if (!py::hasattr(mapping, "keys")) {
    throw py::type_error(where + ": expected a mapping of name -> array, got " +
                         py::repr(py::type::handle_of(mapping)).cast<std::string>());
  }
  const py::dict d(py::reinterpret_borrow<py::object>(mapping));  // any Mapping
  StateDict out;
  for (auto [key, value] : d) {
    if (!py::isinstance<py::str>(key)) {
      throw py::type_error(where + ": keys must be str, got " + py::repr(key).cast<std::string>());
    }
    const std::string name = key.cast<std::string>();
    const FloatArray a = as_float32(value, where + ": '" + name + "'");
    out.insert(name, Tensor::from_view(view_of(a)));
  }
  return out;
}

Backend to_backend(py::handle backend) {
  if (py::isinstance<Backend>(backend)) return backend.cast<Backend>();
  if (py::isinstance<py::str>(backend)) return parse_backend(backend.cast<std::string>());
  throw py::type_error("set_backend: expected 'reference', 'flash', 'auto' or a Backend, got " +
                       py::repr(backend).cast<std::string>());
}

constexpr const char* kModuleDoc = R"doc(
What the attention classes share (PyTorch's ``nn.Module`` conventions):

- ``module(x)`` / ``module.forward(x)``: x is (seq_len, d_in) or (batch, seq_len, d_in), any
  array numpy can convert (a C-contiguous float32 array is used without a copy; other real
  dtypes, torch CPU tensors and lists are converted to float32). Returns a float32 array
  (seq_len, out) or (batch, seq_len, out).
- ``backward(grad_output)``: the gradient of a loss with respect to x; parameter gradients
  accumulate (``+=``) as autograd's do. ``zero_grad()`` clears them (to None).
- ``named_parameters()`` / ``parameters()``: learnable parameters under PyTorch's names, in
  PyTorch's order, for the optimizers in ``llm_utils.optim``. Each Parameter (and each array
  over its memory) keeps the parameter alive.
- ``state_dict()`` / ``load_state_dict(d)``: dicts of float32 arrays under PyTorch's names;
  loading is all or nothing and copies into the parameters' memory, so arrays that alias them
  see the new values.
- ``train()`` / ``eval()``: dropout applies in training mode only.

Errors: ValueError for bad shapes and arguments, RuntimeError for calls in the wrong state
(backward before forward), with the library's message.

One module must not be used from two threads at once; separate modules may run concurrently
(the GIL is released while computing).
)doc";

}  // namespace

void bind_module_base(py::module_& m) {
  py::object incompatible_keys =
      py::module_::import("collections")
          .attr("namedtuple")("IncompatibleKeys", py::make_tuple("missing_keys", "unexpected_keys"),
                              py::arg("module") = "llm_utils");
  m.attr("IncompatibleKeys") = incompatible_keys;

  py::class_<Module>(m, "Module", kModuleDoc)
      .def("forward", &forward, py::arg("x"),
           "x (seq_len, d_in) or (batch, seq_len, d_in) -> (seq_len, out) or\n"
           "(batch, seq_len, out), float32.")
      .def(
          "__call__",
          [](py::object self, py::args args, py::kwargs kwargs) {
            return self.attr("forward")(*args, **kwargs);
          },
          "``module(x, ...)`` calls ``module.forward(x, ...)``, as nn.Module does.")
      .def("backward", &backward, py::arg("grad_output"),
           "grad_output (the shape forward returned) -> the gradient with respect to x (the\n"
           "shape of x). Accumulates parameter gradients (W_query and W_key of Linear4/Linear5\n"
           "get none, exactly as in PyTorch on the original). RuntimeError before any forward,\n"
           "after load_state_dict, or after a KV-cache forward.")
      .def("zero_grad", &Module::zero_grad, py::arg("set_to_none") = true,
           "Clears every parameter gradient: to None by default, else to zeros.")
      .def(
          "named_parameters",
          [](const Module& self, const std::string& prefix, bool recurse) {
            py::list out;
            for (auto& [name, p] : selected(self, recurse)) {
              out.append(py::make_tuple(prefix.empty() ? name : prefix + "." + name, p));
            }
            return py::iter(out);
          },
          py::arg("prefix") = "", py::arg("recurse") = true,
          "An iterator of (name, Parameter) under PyTorch's names ('W_query.weight', ...), in\n"
          "PyTorch's order. ``recurse=False``: only the module's own parameters, not those of\n"
          "its layers (as PyTorch).")
      .def(
          "parameters",
          [](const Module& self, bool recurse) {
            py::list out;
            for (auto& [name, p] : selected(self, recurse)) out.append(p);
            return py::iter(out);
          },
          py::arg("recurse") = true,
          "An iterator of the Parameters, in named_parameters() order: what the optimizers take.")
      .def(
          "state_dict",
          [](const Module& self) {
            py::dict out;
            for (const auto& [name, t] : self.state_dict()) out[py::str(name)] = copy_to_numpy(t);
            return out;
          },
          "Parameters and buffers (the book's ``mask``) as a dict of float32 array copies under\n"
          "PyTorch's names, in PyTorch's order.")
      .def(
          "load_state_dict",
          [incompatible_keys](Module& self, const ArrayMapping& state, bool strict) {
            const StateDict sd = to_state_dict(state.obj, self.class_name() + ".load_state_dict");
            const LoadResult r = self.load_state_dict(sd, strict);
            return incompatible_keys(py::cast(r.missing_keys), py::cast(r.unexpected_keys));
          },
          py::arg("state_dict"), py::arg("strict") = true,
          "Copies the arrays of a mapping (name -> array-like, numpy or torch) into the\n"
          "parameters, all or nothing: a missing key, an unknown key (when ``strict``) or a\n"
          "wrong shape raises ValueError naming the key and changes nothing. A ``mask`` buffer\n"
          "may be present and must be the causal one; the derived keys of Linear4/Linear5 are\n"
          "accepted and ignored. Arrays aliasing the parameters see the new values. Returns\n"
          "(missing_keys, unexpected_keys), as PyTorch.")
      .def(
          "train",
          [](py::object self, bool mode) {
            self.cast<Module&>().train(mode);
            return self;
          },
          py::arg("mode") = true, "Training mode (dropout applies), as nn.Module; returns self.")
      .def(
          "eval",
          [](py::object self) {
            self.cast<Module&>().eval();
            return self;
          },
          "Evaluation mode (no dropout), as nn.Module; returns self.")
      .def_property_readonly("training", &Module::training, "True in training mode (the default).")
      .def(
          "set_backend",
          [](Module& self, const BackendLike& b) { self.set_backend(to_backend(b.obj)); },
          py::arg("backend"),
          "Chooses the attention kernel: 'reference', 'flash', 'auto' (or a Backend).\n"
          "ValueError on another name.")
      .def_property_readonly(
          "backend", [](const Module& self) { return std::string(backend_name(self.backend())); },
          "The attention kernel in use: 'reference', 'flash' or 'auto'.")
      .def(
          "set_dtype",
          [](py::object self, const std::string& dtype) {
            self.cast<Module&>().set_dtype(parse_dtype(dtype));
            return self;
          },
          py::arg("dtype"),
          "Computes in 'float32' (the default) or 'bfloat16' ('bf16'): bfloat16 storage of the\n"
          "projections' inputs, weights, q, k, v and the context, float32 accumulation and\n"
          "softmax; parameters, gradients, inputs and outputs stay float32 arrays. Returns\n"
          "self. ValueError on another name.")
      .def_property_readonly(
          "dtype", [](const Module& self) { return std::string(dtype_name(self.dtype())); },
          "'float32' or 'bfloat16'.")
      .def_property_readonly("d_in", &Module::in_features, "Input features per token.");
}

}  // namespace llm_utils::python
