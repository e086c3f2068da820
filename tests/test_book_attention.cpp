// CausalAttention, MultiHeadAttentionWrapper and MultiHeadAttention (chapter 3.5-3.6 of the
// book) against PyTorch (tests/golden/book_attention.py via make_golden.py) on both kernel
// backends: initial weights bit for bit, outputs, every gradient, state-dict names. Then
// dropout (statistics, scaling, eval(), seeds, backward through the same mask against finite
// differences) and the errors the book's readers hit.

#include <gtest/gtest.h>

#include <filesystem>
#include <functional>
#include <memory>
#include <sstream>

#include "test_util.hpp"

namespace llm_utils {
namespace {

using testing::all_close;
using testing::bit_equal;
using testing::parity;

// The three classes behind one interface, so that each test runs on all of them.
struct AnyModule {
  std::function<Tensor(ConstTensorView)> forward;
  std::function<Tensor(ConstTensorView)> backward;
  std::function<NamedParameters()> named_parameters;
  std::function<StateDict()> state_dict;
  std::function<void(const StateDict&)> load_state_dict;
  std::function<void(Backend)> set_backend;
  std::function<void(bool)> train;
  std::shared_ptr<void> owner;
};

template <typename M>
AnyModule wrap(std::shared_ptr<M> m) {
  AnyModule a;
  a.forward = [m](ConstTensorView x) { return m->forward(x); };
  a.backward = [m](ConstTensorView g) { return m->backward(g); };
  a.named_parameters = [m] { return m->named_parameters(); };
  a.state_dict = [m] { return m->state_dict(); };
  a.load_state_dict = [m](const StateDict& s) { m->load_state_dict(s); };
  a.set_backend = [m](Backend b) { m->set_backend(b); };
  a.train = [m](bool on) { m->train(on); };
  a.owner = m;
  return a;
}

AnyModule build(const std::string& cls, int64_t d_in, int64_t d_out, int64_t context_length,
                double dropout, int64_t num_heads, bool bias, Generator* gen = nullptr) {
  if (cls == "CausalAttention") {
    return wrap(std::make_shared<CausalAttention>(d_in, d_out, context_length, dropout, bias, gen));
  }
  if (cls == "MultiHeadAttentionWrapper") {
    return wrap(std::make_shared<MultiHeadAttentionWrapper>(d_in, d_out, context_length, dropout,
                                                            num_heads, bias, gen));
  }
  return wrap(std::make_shared<MultiHeadAttention>(d_in, d_out, context_length, dropout, num_heads,
                                                   bias, gen));
}

const char* const kClasses[] = {"CausalAttention", "MultiHeadAttentionWrapper",
                                "MultiHeadAttention"};

// ---------------------------------------------------------------- parity with PyTorch

std::vector<std::string> book_cases() {
  std::vector<std::string> names;
  for (const auto& entry : std::filesystem::directory_iterator(testing::golden_path("book"))) {
    if (entry.path().extension() == ".safetensors") names.push_back(entry.path().stem().string());
  }
  std::sort(names.begin(), names.end());
  return names;
}

class BookParity : public ::testing::TestWithParam<std::tuple<std::string, Backend>> {
 protected:
  void SetUp() override {
    golden_ = testing::load_golden("book/" + std::get<0>(GetParam()) + ".safetensors");
    manual_seed(static_cast<uint64_t>(golden_.meta_int("seed")));
    module_ = build(golden_.meta.at("class"), golden_.meta_int("d_in"), golden_.meta_int("d_out"),
                    golden_.meta_int("context_length"), 0.0, golden_.meta_int("num_heads"),
                    golden_.meta_int("qkv_bias") != 0);
    module_.set_backend(std::get<1>(GetParam()));
  }
  testing::Golden golden_;
  AnyModule module_;
};

TEST_P(BookParity, InitialWeightsAreBitIdentical) {
  for (auto& [name, p] : module_.named_parameters()) {
    EXPECT_TRUE(bit_equal(p.data(), golden_["init." + name])) << name;
  }
}

TEST_P(BookParity, ForwardMatches) {
  EXPECT_TRUE(parity(module_.forward(golden_["x"]), golden_["out"]));
}

TEST_P(BookParity, GradientsMatchAutograd) {
  module_.forward(golden_["x"]);
  const auto close = [](ConstTensorView actual, ConstTensorView expected) {
    // Gradients sum over the sequence: 1e-5 of the largest reference magnitude.
    return all_close(actual, expected, 1e-5, 1e-5 * std::max(1.0, testing::max_abs(expected)));
  };
  EXPECT_TRUE(close(module_.backward(golden_["grad_out"]), golden_["grad_x"])) << "grad_x";
  for (auto& [name, p] : module_.named_parameters()) {
    ASSERT_TRUE(p.has_grad()) << name;
    EXPECT_TRUE(close(p.grad(), golden_["grad." + name])) << name;
  }
}

TEST_P(BookParity, StateDictHasPyTorchsKeysAndMaskAndRoundTrips) {
  const StateDict sd = module_.state_dict();
  std::string keys;
  for (const auto& key : sd.keys()) keys += (keys.empty() ? "" : ",") + key;
  EXPECT_EQ(keys, golden_.meta.at("state_keys"));
  if (golden_.has("mask")) {
    const std::string mask_key = sd.contains("mask") ? "mask" : "heads.0.mask";
    EXPECT_TRUE(bit_equal(sd.at(mask_key), golden_["mask"]));
  }
  module_.load_state_dict(sd);  // PyTorch's layout loads back, mask included
  EXPECT_TRUE(parity(module_.forward(golden_["x"]), golden_["out"]));
}

INSTANTIATE_TEST_SUITE_P(Golden, BookParity,
                         ::testing::Combine(::testing::ValuesIn(book_cases()),
                                            ::testing::Values(Backend::reference, Backend::flash)),
                         [](const auto& info) {
                           return std::get<0>(info.param) + "_" +
                                  backend_name(std::get<1>(info.param));
                         });

// ---------------------------------------------------------------- the book's printed numbers

const Tensor kInputs({6, 3}, {0.43f, 0.15f, 0.89f, 0.55f, 0.87f, 0.66f, 0.57f, 0.85f, 0.64f, 0.22f,
                              0.58f, 0.33f, 0.77f, 0.25f, 0.10f, 0.05f, 0.80f, 0.55f});

Tensor book_batch() {
  Tensor batch({2, 6, 3});  // torch.stack((inputs, inputs))
  std::copy(kInputs.begin(), kInputs.end(), batch.begin());
  std::copy(kInputs.begin(), kInputs.end(), batch.begin() + 18);
  return batch;
}

void expect_book_rows(const Tensor& out, const std::vector<float>& rows) {
  const int64_t width = static_cast<int64_t>(rows.size()) / 6;
  ASSERT_EQ(out.shape(), (Shape{2, 6, width}));
  for (int64_t b = 0; b < 2; ++b) {
    EXPECT_TRUE(all_close(out.select(b), Tensor({6, width}, rows), 0.0, 0.5e-4)) << "batch " << b;
  }
}

TEST(BookPrints, CausalAttention) {
  manual_seed(123);
  CausalAttention ca(3, 2, 6, 0.0);
  expect_book_rows(ca(book_batch()), {-0.4519f, 0.2216f, -0.5874f, 0.0058f, -0.6300f, -0.0632f,
                                      -0.5675f, -0.0843f, -0.5526f, -0.0981f, -0.5299f, -0.1081f});
}

TEST(BookPrints, MultiHeadAttentionWrapper) {
  manual_seed(123);
  MultiHeadAttentionWrapper mha(3, 2, 6, 0.0, 2);
  expect_book_rows(mha(book_batch()),
                   {-0.4519f, 0.2216f,  0.4772f, 0.1063f, -0.5874f, 0.0058f,  0.5891f, 0.3257f,
                    -0.6300f, -0.0632f, 0.6202f, 0.3860f, -0.5675f, -0.0843f, 0.5478f, 0.3589f,
                    -0.5526f, -0.0981f, 0.5321f, 0.3428f, -0.5299f, -0.1081f, 0.5077f, 0.3493f});
}

TEST(BookPrints, MultiHeadAttention) {
  manual_seed(123);
  MultiHeadAttention mha(3, 2, 6, 0.0, 2);
  expect_book_rows(mha(book_batch()), {0.3190f, 0.4858f, 0.2943f, 0.3897f, 0.2856f, 0.3593f,
                                       0.2693f, 0.3873f, 0.2639f, 0.3928f, 0.2575f, 0.4028f});
}

// ---------------------------------------------------------------- dropout

Tensor random_input(Shape shape, uint64_t seed) {
  Generator g(seed);
  return g.uniform(shape, -1.0, 1.0);
}

TEST(Dropout, KeepsAboutOneMinusPOfTheWeightsScaledByOneOverOneMinusP) {
  for (const double p : {0.1, 0.5, 0.8}) {
    manual_seed(7);
    CausalAttention ca(4, 4, 64, p);
    ca(random_input({8, 64, 4}, 1));
    const Tensor& keep = ca.dropout_mask();  // (8, 64, 64)
    ASSERT_EQ(keep.shape(), (Shape{8, 64, 64}));
    const float scale = 1.0f / static_cast<float>(1.0 - p);
    int64_t kept = 0;
    for (const float m : keep) {
      ASSERT_TRUE(m == 0.0f || m == scale) << m;
      kept += m != 0.0f;
    }
    const double n = static_cast<double>(keep.numel());
    const double sigma = std::sqrt(p * (1.0 - p) / n);
    EXPECT_NEAR(kept / n, 1.0 - p, 5.0 * sigma) << "p = " << p;
  }
}

// Q, K, V as the module computes them, to rebuild its output by hand.
Tensor projection(const Linear& layer, ConstTensorView x) {
  return layer.forward(x);
}

TEST(Dropout, OutputIsTheMaskedScaledWeightsTimesValues) {
  manual_seed(11);
  CausalAttention ca(3, 4, 8, 0.4);
  const Tensor x = random_input({5, 3}, 2);
  const Tensor out = ca(x);
  const Tensor q = projection(ca.W_query, x), k = projection(ca.W_key, x),
               v = projection(ca.W_value, x);  // (5, 4) each
  Tensor probs({5, 5}), o({5, 4}), lse({5});
  attention_forward(q, k, v, o, lse, {.causal = true, .backend = Backend::reference});
  attention_probabilities(q, k, lse, probs, {.causal = true, .backend = Backend::reference});
  const Tensor& keep = ca.dropout_mask();  // (1, 5, 5)
  Tensor expected({5, 4});
  for (int64_t i = 0; i < 5; ++i) {
    for (int64_t c = 0; c < 4; ++c) {
      double s = 0.0;
      for (int64_t j = 0; j < 5; ++j)
        s += double(probs[i * 5 + j]) * keep[i * 5 + j] * v[j * 4 + c];
      expected[i * 4 + c] = static_cast<float>(s);
    }
  }
  EXPECT_TRUE(all_close(out, expected, 1e-5, 1e-6));
}

TEST(Dropout, EvalModeAndZeroProbabilityUseNoDropout) {
  const Tensor x = random_input({2, 6, 3}, 3);
  for (const char* cls : kClasses) {
    manual_seed(5);
    AnyModule with = build(cls, 3, 4, 6, 0.5, 2, true);
    manual_seed(5);
    AnyModule without = build(cls, 3, 4, 6, 0.0, 2, true);
    const Tensor expected = without.forward(x);  // p = 0 in training mode: no dropout
    with.train(false);
    const Generator before = default_generator();
    EXPECT_TRUE(bit_equal(with.forward(x), expected)) << cls;
    // eval() draws nothing.
    Generator after = default_generator(), copy = before;
    EXPECT_EQ(after.next_u32(), copy.next_u32()) << cls;
    with.train(true);
    EXPECT_FALSE(all_close(with.forward(x), expected, 1e-3, 1e-3)) << cls;
  }
}

TEST(Dropout, MasksAreReproducibleFromTheSeed) {
  const Tensor x = random_input({2, 6, 3}, 4);
  const auto run = [&](uint64_t seed) {
    manual_seed(seed);
    MultiHeadAttention mha(3, 4, 6, 0.3, 2);
    const Tensor out = mha(x);
    return std::pair{out, mha.dropout_mask()};
  };
  const auto [out_a, keep_a] = run(21);
  const auto [out_b, keep_b] = run(21);
  const auto [out_c, keep_c] = run(22);
  EXPECT_EQ(keep_a.shape(), (Shape{4, 6, 6}));  // (B * num_heads, N, N)
  EXPECT_TRUE(bit_equal(keep_a, keep_b));
  EXPECT_TRUE(bit_equal(out_a, out_b));
  EXPECT_FALSE(bit_equal(keep_a, keep_c));
}

// Backward through dropout against central differences of L = sum(out * g) in double, with the
// same mask on every forward: the module draws from its own generator, re-seeded each time.
void check_dropout_gradients(const char* cls) {
  Generator gen(99);
  AnyModule m = build(cls, 3, 4, 6, 0.3, 2, true, &gen);
  Tensor x = random_input({2, 5, 3}, 6);
  const auto loss = [&](const Tensor& g) {
    gen.manual_seed(1234);
    const Tensor out = m.forward(x);
    double s = 0.0;
    for (int64_t i = 0; i < out.numel(); ++i) s += double(out[i]) * g[i];
    return s;
  };
  gen.manual_seed(1234);
  const Tensor out = m.forward(x);
  const Tensor g = random_input(out.shape(), 8);
  const Tensor dx = m.backward(g);
  // t and analytic contiguous: x and the parameters' data and gradients.
  const auto check = [&](TensorView t, ConstTensorView analytic, const std::string& what) {
    const float eps = 1e-2f;
    for (int64_t i = 0; i < t.numel(); ++i) {
      const float saved = t.data()[i];
      t.data()[i] = saved + eps;
      const double up = loss(g);
      t.data()[i] = saved - eps;
      const double down = loss(g);
      t.data()[i] = saved;
      EXPECT_NEAR(analytic.data()[i], (up - down) / (2.0 * eps), 2e-3)
          << cls << " " << what << " " << i;
    }
  };
  check(x, dx, "x");
  for (auto& [name, p] : m.named_parameters()) check(p.data(), p.grad(), name);
}

TEST(Dropout, BackwardMatchesFiniteDifferencesCausalAttention) {
  check_dropout_gradients("CausalAttention");
}
TEST(Dropout, BackwardMatchesFiniteDifferencesWrapper) {
  check_dropout_gradients("MultiHeadAttentionWrapper");
}
TEST(Dropout, BackwardMatchesFiniteDifferencesMultiHeadAttention) {
  check_dropout_gradients("MultiHeadAttention");
}

// ---------------------------------------------------------------- errors

template <typename F>
std::string error_of(F&& f) {
  try {
    f();
  } catch (const ArgumentError& e) {
    return e.what();
  }
  return "(no ArgumentError)";
}

TEST(Errors, SequenceLongerThanContextLength) {
  manual_seed(1);
  CausalAttention ca(3, 2, 6, 0.0);
  MultiHeadAttention mha(3, 2, 6, 0.0, 2);
  const Tensor x = random_input({1, 7, 3}, 1);
  EXPECT_EQ(error_of([&] { ca(x); }),
            "CausalAttention.forward: x has seq_len=7 tokens, more than context_length=6 "
            "(x.shape = [1, 7, 3])");
  EXPECT_NE(error_of([&] { mha(x); }).find("more than context_length=6"), std::string::npos);
}

TEST(Errors, DOutNotDivisibleByNumHeads) {
  EXPECT_EQ(error_of([] { MultiHeadAttention(3, 5, 6, 0.0, 2); }),
            "MultiHeadAttention: d_out must be divisible by num_heads, got d_out=5, num_heads=2");
  EXPECT_NO_THROW(MultiHeadAttentionWrapper(3, 5, 6, 0.0, 2));  // heads are side by side there
}

TEST(Errors, DropoutOutsideZeroToOne) {
  for (const double p : {-0.1, 1.0, 1.5, std::nan("")}) {
    EXPECT_NE(error_of([&] { CausalAttention(3, 2, 6, p); }).find("dropout must be in [0, 1)"),
              std::string::npos)
        << p;
    EXPECT_NE(error_of([&] { MultiHeadAttention(3, 2, 6, p, 2); }).find("dropout must be in"),
              std::string::npos);
    EXPECT_NE(error_of([&] { MultiHeadAttentionWrapper(3, 2, 6, p, 2); }).find("dropout must be"),
              std::string::npos);
  }
}

TEST(Errors, BadArgumentsDrawNothing) {
  manual_seed(3);
  const Tensor expected = rand({2});
  manual_seed(3);
  EXPECT_THROW(MultiHeadAttention(3, 5, 6, 0.0, 2), ArgumentError);
  EXPECT_TRUE(bit_equal(rand({2}), expected));
}

TEST(Errors, BackwardBeforeForwardAndBadShapes) {
  manual_seed(1);
  MultiHeadAttention mha(3, 4, 6, 0.0, 2);
  EXPECT_THROW(mha.backward(Tensor({6, 4})), StateError);
  mha(random_input({6, 3}, 1));
  EXPECT_THROW(mha.backward(Tensor({6, 3})), ArgumentError);
  EXPECT_NE(error_of([&] {
              mha(Tensor({6, 4}));
            }).find("module expects d_in=3"),
            std::string::npos);
}

TEST(Errors, StateDictWithAnotherMaskOrMissingKey) {
  manual_seed(1);
  CausalAttention ca(3, 2, 6, 0.0);
  StateDict sd = ca.state_dict();
  Tensor ones = Tensor::full({6, 6}, 1.0f);
  sd.insert_or_assign("mask", ones);
  EXPECT_NE(error_of([&] { ca.load_state_dict(sd); }).find("'mask' is not the causal mask"),
            std::string::npos);
  StateDict partial;
  partial.insert("W_query.weight", Tensor::from_view(ca.W_query.weight.data()));
  EXPECT_EQ(error_of([&] { ca.load_state_dict(partial); }),
            "CausalAttention.load_state_dict: missing key 'W_key.weight'");
}

}  // namespace
}  // namespace llm_utils
