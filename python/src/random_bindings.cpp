// Seeding and drawing (PyTorch's generator, bit for bit), threads, the backend switch, version.

#include <cstdint>
#include <string>

#include "bindings.hpp"
#include "llm_utils/attention.hpp"
#include "llm_utils/cuda.hpp"
#include "llm_utils/random.hpp"
#include "llm_utils/runtime.hpp"
#include "llm_utils/threads.hpp"
#include "llm_utils/version.hpp"

namespace llm_utils::python {
namespace {

// torch.manual_seed takes any int in [-2**63, 2**64); negative seeds wrap around modulo 2**64.
uint64_t to_seed(py::handle seed, const char* where) {
  py::object index = py::reinterpret_steal<py::object>(PyNumber_Index(seed.ptr()));
  if (!index) {
    PyErr_Clear();
    throw py::type_error(std::string(where) + ": seed must be an int, got " +
                         py::str(py::type::handle_of(seed).attr("__name__")).cast<std::string>());
  }
  const unsigned long long u = PyLong_AsUnsignedLongLong(index.ptr());
  if (!PyErr_Occurred()) return u;
  PyErr_Clear();
  const long long s = PyLong_AsLongLong(index.ptr());
  if (!PyErr_Occurred()) return static_cast<uint64_t>(s);
  PyErr_Clear();
  throw py::value_error(std::string(where) + ": seed must be in [-2**63, 2**64), got " +
                        py::str(index).cast<std::string>());
}

}  // namespace

void bind_random(py::module_& m) {
  m.attr("__version__") = kVersion;

  py::class_<Generator>(m, "Generator", R"doc(
A random generator that reproduces PyTorch's CPU generator (``torch.Generator``) bit for bit for
float32 draws: the same seed gives the same numbers as ``torch.rand`` and ``nn.Linear``'s
initialisation.

Not thread-safe: give each thread its own generator.

Example::

    g = llm_utils.Generator(123)      # torch.Generator().manual_seed(123)
    llm_utils.rand(3, 2, generator=g)   # == torch.rand(3, 2, generator=...) on that
    sa = SelfAttention_Linear(3, 2, generator=g)
)doc")
      .def(py::init([](const OptionalSeed& seed) {
             return Generator(seed.obj.is_none() ? Generator::kDefaultSeed
                                                 : to_seed(seed.obj, "Generator"));
           }),
           py::arg("seed") = py::none(),
           "A generator seeded with ``seed`` (default: PyTorch's default seed, 67280421310721).")
      .def(
          "manual_seed",
          [](Generator& g, const Seed& seed) -> Generator& {
            g.manual_seed(to_seed(seed.obj, "manual_seed"));
            return g;  // the same Python object: `reference` finds its registered wrapper
          },
          py::return_value_policy::reference, py::arg("seed"),
          "Re-seeds as ``torch.Generator.manual_seed`` does (only the low 32 bits reach the\n"
          "engine; negative seeds wrap modulo 2**64). Returns the generator.")
      .def("initial_seed", &Generator::initial_seed, "The seed last given to ``manual_seed``.")
      .def("__repr__", [](const Generator& g) {
        return "Generator(seed=" + std::to_string(g.initial_seed()) + ")";
      });

  // The process-wide generator, owned by the library: Python only refers to it.
  m.attr("default_generator") = py::cast(&default_generator(), py::return_value_policy::reference);

  m.def(
      "manual_seed",
      [](const Seed& seed) -> Generator& {
        manual_seed(to_seed(seed.obj, "manual_seed"));
        return default_generator();
      },
      py::return_value_policy::reference, py::arg("seed"), R"doc(
Seeds the default generator, as ``torch.manual_seed(seed)``; returns it.

Modules built afterwards get the same weights as PyTorch's after the same seed::

    llm_utils.manual_seed(123)
    sa = SelfAttention_Params(3, 2)     # == the book's weights
)doc");
  m.def(
      "initial_seed", [] { return default_generator().initial_seed(); },
      "The seed of the default generator, as ``torch.initial_seed()``.");

  m.def(
      "_rand",
      [](const Shape& shape, Generator* generator) {
        Generator& g = generator != nullptr ? *generator : default_generator();
        return to_numpy(g.rand(shape));
      },
      py::arg("shape"), py::arg("generator") = nullptr,
      "Implementation of llm_utils.rand: a float32 array of U[0, 1) draws.");

  // For the tests: what the modules see of an input, to check that no copy is made when the
  // input already is C-contiguous float32.
  m.def(
      "_as_float32", [](const ArrayLike& x) { return as_float32(x.obj, "x"); }, py::arg("x"),
      "The float32 C-contiguous array the modules compute on for input x.");

  m.def("set_num_threads", &set_num_threads, py::arg("n"), R"doc(
Sets how many threads the library's compute uses (n >= 1; default: all cores), as
``torch.set_num_threads``. Process-wide: set it from one thread, between computations. It also
sets OpenBLAS's thread count, which a PyTorch in the same process shares.
)doc");
  m.def("get_num_threads", &get_num_threads,
        "How many threads the library's compute uses, as ``torch.get_num_threads``.");
  m.def("release_cached_memory", &release_cached_memory, R"doc(
Gives back to the system the buffers the fused kernels keep for the calling thread's next call
(packed K and V, the backward's dQ partials; at most 64 MiB per thread), as
``torch.cuda.empty_cache`` does for PyTorch's allocator.
)doc");
  m.def("cached_memory_bytes", &cached_memory_bytes,
        "Bytes the fused kernels' buffer cache holds for the calling thread.");
  m.def("cuda_built", &cuda_built,
        "Whether this build has the CUDA kernels (CMake found a CUDA compiler).");
  m.def("cuda_device_count", &cuda_device_count,
        "CUDA devices this process can use (0 without CUDA, a driver or a device).");
  m.def("cuda_device_description", &cuda_device_description, py::arg("device") = 0,
        "The device as the driver names it, with its compute capability and memory; ValueError "
        "when there is no such device.");

  py::enum_<Backend>(m, "Backend", R"doc(
Which attention kernel a module's forward and backward use:
``reference`` materialises the (N, N) attention matrix with BLAS; ``flash`` is the fused kernel
that never does; ``auto`` picks between those two by shape; ``cuda`` runs the kernels on an
NVIDIA GPU (builds with CUDA; ``cuda_device_count()`` says whether one is there). Modules accept
the enum or its name as a string.
)doc")
      .value("reference", Backend::reference)
      .value("flash", Backend::flash)
      .value("auto", Backend::automatic)
      .value("cuda", Backend::cuda);
}

}  // namespace llm_utils::python
