// llm_utils._core.dist (builds with MPI): llm_utils::dist on numpy arrays. The pure-Python
// llm_utils.dist re-exports it; docs/distributed.md explains the algorithms.

#include <memory>
#include <optional>

#include "bindings.hpp"
#include "llm_utils/dist.hpp"
#include "llm_utils/llm_utils.hpp"

namespace llm_utils::python {
namespace {

std::unique_ptr<dist::Environment>& environment() {
  static std::unique_ptr<dist::Environment> env;
  return env;
}

// MPI started on first use and ended at interpreter exit (registered with atexit by init()).
void init_mpi() {
  if (!environment() && !dist::mpi_initialized()) {
    environment() = std::make_unique<dist::Environment>(nullptr, nullptr);
    py::module_::import("atexit").attr("register")(py::cpp_function([] { environment().reset(); }));
  }
}

AttentionOptions options_of(bool causal, std::optional<double> scale, int64_t query_offset,
                            const std::optional<FloatArray>& mask) {
  AttentionOptions o;
  o.causal = causal;
  o.query_offset = query_offset;
  // scale multiplies the scores, as SDPA's; the kernels divide by its inverse.
  if (scale) o.scale_divisor = static_cast<float>(1.0 / *scale);
  if (mask) o.additive_mask = view_of(*mask);
  return o;
}

Shape with_last(const Shape& s, int64_t last) {
  Shape out = s;
  out.back() = last;
  return out;
}

}  // namespace

void bind_dist(py::module_& parent) {
  py::module_ m = parent.def_submodule(
      "dist", "llm_utils::dist: attention over the ranks of an mpirun job (docs/distributed.md).");
  static py::exception<dist::CommError> comm_error(m, "CommError", PyExc_RuntimeError);
  m.def("init", &init_mpi,
        "Starts MPI (MPI_Init_thread) if nobody has; it ends when the interpreter exits. Every "
        "other function here calls it.");

  py::class_<dist::Communicator>(m, "Communicator",
                                 "The ranks of the job (a duplicate of "
                                 "MPI_COMM_WORLD); every wait is bounded.")
      .def_static(
          "world",
          [] {
            init_mpi();
            return dist::Communicator::world();
          },
          "Every rank of the job.")
      .def_property_readonly("rank", &dist::Communicator::rank)
      .def_property_readonly("size", &dist::Communicator::size)
      .def_property("timeout", &dist::Communicator::timeout, &dist::Communicator::set_timeout,
                    "Seconds any wait may last before CommError (default 120, or "
                    "LLM_UTILS_DIST_TIMEOUT).")
      .def(
          "barrier",
          [](const dist::Communicator& c) {
            py::gil_scoped_release release;
            c.barrier();
          },
          "Waits until every rank has called it.")
      .def(
          "allreduce_sum",
          [](const dist::Communicator& c, const ArrayLike& x) {
            Tensor t = Tensor::from_view(view_of(as_float32(x.obj, "allreduce_sum: x")));
            {
              py::gil_scoped_release release;
              c.allreduce_sum({t.data(), static_cast<size_t>(t.numel())});
            }
            return to_numpy(std::move(t));
          },
          py::arg("x"), "x summed over the ranks (float32), on every rank.");

  m.def(
      "shard_sequence",
      [](const ArrayLike& x, int64_t dim, int ranks, int rank, const std::string& layout) {
        return to_numpy(dist::shard_sequence(view_of(as_float32(x.obj, "shard_sequence: x")), dim,
                                             ranks, rank, dist::parse_layout(layout)));
      },
      py::arg("x"), py::arg("dim"), py::arg("ranks"), py::arg("rank"), py::arg("layout") = "zigzag",
      "Rank `rank`'s rows of x along `dim` (layout 'zigzag' or 'contiguous').");
  m.def(
      "gather_sequence",
      [](const dist::Communicator& c, const ArrayLike& x, int64_t dim, const std::string& layout) {
        const FloatArray a = as_float32(x.obj, "gather_sequence: x");
        Tensor whole;
        {
          py::gil_scoped_release release;
          whole = dist::gather_sequence(c, view_of(a), dim, dist::parse_layout(layout));
        }
        return to_numpy(std::move(whole));
      },
      py::arg("comm"), py::arg("x"), py::arg("dim"), py::arg("layout") = "zigzag",
      "Every rank's shard put together, on every rank.");

  m.def(
      "attention_forward",
      [](const dist::Communicator& c, const ArrayLike& q, const ArrayLike& k, const ArrayLike& v,
         bool causal, std::optional<double> scale, int64_t query_offset,
         std::optional<FloatArray> attn_mask, const std::string& strategy,
         const std::string& layout) {
        const FloatArray qa = as_float32(q.obj, "attention_forward: q"),
                         ka = as_float32(k.obj, "attention_forward: k"),
                         va = as_float32(v.obj, "attention_forward: v");
        const ConstTensorView qv = view_of(qa), vv = view_of(va);
        if (qv.dim() < 2 || vv.dim() < 2) {
          throw py::value_error("attention_forward: q, k and v must have rank 2 to 4");
        }
        Tensor out(with_last(qv.shape(), vv.size(-1)));
        Tensor lse(Shape(qv.shape().begin(), qv.shape().end() - 1));
        const AttentionOptions o = options_of(causal, scale, query_offset, attn_mask);
        {
          py::gil_scoped_release release;
          dist::sequence_parallel_forward(dist::parse_strategy(strategy), c, qv, view_of(ka), vv,
                                          out, lse, o, dist::parse_layout(layout));
        }
        return py::make_tuple(to_numpy(std::move(out)), to_numpy(std::move(lse)));
      },
      py::arg("comm"), py::arg("q"), py::arg("k"), py::arg("v"), py::kw_only(),
      py::arg("causal") = false, py::arg("scale") = py::none(), py::arg("query_offset") = 0,
      py::arg("attn_mask") = py::none(), py::arg("strategy") = "ring", py::arg("layout") = "zigzag",
      "This rank's shards of q (.., N_r, d), k, v (.., M_r, d) -> (out, lse) for its rows, as\n"
      "one process on the whole sequence would give. scale multiplies the scores (None:\n"
      "1/sqrt(d)); attn_mask is the whole (N, M) additive mask (or anything that broadcasts to\n"
      "it), the same on every rank. strategy 'ring' or 'ulysses'.");
  m.def(
      "attention_backward",
      [](const dist::Communicator& c, const ArrayLike& q, const ArrayLike& k, const ArrayLike& v,
         const ArrayLike& out, const ArrayLike& lse, const ArrayLike& dout, bool causal,
         std::optional<double> scale, int64_t query_offset, std::optional<FloatArray> attn_mask,
         const std::string& strategy, const std::string& layout) {
        const char* fn = "attention_backward";
        const FloatArray qa = as_float32(q.obj, std::string(fn) + ": q"),
                         ka = as_float32(k.obj, std::string(fn) + ": k"),
                         va = as_float32(v.obj, std::string(fn) + ": v"),
                         oa = as_float32(out.obj, std::string(fn) + ": out"),
                         la = as_float32(lse.obj, std::string(fn) + ": lse"),
                         da = as_float32(dout.obj, std::string(fn) + ": dout");
        Tensor dq(view_of(qa).shape()), dk(view_of(ka).shape()), dv(view_of(va).shape());
        const AttentionOptions o = options_of(causal, scale, query_offset, attn_mask);
        {
          py::gil_scoped_release release;
          dist::sequence_parallel_backward(dist::parse_strategy(strategy), c, view_of(qa),
                                           view_of(ka), view_of(va), view_of(oa), view_of(la),
                                           view_of(da), dq, dk, dv, o, dist::parse_layout(layout));
        }
        return py::make_tuple(to_numpy(std::move(dq)), to_numpy(std::move(dk)),
                              to_numpy(std::move(dv)));
      },
      py::arg("comm"), py::arg("q"), py::arg("k"), py::arg("v"), py::arg("out"), py::arg("lse"),
      py::arg("dout"), py::kw_only(), py::arg("causal") = false, py::arg("scale") = py::none(),
      py::arg("query_offset") = 0, py::arg("attn_mask") = py::none(), py::arg("strategy") = "ring",
      py::arg("layout") = "zigzag",
      "-> (dq, dk, dv) for this rank's shards, from attention_forward's out and lse.");

  m.def(
      "sequence_parallel",
      [](MultiHeadAttention& mha, const dist::Communicator& c, const std::string& strategy,
         const std::string& layout) {
        mha.set_attention_executor(dist::sequence_parallel_executor(
            c, dist::parse_strategy(strategy), dist::parse_layout(layout)));
      },
      py::arg("module"), py::arg("comm"), py::arg("strategy") = "ring",
      py::arg("layout") = "zigzag",
      "Runs the module's attention over the ranks: each rank's forward then takes its tokens\n"
      "(x (B, N_r, d_in), e.g. shard_sequence(x, 1, size, rank)) and backward gives their dx and\n"
      "the rank's share of each gradient (sum them: GradientAverager(..., reduction='sum')).");
  m.def(
      "local", [](MultiHeadAttention& mha) { mha.set_attention_executor(nullptr); },
      py::arg("module"), "Back to this process's kernels.");

  m.def(
      "broadcast_parameters",
      [](const dist::Communicator& c, Module& module, int root) {
        py::gil_scoped_release release;
        dist::broadcast_parameters(c, module.named_parameters(), root);
      },
      py::arg("comm"), py::arg("module"), py::arg("root") = 0,
      "Copies rank `root`'s parameter values to every rank.");
  py::class_<dist::GradientAverager>(m, "GradientAverager",
                                     "Sums or averages a module's gradients over the ranks, in "
                                     "buckets of non-blocking allreduces.")
      .def(py::init([](const dist::Communicator& c, Module& module, const std::string& reduction,
                       int64_t bucket_bytes) {
             if (reduction != "mean" && reduction != "sum") {
               throw py::value_error("GradientAverager: reduction must be 'mean' or 'sum', got '" +
                                     reduction + "'");
             }
             return std::make_unique<dist::GradientAverager>(
                 c, module.named_parameters(),
                 reduction == "sum" ? dist::GradientReduction::sum : dist::GradientReduction::mean,
                 bucket_bytes);
           }),
           py::arg("comm"), py::arg("module"), py::arg("reduction") = "mean",
           py::arg("bucket_bytes") = int64_t{4} << 20, py::keep_alive<1, 3>())
      .def(
          "average",
          [](dist::GradientAverager& a) {
            py::gil_scoped_release release;
            a.average();
          },
          "Starts and finishes the sums; writes the results into the gradients.")
      .def_property_readonly("bucket_count", &dist::GradientAverager::bucket_count);
}

}  // namespace llm_utils::python
