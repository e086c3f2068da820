// numpy <-> Tensor. Inputs are converted once at the boundary; outputs are handed over without a
// copy where the tensor is ours to give (forward, backward), and copied where the library keeps
// ownership and may free the storage later (attention weights, gradients, state dicts).

#include <cstring>
#include <memory>
#include <utility>

#include "bindings.hpp"
#include "llm_utils/error.hpp"
#include "llm_utils/nn/parameter.hpp"

namespace llm_utils::python {

FloatArray as_float32(py::handle obj, const std::string& what) {
  if (obj.is_none()) throw py::type_error(what + ": expected an array of numbers, got None");
  py::object arr = py::reinterpret_borrow<py::object>(obj);
  // numpy.asarray does what users expect of "anything numpy can convert" (torch tensors through
  // __array__, nested lists) and raises numpy's own message for ragged input.
  if (!py::isinstance<py::array>(arr)) arr = py::module_::import("numpy").attr("asarray")(obj);
  const char kind = py::reinterpret_borrow<py::array>(arr).dtype().kind();
  if (kind != 'f' && kind != 'i' && kind != 'u') {
    throw py::type_error(
        what + ": expected real numbers (float32 preferred), got an array of dtype " +
        py::str(py::reinterpret_borrow<py::array>(arr).dtype()).cast<std::string>());
  }
  FloatArray out = FloatArray::ensure(arr);
  if (!out) throw py::error_already_set();
  return out;
}

ConstTensorView view_of(const FloatArray& a) {
  return ConstTensorView(a.data(), Shape(a.shape(), a.shape() + a.ndim()));
}

py::array to_numpy(Tensor&& t) {
  auto owned = std::make_unique<Tensor>(std::move(t));
  py::capsule base(owned.get(), [](void* p) { delete static_cast<Tensor*>(p); });
  Tensor* raw = owned.release();  // the capsule owns it now
  return py::array_t<float>(raw->shape(), raw->data(), base);
}

py::array copy_to_numpy(ConstTensorView v, bool writable) {
  py::array_t<float> out(v.shape());
  if (v.numel() > 0) {
    Tensor copy;
    const ConstTensorView c = contiguous(v, copy);
    std::memcpy(out.mutable_data(), c.data(), static_cast<size_t>(c.numel()) * sizeof(float));
  }
  if (!writable) out.attr("setflags")(py::arg("write") = false);
  return out;
}

py::array alias_parameter(const ParameterRef& p) {
  auto owned = std::make_unique<ParameterRef>(p);
  py::capsule base(owned.get(), [](void* ref) { delete static_cast<ParameterRef*>(ref); });
  ParameterRef* raw = owned.release();  // the capsule owns it now
  // With a non-array base pybind11 marks the array writable.
  return py::array_t<float>(raw->shape(), raw->data().data(), base);
}

void assign_parameter(ParameterRef p, py::handle src, const std::string& what) {
  const FloatArray a = as_float32(src, what);
  const ConstTensorView v = view_of(a);
  if (v.shape() != p.shape()) {
    throw py::value_error(what + ": expected shape " + shape_to_string(p.shape()) + ", got " +
                          shape_to_string(v.shape()));
  }
  p.copy_from(v);  // tolerates the parameter's own memory (`sa.W_query = sa.W_query`)
}

std::string fspath(py::handle path) {
  return py::module_::import("os").attr("fsencode")(path).cast<std::string>();
}

}  // namespace llm_utils::python
