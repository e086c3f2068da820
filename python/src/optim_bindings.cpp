// torch.optim.SGD and torch.optim.AdamW over the Parameters of modules: PyTorch's formulas,
// defaults and checks, from the library.

#include <memory>
#include <string>
#include <utility>
#include <vector>

#include "bindings.hpp"
#include "llm_utils/nn/optim.hpp"

namespace llm_utils::python {
namespace {

// The library's optimizers hold ParameterRefs, which keep the parameters alive; `params` keeps
// the Python objects they came from, for the `params` attribute.
template <typename Optimizer>
struct PyOptimizer {
  py::list params;
  std::unique_ptr<Optimizer> impl;
};

NamedParameters collect(py::iterable iterable, const char* who, py::list& keep) {
  NamedParameters out;
  for (py::handle item : iterable) {
    if (py::isinstance<py::dict>(item)) {
      throw py::type_error(std::string(who) +
                           ": parameter groups (dicts) are not supported; pass "
                           "module.parameters()");
    }
    if (!py::isinstance<ParameterRef>(item)) {
      throw py::type_error(std::string(who) +
                           ": params must be Parameters, as module.parameters() yields, got " +
                           py::repr(py::type::handle_of(item)).cast<std::string>());
    }
    const ParameterRef p = item.cast<ParameterRef>();
    for (const auto& entry : out) {
      if (entry.second.same_as(p)) {
        throw py::value_error(std::string(who) + ": a parameter appears more than once");
      }
    }
    out.emplace_back(std::to_string(out.size()), p);
    keep.append(item);
  }
  // PyTorch's message.
  if (out.empty()) throw py::value_error("optimizer got an empty parameter list");
  return out;
}

template <typename Optimizer>
void bind_common(py::class_<PyOptimizer<Optimizer>>& cls) {
  using Self = PyOptimizer<Optimizer>;
  cls.def(
         "step",
         [](Self& self, py::object closure) {
           py::object loss = py::none();
           if (!closure.is_none()) loss = closure();
           py::gil_scoped_release release;
           self.impl->step();
           return loss;
         },
         py::arg("closure") = py::none(),
         "One update of every parameter that has a gradient (parameters whose grad is None are\n"
         "skipped entirely, weight decay included, as PyTorch). ``closure``, if given, is called\n"
         "first and its result returned.")
      .def(
          "zero_grad", [](Self& self, bool set_to_none) { self.impl->zero_grad(set_to_none); },
          py::arg("set_to_none") = true,
          "Clears the gradients of the optimizer's parameters: to None by default, else zeros.")
      .def_property_readonly(
          "params", [](const Self& self) { return py::list(self.params); },
          "The parameters this optimizer updates, in order.");
}

}  // namespace

void bind_optim(py::module_& m) {
  using PySGD = PyOptimizer<SGD>;
  py::class_<PySGD> sgd(m, "SGD", R"doc(
``torch.optim.SGD``: stochastic gradient descent with optional momentum, dampening, Nesterov
momentum and weight decay; PyTorch's update formulas and checks.

Example::

    opt = llm_utils.optim.SGD(module.parameters(), lr=0.1, momentum=0.9)
    opt.zero_grad(); module(x); module.backward(g); opt.step()
)doc");
  sgd.def(py::init([](py::iterable params, double lr, double momentum, double dampening,
                      double weight_decay, bool nesterov, bool maximize) {
            auto self = std::make_unique<PySGD>();
            const NamedParameters list = collect(params, "SGD", self->params);
            self->impl = std::make_unique<SGD>(list, SGDOptions{.lr = lr,
                                                                .momentum = momentum,
                                                                .dampening = dampening,
                                                                .weight_decay = weight_decay,
                                                                .nesterov = nesterov,
                                                                .maximize = maximize});
            return self;
          }),
          py::arg("params"), py::arg("lr"), py::arg("momentum") = 0.0, py::arg("dampening") = 0.0,
          py::arg("weight_decay") = 0.0, py::arg("nesterov") = false, py::kw_only(),
          py::arg("maximize") = false,
          "ValueError on lr < 0, momentum < 0, weight_decay < 0, or nesterov without momentum\n"
          "and zero dampening, as PyTorch.")
      .def_property_readonly(
          "defaults",
          [](const PySGD& self) {
            const SGDOptions& o = self.impl->options();
            py::dict d;
            d["lr"] = o.lr;
            d["momentum"] = o.momentum;
            d["dampening"] = o.dampening;
            d["weight_decay"] = o.weight_decay;
            d["nesterov"] = o.nesterov;
            d["maximize"] = o.maximize;
            return d;
          },
          "The hyperparameters, as a dict (a copy: fixed at construction).")
      .def("__repr__", [](const PySGD& self) {
        const SGDOptions& o = self.impl->options();
        return "SGD(lr=" + py::repr(py::float_(o.lr)).cast<std::string>() +
               ", momentum=" + py::repr(py::float_(o.momentum)).cast<std::string>() +
               ", dampening=" + py::repr(py::float_(o.dampening)).cast<std::string>() +
               ", weight_decay=" + py::repr(py::float_(o.weight_decay)).cast<std::string>() +
               ", nesterov=" + (o.nesterov ? "True" : "False") +
               ", maximize=" + (o.maximize ? "True" : "False") + ")";
      });
  bind_common(sgd);

  using PyAdamW = PyOptimizer<AdamW>;
  py::class_<PyAdamW> adamw(m, "AdamW", R"doc(
``torch.optim.AdamW``: Adam with decoupled weight decay, optionally AMSGrad; PyTorch's update
formulas, defaults and checks.

Example::

    opt = llm_utils.optim.AdamW(module.parameters(), lr=1e-2)
    for _ in range(100):
        opt.zero_grad(); y = module(x); module.backward(2 * (y - target)); opt.step()
)doc");
  adamw
      .def(py::init([](py::iterable params, double lr, std::pair<double, double> betas, double eps,
                       double weight_decay, bool amsgrad, bool maximize) {
             auto self = std::make_unique<PyAdamW>();
             const NamedParameters list = collect(params, "AdamW", self->params);
             self->impl = std::make_unique<AdamW>(list, AdamWOptions{.lr = lr,
                                                                     .beta1 = betas.first,
                                                                     .beta2 = betas.second,
                                                                     .eps = eps,
                                                                     .weight_decay = weight_decay,
                                                                     .amsgrad = amsgrad,
                                                                     .maximize = maximize});
             return self;
           }),
           py::arg("params"), py::arg("lr") = 1e-3, py::arg("betas") = std::make_pair(0.9, 0.999),
           py::arg("eps") = 1e-8, py::arg("weight_decay") = 1e-2, py::arg("amsgrad") = false,
           py::kw_only(), py::arg("maximize") = false,
           "ValueError on lr < 0, eps < 0, betas outside [0, 1) or weight_decay < 0, as PyTorch.")
      .def_property_readonly(
          "defaults",
          [](const PyAdamW& self) {
            const AdamWOptions& o = self.impl->options();
            py::dict d;
            d["lr"] = o.lr;
            d["betas"] = py::make_tuple(o.beta1, o.beta2);
            d["eps"] = o.eps;
            d["weight_decay"] = o.weight_decay;
            d["amsgrad"] = o.amsgrad;
            d["maximize"] = o.maximize;
            return d;
          },
          "The hyperparameters, as a dict (a copy: fixed at construction).")
      .def("__repr__", [](const PyAdamW& self) {
        const AdamWOptions& o = self.impl->options();
        const auto num = [](double v) { return py::repr(py::float_(v)).cast<std::string>(); };
        return "AdamW(lr=" + num(o.lr) + ", betas=(" + num(o.beta1) + ", " + num(o.beta2) +
               "), eps=" + num(o.eps) + ", weight_decay=" + num(o.weight_decay) +
               ", amsgrad=" + (o.amsgrad ? "True" : "False") +
               ", maximize=" + (o.maximize ? "True" : "False") + ")";
      });
  bind_common(adamw);
}

}  // namespace llm_utils::python
