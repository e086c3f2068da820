#pragma once
// What the binding files of llm_utils._core share: conversions between numpy arrays and the
// library's tensors, and the registration function of each area, called in order by module.cpp.

#include <pybind11/numpy.h>
#include <pybind11/pybind11.h>
#include <pybind11/stl.h>

#include <memory>
#include <optional>
#include <string>
#include <utility>

#include "llm_utils/bfloat16.hpp"
#include "llm_utils/error.hpp"
#include "llm_utils/rope.hpp"
#include "llm_utils/tensor.hpp"

namespace llm_utils {
class Linear;
class ParameterRef;
}  // namespace llm_utils

namespace llm_utils::python {

namespace py = pybind11;

/// float32, C order. `forcecast` lets numpy convert other real dtypes; an array that already is
/// C-contiguous float32 passes through as the same object, without a copy.
using FloatArray = py::array_t<float, py::array::c_style | py::array::forcecast>;

/// Anything numpy can convert (lists, numpy arrays of any real dtype, torch CPU tensors) as a
/// float32 C-contiguous array. Bool, complex, string and object arrays raise TypeError naming
/// `what`, so that a mistake is not silently turned into numbers.
FloatArray as_float32(py::handle obj, const std::string& what);

/// A view of a converted array; valid while the array lives.
ConstTensorView view_of(const FloatArray& a);

/// Moves `t` into a new numpy array that owns it: no copy.
py::array to_numpy(Tensor&& t);
/// A new numpy array holding a copy of `v` (strided or not), C order; read-only when `writable`
/// is false.
py::array copy_to_numpy(ConstTensorView v, bool writable = true);
/// A writable numpy array over the parameter's storage, which it keeps alive (the array's base
/// holds a reference to the parameter, not to its module).
py::array alias_parameter(const ParameterRef& p);
/// Copies the array-like `src` into the parameter in place (aliases see the new values).
/// Shapes must agree: ValueError naming `what` otherwise.
void assign_parameter(ParameterRef p, py::handle src, const std::string& what);

/// PyTorch's repr of a linear layer: `Linear(in_features=3, out_features=2, bias=False)`.
std::string linear_repr(const Linear& layer);

/// A path argument (str, bytes or os.PathLike) as the bytes the OS sees.
std::string fspath(py::handle path);

/// The Python object of a bound C++ object that Python already holds (its registered wrapper).
template <typename T>
py::object self_object(T& ref) {
  return py::cast(&ref, py::return_value_policy::reference);
}

/// An argument taken as the Python object it is, which the binding converts and checks itself
/// (with messages naming the argument), shown in help() under `Tag::name` rather than as
/// pybind11's "handle".
template <typename Tag>
struct Typed {
  py::object obj;
};

#define LLM_UTILS_TYPED_ARG(alias, text)                       \
  struct alias##Name {                                         \
    static constexpr auto name = py::detail::const_name(text); \
  };                                                           \
  using alias = Typed<alias##Name>;

LLM_UTILS_TYPED_ARG(ArrayLike, "numpy.typing.ArrayLike")
LLM_UTILS_TYPED_ARG(ArrayMapping, "Mapping[str, numpy.typing.ArrayLike]")
LLM_UTILS_TYPED_ARG(StrMapping, "Optional[Mapping[str, str]]")
LLM_UTILS_TYPED_ARG(PathLike, "os.PathLike")
LLM_UTILS_TYPED_ARG(Seed, "int")
LLM_UTILS_TYPED_ARG(OptionalSeed, "Optional[int]")
LLM_UTILS_TYPED_ARG(BackendLike, "Union[str, llm_utils.Backend]")
LLM_UTILS_TYPED_ARG(DType, "Optional[numpy.typing.DTypeLike]")
LLM_UTILS_TYPED_ARG(Any, "Any")
#undef LLM_UTILS_TYPED_ARG

/// What a module has only after a forward: its StateError becomes AttributeError, so that
/// hasattr() answers as on the original.
template <typename F>
py::object after_forward(F&& get) {
  try {
    return get();
  } catch (const StateError& e) {
    throw py::attribute_error(e.what());
  }
}

/// copy.copy and copy.deepcopy of a module: an independent copy (parameters, gradients, the
/// saved forward).
template <typename T, typename Base>
void bind_copy(py::class_<T, Base>& cls) {
  cls.def("__copy__", [](const T& m) { return T(m); })
      .def(
          "__deepcopy__", [](const T& m, const Any& /*memo*/) { return T(m); }, py::arg("memo"),
          "A module with copies of the parameters, gradients and saved forward state.");
}

void bind_errors(py::module_& m);
void bind_random(py::module_& m);
void bind_parameter(py::module_& m);
void bind_module_base(py::module_& m);
void bind_modules(py::module_& m);
void bind_book_modules(py::module_& m);
void bind_optim(py::module_& m);
void bind_io(py::module_& m);
/// llm_utils._core.kernels: the attention kernels and RoPE on numpy arrays (kernel_bindings.cpp).
void bind_kernels(py::module_& m);
/// RoPE's options from Python's theta and scaling dict (factor, low_freq_factor,
/// high_freq_factor, original_context_length; TypeError naming `what` for another key).
RopeOptions rope_options(double theta, const std::optional<py::dict>& scaling,
                         const std::string& what);
/// PagedKVCache (book_module_bindings.cpp's companion, paged_cache_bindings.cpp).
void bind_paged_cache(py::module_& m);
/// llm_utils._core.dist, in builds with MPI (dist_bindings.cpp).
void bind_dist(py::module_& m);

/// A module built by its constructor, then set to the dtype the keyword asked for ("float32",
/// "fp32", "bfloat16" or "bf16"; ValueError otherwise).
template <typename T, typename... Args>
std::unique_ptr<T> make_in_dtype(const std::string& dtype, Args&&... args) {
  const llm_utils::DType parsed = parse_dtype(dtype);  // before the constructor draws
  auto module = std::make_unique<T>(std::forward<Args>(args)...);
  module->set_dtype(parsed);
  return module;
}

}  // namespace llm_utils::python

namespace pybind11::detail {
template <typename Tag>
struct type_caster<llm_utils::python::Typed<Tag>> {
  PYBIND11_TYPE_CASTER(llm_utils::python::Typed<Tag>, Tag::name);
  bool load(handle src, bool /*convert*/) {
    value.obj = reinterpret_borrow<object>(src);
    return true;
  }
  static handle cast(const llm_utils::python::Typed<Tag>& v, return_value_policy, handle) {
    return v.obj.inc_ref();
  }
};
}  // namespace pybind11::detail
