// The library's exception types as Python's built-in ones, with the same message: callers catch
// ValueError / OSError / RuntimeError as they would from numpy or torch.

#include "bindings.hpp"
#include "llm_utils/error.hpp"

namespace llm_utils::python {

void bind_errors(py::module_& /*m*/) {
  py::register_exception_translator([](std::exception_ptr p) {
    // Most derived first: FormatError is an IoError, and every one of them is an Error.
    try {
      if (p) std::rethrow_exception(p);
    } catch (const IoError& e) {
      PyErr_SetString(PyExc_OSError, e.what());
    } catch (const ArgumentError& e) {
      PyErr_SetString(PyExc_ValueError, e.what());
    } catch (const Error& e) {
      PyErr_SetString(PyExc_RuntimeError, e.what());
    }
  });
}

}  // namespace llm_utils::python
