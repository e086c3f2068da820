// Parameter (a learnable tensor with its gradient) and Linear (torch.nn.Linear), as the modules
// hand them out. A Parameter object is a ParameterRef: it, and every array over its memory, keeps
// the parameter's storage alive, whatever happens to the module.

#include <functional>
#include <string>

#include "bindings.hpp"
#include "llm_utils/error.hpp"
#include "llm_utils/nn/linear.hpp"
#include "llm_utils/nn/parameter.hpp"

namespace llm_utils::python {
namespace {

py::tuple shape_tuple(const Shape& shape) {
  py::tuple out(shape.size());
  for (size_t i = 0; i < shape.size(); ++i) out[i] = shape[i];
  return out;
}

py::object grad_of(const ParameterRef& p) {
  // A read-only copy: the library frees the gradient on zero_grad(set_to_none=True), so an
  // alias could dangle; read-only makes an in-place edit fail loudly instead of doing nothing.
  if (!p.has_grad()) return py::none();
  return copy_to_numpy(p.grad(), /*writable=*/false);
}

void set_grad(ParameterRef& p, py::handle value) {
  if (value.is_none()) {
    p.zero_grad(/*set_to_none=*/true);
    return;
  }
  const FloatArray a = as_float32(value, "Parameter.grad");
  const ConstTensorView v = view_of(a);
  if (v.shape() != p.shape()) {
    throw py::value_error("Parameter.grad: expected shape " + shape_to_string(p.shape()) +
                          ", got " + shape_to_string(v.shape()));
  }
  p.zero_grad(/*set_to_none=*/true);
  p.accumulate_grad(v);  // from None: grad = value
}

}  // namespace

std::string linear_repr(const Linear& l) {
  return "Linear(in_features=" + std::to_string(l.in_features()) +
         ", out_features=" + std::to_string(l.out_features()) +
         ", bias=" + (l.bias ? "True" : "False") + ")";
}

void bind_parameter(py::module_& m) {
  py::class_<ParameterRef>(m, "Parameter", R"doc(
A learnable tensor of a module, as ``torch.nn.Parameter``; what ``named_parameters()`` and
``parameters()`` yield. Not constructible from Python. Two Parameter objects of the same
parameter compare equal.

``data``  a float32 numpy array over the parameter's own memory: writable, and in-place edits
          (``p.data[...] = 0``, ``p.data *= 2``) change the module. It keeps the parameter alive.
``grad``  None until a backward pass reaches the parameter (as in PyTorch), then a read-only
          copy of the accumulated gradient. Assign an array (or None) to replace it.
)doc")
      .def_property(
          "data", [](const ParameterRef& p) { return alias_parameter(p); },
          [](ParameterRef& p, py::handle v) { assign_parameter(p, v, "Parameter.data"); },
          "The values: a writable float32 array aliasing the parameter. Assigning copies in\n"
          "place (the shape must match).")
      .def_property("grad", &grad_of, &set_grad,
                    "None where no gradient has reached the parameter, else a read-only copy of\n"
                    "it. Assign an array of the parameter's shape, or None.")
      .def_property_readonly("requires_grad", &ParameterRef::requires_grad,
                             "Whether a backward pass may give this parameter a gradient.")
      .def_property_readonly(
          "shape", [](const ParameterRef& p) { return shape_tuple(p.shape()); },
          "The shape, as a tuple.")
      .def(
          "__array__",
          [](const ParameterRef& p, const DType& dtype) {
            py::array a = alias_parameter(p);
            return dtype.obj.is_none() ? py::object(a) : a.attr("astype")(dtype.obj);
          },
          py::arg("dtype") = py::none(), "``numpy.asarray(p)`` gives ``p.data``.")
      .def("__eq__", [](const ParameterRef& a, const ParameterRef& b) { return a.same_as(b); })
      .def("__hash__",
           [](const ParameterRef& p) { return std::hash<const float*>()(p.data().data()); })
      .def("__repr__", [](const ParameterRef& p) {
        return "Parameter containing:\n" + py::repr(alias_parameter(p)).cast<std::string>();
      });

  py::class_<Linear>(m, "Linear", R"doc(
``torch.nn.Linear``: ``y = x @ weight.T + bias``, weight (out_features, in_features).

The projection layers of the Linear classes (``lin.W_query``) are views into the module:
``weight`` and ``bias`` are writable arrays over its memory. The derived layers of Linear4 and
Linear5 (``attnValues2ContextL``, ``model``, ``attnQueries2ScoresL``) are snapshots of the last
forward. Not constructible from Python.
)doc")
      .def_property(
          "weight", [](const Linear& l) { return alias_parameter(l.weight); },
          [](Linear& l, py::handle v) { assign_parameter(l.weight, v, "Linear.weight"); },
          "(out_features, in_features) float32 array over the layer's memory; assigning copies in.")
      .def_property(
          "bias",
          [](const Linear& l) -> py::object {
            if (!l.bias) return py::none();
            return alias_parameter(*l.bias);
          },
          [](Linear& l, py::handle v) {
            if (!l.bias) {
              throw py::value_error("Linear.bias: this layer was built without a bias");
            }
            assign_parameter(*l.bias, v, "Linear.bias");
          },
          "(out_features,) float32 array over the layer's memory, or None without a bias.")
      .def_property_readonly("in_features", &Linear::in_features,
                             "Inputs per row (weight's columns).")
      .def_property_readonly("out_features", &Linear::out_features,
                             "Outputs per row (weight's rows).")
      .def(
          "__call__",
          [](const Linear& l, const ArrayLike& x) {
            const FloatArray a = as_float32(x.obj, "x");
            Tensor y;
            {
              py::gil_scoped_release release;
              y = l.forward(view_of(a));
            }
            return to_numpy(std::move(y));
          },
          py::arg("x"), "x (..., in_features) -> (..., out_features), as ``nn.Linear``.")
      .def("__repr__", &linear_repr);
}

}  // namespace llm_utils::python
