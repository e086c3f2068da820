// Finite-difference gradient check in double: an independent double-precision forward of each
// class, loss L = sum(out * G), central differences, compared with the float32 analytic
// backward. For Linear4/Linear5 the attention weights are held fixed, as the original's frozen
// derived layers do, so the check covers exactly the gradient the original defines.

#include <gtest/gtest.h>

#include <cmath>
#include <map>

#include "test_util.hpp"

namespace llm_utils {
namespace {

using Vec = std::vector<double>;

struct DoubleForward {
  bool bare_matrices;  // SelfAttention_Params: x @ W with W (d_in, d_out)
  int64_t batch, seq, d_in, d_out;
  std::map<std::string, Vec> params;

  // y (rows, d_out) from x (rows, d_in) for projection "W_query" / "W_key" / "W_value".
  Vec project(const Vec& x, const std::string& which) const {
    const int64_t rows = batch * seq;
    Vec y(static_cast<size_t>(rows * d_out), 0.0);
    const Vec& w = params.at(bare_matrices ? which : which + ".weight");
    const auto bias = params.find(which + ".bias");
    for (int64_t r = 0; r < rows; ++r) {
      for (int64_t j = 0; j < d_out; ++j) {
        double acc = bias != params.end() ? bias->second[j] : 0.0;
        for (int64_t i = 0; i < d_in; ++i) {
          acc += x[r * d_in + i] * (bare_matrices ? w[i * d_out + j] : w[j * d_in + i]);
        }
        y[r * d_out + j] = acc;
      }
    }
    return y;
  }

