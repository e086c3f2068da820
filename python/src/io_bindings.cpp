// safetensors files, named as the safetensors package names them (save_file / load_file), on
// dicts of float32 arrays. npy needs no binding: numpy's own np.save / np.load are the API.

#include <string>
#include <utility>

#include "bindings.hpp"
#include "llm_utils/io/safetensors.hpp"

namespace llm_utils::python {
namespace {

StateDict tensors_from(py::handle mapping) {
  if (!py::hasattr(mapping, "keys")) {
    throw py::type_error("save_file: expected a mapping of name -> array, got " +
                         py::repr(py::type::handle_of(mapping)).cast<std::string>());
  }
  const py::dict d(py::reinterpret_borrow<py::object>(mapping));  // any Mapping
  StateDict out;
  for (auto [key, value] : d) {
    if (!py::isinstance<py::str>(key)) {
      throw py::type_error("save_file: tensor names must be str, got " +
                           py::repr(key).cast<std::string>());
    }
    const std::string name = key.cast<std::string>();
    const FloatArray a = as_float32(value, "save_file: '" + name + "'");
    out.insert(name, Tensor::from_view(view_of(a)));
  }
  return out;
}

io::Metadata metadata_from(py::handle mapping) {
  io::Metadata out;
  if (mapping.is_none()) return out;
  const py::dict d(py::reinterpret_borrow<py::object>(mapping));
  for (auto [key, value] : d) {
    if (!py::isinstance<py::str>(key) || !py::isinstance<py::str>(value)) {
      throw py::type_error("save_file: metadata must map str to str, got " +
                           py::repr(key).cast<std::string>() + ": " +
                           py::repr(value).cast<std::string>());
    }
    out[key.cast<std::string>()] = value.cast<std::string>();
  }
  return out;
}

}  // namespace

void bind_io(py::module_& m) {
  m.def(
      "save_file",
      [](const ArrayMapping& tensors, const PathLike& filename, const StrMapping& metadata) {
        const StateDict sd = tensors_from(tensors.obj);
        const io::Metadata meta = metadata_from(metadata.obj);
        const std::string path = fspath(filename.obj);
        py::gil_scoped_release release;
        io::save_safetensors(path, sd, meta);
      },
      py::arg("tensors"), py::arg("filename"), py::arg("metadata") = py::none(), R"doc(
Writes a dict of arrays (name -> array-like, stored as F32) to a safetensors file, atomically
(a temporary file renamed into place), as ``safetensors.numpy.save_file``. ``metadata`` maps
str to str (``{"format": "pt"}`` marks a PyTorch state dict). Files written here load with
``safetensors.torch.load_file``.

Example::

    save_file(module.state_dict(), "w.safetensors", metadata={"format": "pt"})

Raises ValueError for a tensor named ``__metadata__`` or a name that is not valid UTF-8,
OSError when the file cannot be written.
)doc");

  m.def(
      "load_file",
      [](const PathLike& filename) {
        const std::string path = fspath(filename.obj);
        StateDict sd;
        {
          py::gil_scoped_release release;
          sd = io::load_safetensors(path);
        }
        py::dict out;
        for (const auto& [name, t] : sd) out[py::str(name)] = copy_to_numpy(t);
        return out;
      },
      py::arg("filename"), R"doc(
Reads every tensor of a safetensors file into a dict of float32 arrays, in the file's order, as
``safetensors.numpy.load_file``. F32 tensors only.

Example::

    module.load_state_dict(load_file("w.safetensors"))

The file is untrusted: every length, offset, dtype and shape is checked first, and a bad file
raises OSError naming the file and what is wrong (OSError too when it cannot be read).
)doc");

  m.def(
      "load_metadata",
      [](const PathLike& filename) {
        const std::string path = fspath(filename.obj);
        io::Metadata meta;
        {
          py::gil_scoped_release release;
          io::load_safetensors(path, &meta);
        }
        return meta;
      },
      py::arg("filename"),
      "The ``__metadata__`` of a safetensors file as a dict of str (empty when it has none).\n"
      "Validates the whole file as load_file does.");
}

}  // namespace llm_utils::python
