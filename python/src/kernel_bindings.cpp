// llm_utils._core.kernels: the attention kernels of attention.hpp and rope.hpp on numpy arrays,
// read and written in place where they can be (so that llm_utils.torch hands torch tensors'
// memory straight to them). The pure-Python llm_utils.kernels re-exports them.

#include <algorithm>
#include <cmath>
#include <initializer_list>
#include <limits>
#include <optional>
#include <span>
#include <string>
#include <tuple>
#include <utility>
#include <vector>

#include "bindings.hpp"
#include "llm_utils/attention.hpp"
#include "llm_utils/rope.hpp"

namespace llm_utils::python {
namespace {

// An array the kernels read or write in place: float32, or bfloat16 as its 16-bit patterns
// (numpy has no bfloat16: uint16 or int16 arrays, e.g. torch_tensor.view(torch.int16).numpy()).
struct KernelArray {
  py::array array;  // keeps the memory alive
  bool present = false;
  bool bf16 = false;
  Shape shape, strides;  // strides in elements

  bool given() const { return present; }
  ConstTensorView f32() const { return {static_cast<const float*>(array.data()), shape, strides}; }
  TensorView f32_mut() { return {static_cast<float*>(array.mutable_data()), shape, strides}; }
  ConstBFloat16View b16() const {
    return {static_cast<const bfloat16*>(array.data()), shape, strides};
  }
  BFloat16View b16_mut() { return {static_cast<bfloat16*>(array.mutable_data()), shape, strides}; }
};

// numpy's byte order codes: '=' native, '|' not applicable, '<' / '>' explicit.
bool native_order(const py::dtype& d) {
  const char order = d.byteorder();
  return order == '=' || order == '|' || order == '<';  // x86-64 is little-endian
}

bool is_bf16_bits(const py::array& a) {
  return (a.dtype().kind() == 'u' || a.dtype().kind() == 'i') && a.itemsize() == 2 &&
         native_order(a.dtype());
}

// float32 in native byte order, whatever dtype object describes it (an unpickled array's is not
// numpy's shared one).
bool is_float32(const py::array& a) {
  return a.dtype().kind() == 'f' && a.itemsize() == 4 && native_order(a.dtype());
}

KernelArray wrap(py::array a, const std::string& what) {
  KernelArray k;
  k.bf16 = is_bf16_bits(a);
  const int64_t item = k.bf16 ? 2 : 4;
  for (py::ssize_t i = 0; i < a.ndim(); ++i) {
    if (a.strides(i) % item != 0) {
      throw py::value_error(what + ": strides must be whole elements, got " +
                            std::to_string(a.strides(i)) + " bytes");
    }
    k.shape.push_back(a.shape(i));
    k.strides.push_back(a.strides(i) / item);
  }
  k.array = std::move(a);
  k.present = true;
  return k;
}

// An input: a float32 or bfloat16-bits array as it is (any strides), anything else converted
// to float32 (a copy).
KernelArray input(py::handle obj, const std::string& what) {
  if (py::isinstance<py::array>(obj)) {
    py::array a = py::reinterpret_borrow<py::array>(obj);
    if (is_float32(a) || is_bf16_bits(a)) return wrap(a, what);
  }
  return wrap(as_float32(obj, what), what);
}

// An output the caller gave (written in place): a writable float32 or bfloat16-bits array.
KernelArray output(py::handle obj, const std::string& what, bool bf16) {
  if (!py::isinstance<py::array>(obj)) throw py::type_error(what + ": expected a numpy array");
  py::array a = py::reinterpret_borrow<py::array>(obj);
  if (!a.writeable()) throw py::value_error(what + ": the array is read-only");
  const bool ok = bf16 ? is_bf16_bits(a) : is_float32(a);
  if (!ok) {
    throw py::type_error(what + ": expected " +
                         (bf16 ? std::string("uint16 bfloat16 bits") : std::string("float32")) +
                         " as the inputs are, got " + py::str(a.dtype()).cast<std::string>());
  }
  return wrap(a, what);
}

// A new output array of the given shape.
KernelArray fresh(const Shape& shape, bool bf16) {
  if (bf16) return wrap(py::array_t<uint16_t>(shape), "");
  return wrap(py::array_t<float>(shape), "");
}

KernelArray output_or_fresh(py::handle obj, const std::string& what, const Shape& shape,
                            bool bf16) {
  return obj.is_none() ? fresh(shape, bf16) : output(obj, what, bf16);
}

// The options of one call and the arrays they point into.
struct Options {
  AttentionOptions o;
  KernelArray mask, slopes, sinks;
};

// attn_mask: float added to the scaled scores, or bool where True = may attend (SDPA's
// convention), turned into 0 / -inf.
KernelArray mask_array(py::handle obj, const std::string& fn) {
  if (obj.is_none()) return {};
  py::array a = py::module_::import("numpy").attr("asarray")(obj);
  if (a.dtype().kind() == 'b') {
    py::object np = py::module_::import("numpy");
    const py::object zero = np.attr("float32")(0.0), hidden = np.attr("float32")(-INFINITY);
    a = np.attr("where")(a, zero, hidden);  // float32 throughout, no float64 temporary
  }
  KernelArray m = input(a, fn + ": attn_mask");
  if (m.bf16) throw py::type_error(fn + ": attn_mask must be float32 or bool");
  return m;
}

// The kernel options from the keyword arguments llm_utils.kernels passes on as a dict: causal,
// scale, query_offset, attn_mask, window_left, softcap, alibi_slopes, sinks, backend (each
// optional). An unknown key is a TypeError.
Options options_of(const std::string& fn, const py::dict& kw) {
  static const char* const known[] = {"causal",       "scale",       "query_offset",
                                      "attn_mask",    "window_left", "softcap",
                                      "alibi_slopes", "sinks",       "backend"};
  for (const auto& item : kw) {
    const std::string key = py::str(item.first);
    if (std::find(std::begin(known), std::end(known), key) == std::end(known)) {
      throw py::type_error(fn + ": unexpected option '" + key + "'");
    }
  }
  const auto get = [&](const char* key) -> py::object {
    return kw.contains(key) ? py::object(kw[key]) : py::object(py::none());
  };
  Options r;
  if (!get("causal").is_none()) r.o.causal = get("causal").cast<bool>();
  if (!get("query_offset").is_none()) r.o.query_offset = get("query_offset").cast<int64_t>();
  if (!get("scale").is_none()) {
    // scale multiplies the scores, as SDPA's; the kernels divide by its inverse.
    const double scale = get("scale").cast<double>();
    if (!(scale > 0.0 && std::isfinite(scale))) {
      throw py::value_error(fn + ": scale must be positive and finite, got " +
                            std::to_string(scale));
    }
    r.o.scale_divisor = static_cast<float>(1.0 / scale);
  }
  r.mask = mask_array(get("attn_mask"), fn);
  if (r.mask.given()) r.o.additive_mask = r.mask.f32();
  if (!get("window_left").is_none()) r.o.window_left = get("window_left").cast<int64_t>();
  if (!get("softcap").is_none()) r.o.softcap = get("softcap").cast<float>();
  for (const auto& [key, target, where] : {std::tuple{"alibi_slopes", &r.slopes, &r.o.alibi_slopes},
                                           std::tuple{"sinks", &r.sinks, &r.o.sinks}}) {
    if (get(key).is_none()) continue;
    *target = wrap(as_float32(get(key), fn + ": " + key), fn + ": " + key);
    *where = target->f32();
  }
  const py::object backend = get("backend");
  if (py::isinstance<py::str>(backend)) {
    try {
      r.o.backend = parse_backend(backend.cast<std::string>());
    } catch (const ArgumentError& e) {
      throw ArgumentError(fn + ": " + e.what());
    }
  } else if (!backend.is_none()) {
    r.o.backend = backend.cast<Backend>();
  }
  return r;
}

// Every input of one call in the same dtype; TypeError naming the odd one otherwise.
void same_dtype(const std::string& fn,
                std::initializer_list<std::pair<const char*, const KernelArray*>> arrays) {
  const bool bf16 = arrays.begin()->second->bf16;
  for (const auto& [name, a] : arrays) {
    if (a->given() && a->bf16 != bf16) {
      throw py::type_error(fn + ": " + name + " is " + (a->bf16 ? "bfloat16" : "float32") +
                           " but q is " + (bf16 ? "bfloat16" : "float32") +
                           " (pass every tensor in one dtype)");
    }
  }
}

// q.shape[:-1] + tail.
Shape leading_and(const std::string& fn, const KernelArray& q, std::vector<int64_t> tail) {
  if (q.shape.size() < 2) {
    throw py::value_error(fn + ": q must be (..., N, d), got shape " + shape_to_string(q.shape));
  }
  Shape out(q.shape.begin(), q.shape.end() - 1);
  out.insert(out.end(), tail.begin(), tail.end());
  return out;
}

int64_t last_dim(const std::string& fn, const char* name, const KernelArray& a, int64_t from_end) {
  if (static_cast<int64_t>(a.shape.size()) < from_end) {
    throw py::value_error(fn + ": " + name + " must have at least " + std::to_string(from_end) +
                          " dimensions, got shape " + shape_to_string(a.shape));
  }
  return a.shape[a.shape.size() - static_cast<size_t>(from_end)];
}

py::tuple forward(py::handle q_obj, py::handle k_obj, py::handle v_obj, const py::dict& kw,
                  py::handle out_obj, py::handle lse_obj) {
  const std::string fn = "attention_forward";
  const KernelArray q = input(q_obj, fn + ": q"), k = input(k_obj, fn + ": k"),
                    v = input(v_obj, fn + ": v");
  same_dtype(fn, {{"q", &q}, {"k", &k}, {"v", &v}});
  const Options o = options_of(fn, kw);
  KernelArray out =
      output_or_fresh(out_obj, fn + ": out", leading_and(fn, q, {last_dim(fn, "v", v, 1)}), q.bf16);
  KernelArray lse = output_or_fresh(lse_obj, fn + ": lse", leading_and(fn, q, {}), false);
  {
    py::gil_scoped_release release;
    if (q.bf16) {
      attention_forward(q.b16(), k.b16(), v.b16(), out.b16_mut(), lse.f32_mut(), o.o);
    } else {
      attention_forward(q.f32(), k.f32(), v.f32(), out.f32_mut(), lse.f32_mut(), o.o);
    }
  }
  return py::make_tuple(out.array, lse.array);
}

py::tuple backward(py::handle q_obj, py::handle k_obj, py::handle v_obj, py::handle out_obj,
                   py::handle lse_obj, py::handle dout_obj, const py::dict& kw, bool need_dq,
                   bool need_dk, py::handle dq_obj, py::handle dk_obj, py::handle dv_obj) {
  const std::string fn = "attention_backward";
  const KernelArray q = input(q_obj, fn + ": q"), k = input(k_obj, fn + ": k"),
                    v = input(v_obj, fn + ": v"), out = input(out_obj, fn + ": out"),
                    lse = input(lse_obj, fn + ": lse"), dout = input(dout_obj, fn + ": dout");
  same_dtype(fn, {{"q", &q}, {"k", &k}, {"v", &v}, {"out", &out}, {"dout", &dout}});
  if (lse.bf16) throw py::type_error(fn + ": lse must be float32");
  const Options o = options_of(fn, kw);
  KernelArray dq, dk;
  if (need_dq) dq = output_or_fresh(dq_obj, fn + ": dq", q.shape, q.bf16);
  if (need_dk) dk = output_or_fresh(dk_obj, fn + ": dk", k.shape, q.bf16);
  KernelArray dv = output_or_fresh(dv_obj, fn + ": dv", v.shape, q.bf16);
  KernelArray dsinks;
  if (o.sinks.given()) dsinks = fresh(o.sinks.shape, false);
  {
    py::gil_scoped_release release;
    const TensorView ds = dsinks.given() ? dsinks.f32_mut() : TensorView();
    if (q.bf16) {
      attention_backward(q.b16(), k.b16(), v.b16(), out.b16(), lse.f32(), dout.b16(),
                         dq.given() ? dq.b16_mut() : BFloat16View(),
                         dk.given() ? dk.b16_mut() : BFloat16View(), dv.b16_mut(), ds, o.o);
    } else {
      attention_backward(q.f32(), k.f32(), v.f32(), out.f32(), lse.f32(), dout.f32(),
                         dq.given() ? dq.f32_mut() : TensorView(),
                         dk.given() ? dk.f32_mut() : TensorView(), dv.f32_mut(), ds, o.o);
    }
  }
  const auto or_none = [](const KernelArray& a) {
    return a.given() ? py::object(a.array) : py::none();
  };
  return py::make_tuple(or_none(dq), or_none(dk), dv.array, or_none(dsinks));
}

py::array probabilities(py::handle q_obj, py::handle k_obj, py::handle lse_obj,
                        const py::dict& kw) {
  const std::string fn = "attention_probabilities";
  const KernelArray q = input(q_obj, fn + ": q"), k = input(k_obj, fn + ": k"),
                    lse = input(lse_obj, fn + ": lse");
  same_dtype(fn, {{"q", &q}, {"k", &k}});
  if (lse.bf16) throw py::type_error(fn + ": lse must be float32");
  const Options o = options_of(fn, kw);
  KernelArray probs = fresh(leading_and(fn, q, {last_dim(fn, "k", k, 2)}), false);
  {
    py::gil_scoped_release release;
    if (q.bf16) {
      attention_probabilities(q.b16(), k.b16(), lse.f32(), probs.f32_mut(), o.o);
    } else {
      attention_probabilities(q.f32(), k.f32(), lse.f32(), probs.f32_mut(), o.o);
    }
  }
  return probs.array;
}

// A float32 input (the packed and paged kernels have no bfloat16 form).
KernelArray float_input(py::handle obj, const std::string& what) {
  KernelArray a = input(obj, what);
  if (a.bf16) throw py::type_error(what + ": the packed and paged kernels take float32 only");
  return a;
}

py::tuple forward_varlen(py::handle q_obj, py::handle k_obj, py::handle v_obj,
                         const std::vector<int64_t>& cu_q, const std::vector<int64_t>& cu_k,
                         const py::dict& kw) {
  const std::string fn = "attention_forward_varlen";
  const KernelArray q = float_input(q_obj, fn + ": q"), k = float_input(k_obj, fn + ": k"),
                    v = float_input(v_obj, fn + ": v");
  const Options o = options_of(fn, kw);
  const int64_t t_q = last_dim(fn, "q", q, 3), heads = last_dim(fn, "q", q, 2);
  KernelArray out = fresh({t_q, heads, last_dim(fn, "v", v, 1)}, false);
  KernelArray lse = fresh({heads, t_q}, false);
  {
    py::gil_scoped_release release;
    attention_forward_varlen(q.f32(), k.f32(), v.f32(), cu_q, cu_k, out.f32_mut(), lse.f32_mut(),
                             o.o);
  }
  return py::make_tuple(out.array, lse.array);
}

py::tuple backward_varlen(py::handle q_obj, py::handle k_obj, py::handle v_obj,
                          const std::vector<int64_t>& cu_q, const std::vector<int64_t>& cu_k,
                          py::handle out_obj, py::handle lse_obj, py::handle dout_obj,
                          const py::dict& kw) {
  const std::string fn = "attention_backward_varlen";
  const KernelArray q = float_input(q_obj, fn + ": q"), k = float_input(k_obj, fn + ": k"),
                    v = float_input(v_obj, fn + ": v"), out = float_input(out_obj, fn + ": out"),
                    lse = float_input(lse_obj, fn + ": lse"),
                    dout = float_input(dout_obj, fn + ": dout");
  const Options o = options_of(fn, kw);
  KernelArray dq = fresh(q.shape, false), dk = fresh(k.shape, false), dv = fresh(v.shape, false);
  KernelArray dsinks;
  if (o.sinks.given()) dsinks = fresh(o.sinks.shape, false);
  {
    py::gil_scoped_release release;
    attention_backward_varlen(q.f32(), k.f32(), v.f32(), cu_q, cu_k, out.f32(), lse.f32(),
                              dout.f32(), dq.f32_mut(), dk.f32_mut(), dv.f32_mut(),
                              dsinks.given() ? dsinks.f32_mut() : TensorView(), o.o);
  }
  return py::make_tuple(dq.array, dk.array, dv.array,
                        dsinks.given() ? py::object(dsinks.array) : py::none());
}

py::tuple forward_paged(
    py::handle q_obj, py::handle k_pages_obj, py::handle v_pages_obj,
    const py::array_t<int64_t, py::array::c_style | py::array::forcecast>& table,
    const std::vector<int64_t>& seqlens_k, const std::vector<int64_t>& cu_q, const py::dict& kw) {
  const std::string fn = "attention_forward_paged";
  const KernelArray q = float_input(q_obj, fn + ": q"),
                    k_pages = float_input(k_pages_obj, fn + ": k_pages"),
                    v_pages = float_input(v_pages_obj, fn + ": v_pages");
  if (table.ndim() != 2) {
    throw py::value_error(fn + ": block_table must be (sequences, pages_per_sequence), got " +
                          std::to_string(table.ndim()) + " dimensions");
  }
  const Options o = options_of(fn, kw);
  const int64_t t_q = last_dim(fn, "q", q, 3), heads = last_dim(fn, "q", q, 2);
  KernelArray out = fresh({t_q, heads, last_dim(fn, "v_pages", v_pages, 1)}, false);
  KernelArray lse = fresh({heads, t_q}, false);
  const PagedKeys kv{k_pages.f32(), v_pages.f32(),
                     std::span<const int64_t>(table.data(), static_cast<size_t>(table.size())),
                     table.shape(1), seqlens_k};
  {
    py::gil_scoped_release release;
    attention_forward_paged(q.f32(), kv, cu_q, out.f32_mut(), lse.f32_mut(), o.o);
  }
  return py::make_tuple(out.array, lse.array);
}

// rope_forward / rope_backward on a writable float32 array, in place; returns it.
py::object rope_in_place(py::handle x_obj, const RopeTable& table, int64_t first_position,
                         bool inverse) {
  const std::string fn = inverse ? "rope_backward" : "rope_forward";
  KernelArray x = output(x_obj, fn + ": x", false);
  {
    py::gil_scoped_release release;
    if (inverse) {
      rope_backward(x.f32_mut(), table, first_position);
    } else {
      rope_forward(x.f32_mut(), table, first_position);
    }
  }
  return x.array;
}

}  // namespace

RopeOptions rope_options(double theta, const std::optional<py::dict>& scaling,
                         const std::string& what) {
  RopeOptions o;
  o.theta = theta;
  if (!scaling) return o;
  RopeScaling s;
  for (const auto& item : *scaling) {
    const std::string key = py::str(item.first);
    if (key == "factor") {
      s.factor = item.second.cast<double>();
    } else if (key == "low_freq_factor") {
      s.low_freq_factor = item.second.cast<double>();
    } else if (key == "high_freq_factor") {
      s.high_freq_factor = item.second.cast<double>();
    } else if (key == "original_context_length") {
      s.original_context_length = item.second.cast<int64_t>();
    } else {
      throw py::type_error(what + ": unexpected key '" + key +
                           "' (factor, low_freq_factor, high_freq_factor, "
                           "original_context_length)");
    }
  }
  o.scaling = s;
  return o;
}

void bind_kernels(py::module_& parent) {
  py::module_ m = parent.def_submodule(
      "kernels", "The attention kernels (attention.hpp) on numpy arrays; see llm_utils.kernels.");
  m.def("forward", &forward, py::arg("q"), py::arg("k"), py::arg("v"), py::arg("options"),
        py::arg("out") = py::none(), py::arg("lse") = py::none());
  m.def("backward", &backward, py::arg("q"), py::arg("k"), py::arg("v"), py::arg("out"),
        py::arg("lse"), py::arg("dout"), py::arg("options"), py::arg("need_dq") = true,
        py::arg("need_dk") = true, py::arg("dq") = py::none(), py::arg("dk") = py::none(),
        py::arg("dv") = py::none());
  m.def("probabilities", &probabilities, py::arg("q"), py::arg("k"), py::arg("lse"),
        py::arg("options"));
  m.def("forward_varlen", &forward_varlen, py::arg("q"), py::arg("k"), py::arg("v"),
        py::arg("cu_seqlens_q"), py::arg("cu_seqlens_k"), py::arg("options"));
  m.def("backward_varlen", &backward_varlen, py::arg("q"), py::arg("k"), py::arg("v"),
        py::arg("cu_seqlens_q"), py::arg("cu_seqlens_k"), py::arg("out"), py::arg("lse"),
        py::arg("dout"), py::arg("options"));
  m.def("forward_paged", &forward_paged, py::arg("q"), py::arg("k_pages"), py::arg("v_pages"),
        py::arg("block_table"), py::arg("seqlens_k"), py::arg("cu_seqlens_q"), py::arg("options"));

  py::class_<RopeTable>(m, "RopeTable", "cos and sin of RoPE's angles (llm_utils/rope.hpp).")
      .def(py::init([](int64_t head_dim, int64_t max_positions, double theta,
                       std::optional<py::dict> scaling) {
             return RopeTable(head_dim, max_positions,
                              rope_options(theta, scaling, "RopeTable: scaling"));
           }),
           py::arg("head_dim"), py::arg("max_positions"), py::arg("theta") = 10000.0,
           py::arg("scaling") = py::none())
      .def_property_readonly("head_dim", &RopeTable::head_dim)
      .def_property_readonly("max_positions", &RopeTable::max_positions)
      .def_property_readonly("theta", [](const RopeTable& t) { return t.options().theta; })
      .def_property_readonly("inv_freq", [](const RopeTable& t) {
        return copy_to_numpy(
            ConstTensorView(t.inv_freq().data(), {static_cast<int64_t>(t.inv_freq().size())}));
      });
  m.def(
      "rope_forward",
      [](py::handle x, const RopeTable& t, int64_t first) {
        return rope_in_place(x, t, first, false);
      },
      py::arg("x"), py::arg("table"), py::arg("first_position") = 0);
  m.def(
      "rope_backward",
      [](py::handle x, const RopeTable& t, int64_t first) {
        return rope_in_place(x, t, first, true);
      },
      py::arg("x"), py::arg("table"), py::arg("first_position") = 0);
  m.def(
      "alibi_slopes", [](int64_t heads) { return to_numpy(alibi_slopes(heads)); },
      py::arg("heads"));
}

}  // namespace llm_utils::python