  // L = sum(out * g). With `frozen_probs`, those attention weights replace the computed ones.
  double loss(const Vec& x, const Vec& g, const Vec* frozen_probs, Vec* probs_out) const {
    const Vec q = project(x, "W_query"), k = project(x, "W_key"), v = project(x, "W_value");
    const double divisor = std::sqrt(static_cast<double>(d_out));
    double total = 0.0;
    for (int64_t b = 0; b < batch; ++b) {
      for (int64_t i = 0; i < seq; ++i) {
        Vec p(static_cast<size_t>(seq));
        double row_max = -INFINITY, sum = 0.0;
        for (int64_t j = 0; j < seq; ++j) {
          double s = 0.0;
          for (int64_t c = 0; c < d_out; ++c) {
            s += q[(b * seq + i) * d_out + c] * k[(b * seq + j) * d_out + c];
          }
          p[j] = s / divisor;
          row_max = std::max(row_max, p[j]);
        }
        for (int64_t j = 0; j < seq; ++j) sum += (p[j] = std::exp(p[j] - row_max));
        for (int64_t j = 0; j < seq; ++j) {
          const size_t at = static_cast<size_t>((b * seq + i) * seq + j);
          p[j] = frozen_probs != nullptr ? (*frozen_probs)[at] : p[j] / sum;
          if (probs_out != nullptr) (*probs_out)[at] = p[j];
        }
        for (int64_t c = 0; c < d_out; ++c) {
          double o = 0.0;
          for (int64_t j = 0; j < seq; ++j) o += p[j] * v[(b * seq + j) * d_out + c];
          total += o * g[(b * seq + i) * d_out + c];
        }
      }
    }
    return total;
  }
};

Vec to_double(ConstTensorView t) {
  return Vec(t.data(), t.data() + t.numel());
}

void check_gradients(const std::string& cls) {
  SCOPED_TRACE(cls);
  const int64_t batch = 2, seq = 4, d_in = 3, d_out = 2;
  manual_seed(17);
  auto m = make_self_attention(cls, d_in, d_out, cls != "SelfAttention_Params");
  Generator data(99);
  Tensor x = data.uniform({batch, seq, d_in}, -1.0, 1.0);
  Tensor g = data.uniform({batch, seq, d_out}, -1.0, 1.0);
  m->forward(x);
  Tensor dx = m->backward(g);

  DoubleForward f{cls == "SelfAttention_Params", batch, seq, d_in, d_out, {}};
  for (auto& [name, p] : m->named_parameters()) f.params[name] = to_double(p.data());
  const bool frozen = cls == "SelfAttention_Linear4" || cls == "SelfAttention_Linear5";
  Vec xd = to_double(x), gd = to_double(g);
  Vec probs(static_cast<size_t>(batch * seq * seq));
  f.loss(xd, gd, nullptr, &probs);
  const Vec* fixed = frozen ? &probs : nullptr;

  constexpr double h = 1e-6;
  const auto numeric = [&](double& slot) {
    const double saved = slot;
    slot = saved + h;
    const double up = f.loss(xd, gd, fixed, nullptr);
    slot = saved - h;
    const double down = f.loss(xd, gd, fixed, nullptr);
    slot = saved;
    return (up - down) / (2 * h);
  };
  const auto expect_close = [](double analytic, double num, const std::string& what) {
    EXPECT_NEAR(analytic, num, 1e-4 + 1e-3 * std::fabs(num)) << what;
  };

  for (size_t i = 0; i < xd.size(); ++i) {
    // For Linear4/5 the original's dx flows through the values only, which `fixed` encodes.
    expect_close(dx[static_cast<int64_t>(i)], numeric(xd[i]), "dx[" + std::to_string(i) + "]");
  }
  for (auto& [name, p] : m->named_parameters()) {
    Vec& w = f.params[name];
    if (!p.has_grad()) {
      // No gradient reaches it; with the weights held fixed its true derivative is 0 as well.
      for (double& slot : w) EXPECT_NEAR(numeric(slot), 0.0, 1e-7) << name;
      continue;
    }
    for (size_t i = 0; i < w.size(); ++i) {
      expect_close(p.grad().data()[static_cast<int64_t>(i)], numeric(w[i]),
                   name + "[" + std::to_string(i) + "]");
    }
  }
}

TEST(GradCheck, Params) {
  check_gradients("SelfAttention_Params");
}
TEST(GradCheck, Linear) {
  check_gradients("SelfAttention_Linear");
}
TEST(GradCheck, Linear4) {
  check_gradients("SelfAttention_Linear4");
}
TEST(GradCheck, Linear5) {
  check_gradients("SelfAttention_Linear5");
}

void check_kernel_gradients(Backend backend) {
  // The kernel alone, all three gradients, on a non-square key length.
  SCOPED_TRACE(backend_name(backend));
  const int64_t n = 3, m = 5, d = 4, dv = 2;
  Generator gen(5);
  Tensor q = gen.uniform({n, d}, -1, 1), k = gen.uniform({m, d}, -1, 1),
         v = gen.uniform({m, dv}, -1, 1), go = gen.uniform({n, dv}, -1, 1);
  Tensor out({n, dv}), lse({n}), dq({n, d}), dk({m, d}), dvv({m, dv});
  attention_forward(q, k, v, out, lse, {.backend = backend});
  attention_backward(q, k, v, out, lse, go, dq, dk, dvv, {.backend = backend});
  const auto loss = [&](const Vec& qd, const Vec& kd, const Vec& vd) {
    double total = 0.0;
    for (int64_t i = 0; i < n; ++i) {
      Vec s(m);
      double mx = -INFINITY, sum = 0.0;
      for (int64_t j = 0; j < m; ++j) {
        for (int64_t c = 0; c < d; ++c) s[j] += qd[i * d + c] * kd[j * d + c];
        s[j] /= std::sqrt(double(d));
        mx = std::max(mx, s[j]);
      }
      for (double& e : s) sum += (e = std::exp(e - mx));
      for (int64_t c = 0; c < dv; ++c) {
        double o = 0.0;
        for (int64_t j = 0; j < m; ++j) o += s[j] / sum * vd[j * dv + c];
        total += o * go[i * dv + c];
      }
    }
    return total;
  };
  Vec qd = to_double(q), kd = to_double(k), vd = to_double(v);
  const auto check = [&](Vec& target, const Tensor& analytic, const char* name) {
    for (size_t i = 0; i < target.size(); ++i) {
      const double saved = target[i];
      target[i] = saved + 1e-6;
      const double up = loss(qd, kd, vd);
      target[i] = saved - 1e-6;
      const double down = loss(qd, kd, vd);
      target[i] = saved;
      EXPECT_NEAR(analytic[static_cast<int64_t>(i)], (up - down) / 2e-6, 2e-5) << name << i;
    }
  };
  check(qd, dq, "dq");
  check(kd, dk, "dk");
  check(vd, dvv, "dv");
}

TEST(GradCheck, AttentionKernelInDoubleReference) {
  check_kernel_gradients(Backend::reference);
}
TEST(GradCheck, AttentionKernelInDoubleFlash) {
  check_kernel_gradients(Backend::flash);
}

}  // namespace
}  // namespace llm_utils
