// The module core every class shares (module.hpp, parameter.hpp): parameters that stay valid
// across moves, independent copies, loads that copy into the existing storage all or nothing,
// a const named_parameters, fixed parameter shapes, strided inputs, make_module for all seven
// classes, and Linear4/5 advancing only the generator they were built with.

#include <gtest/gtest.h>

#include <memory>
#include <string>
#include <vector>

#include "test_util.hpp"

namespace llm_utils {
namespace {

using testing::bit_equal;

ModuleSpec spec(const std::string& name) {
  return ModuleSpec{.name = name, .d_in = 6, .d_out = 4, .context_length = 8, .num_heads = 2};
}

Tensor input(uint64_t seed, Shape shape = {2, 5, 6}) {
  Generator g(seed);
  return g.uniform(shape, -1, 1);
}

// One SGD step on the loss sum(y).
void train_step(Module& m, SGD& opt, const Tensor& x) {
  opt.zero_grad();
  const Tensor y = m.forward(x);
  m.backward(Tensor::full(y.shape(), 1.0f));
  opt.step();
}

void expect_same_parameters(const Module& a, const Module& b) {
  const NamedParameters pa = a.named_parameters(), pb = b.named_parameters();
  ASSERT_EQ(pa.size(), pb.size());
  for (size_t i = 0; i < pa.size(); ++i) {
    EXPECT_EQ(pa[i].first, pb[i].first);
    EXPECT_TRUE(bit_equal(pa[i].second.data(), pb[i].second.data())) << pa[i].first;
  }
}

TEST(ModuleCore, MakeModuleBuildsEverySevenClassAsItsConstructorDoes) {
  const std::vector<std::string> classes = {"SelfAttention_Params",  "SelfAttention_Linear",
                                            "SelfAttention_Linear4", "SelfAttention_Linear5",
                                            "CausalAttention",       "MultiHeadAttentionWrapper",
                                            "MultiHeadAttention"};
  ASSERT_EQ(module_names().size(), classes.size());
  for (size_t i = 0; i < classes.size(); ++i) {
    Generator g1(5), g2(5);
    const std::unique_ptr<Module> by_short = make_module(spec(module_names()[i]), &g1);
    const std::unique_ptr<Module> by_class = make_module(spec(classes[i]), &g2);
    EXPECT_EQ(by_short->class_name(), classes[i]);
    EXPECT_EQ(by_class->class_name(), classes[i]);
    expect_same_parameters(*by_short, *by_class);
  }
  Generator g(5);
  CausalAttention direct(6, 4, 8, 0.0, false, &g);
  Generator g2(5);
  expect_same_parameters(*make_module(spec("causal"), &g2), direct);
  EXPECT_THROW(make_module(spec("linear7")), ArgumentError);
  ModuleSpec biased = spec("params");
  biased.qkv_bias = true;
  EXPECT_THROW(make_module(biased), ArgumentError);
}

TEST(ModuleCore, OptimizersKeepUpdatingAModuleThatMoved) {
  for (const std::string& name : module_names()) {
    SCOPED_TRACE(name);
    Generator g(1), g_twin(1);
    std::unique_ptr<Module> moved_from = make_module(spec(name), &g);
    std::unique_ptr<Module> twin = make_module(spec(name), &g_twin);
    SGD opt(moved_from->named_parameters(), {.lr = 0.1});
    SGD twin_opt(twin->named_parameters(), {.lr = 0.1});
    const Tensor x = input(2);
    train_step(*moved_from, opt, x);
    train_step(*twin, twin_opt, x);
    expect_same_parameters(*moved_from, *twin);
  }
  // A module moved by value, twice (into a vector, then by its reallocation): the optimizer
  // built before the moves still updates it, and its parameters are still the optimizer's.
  manual_seed(3);
  SelfAttention_Linear a(6, 4);
  const ParameterRef w_query = a.W_query.weight;
  SGD opt(a.named_parameters(), {.lr = 0.5});
  std::vector<SelfAttention_Linear> modules;
  modules.push_back(std::move(a));
  modules.reserve(16);
  const Tensor before = Tensor::from_view(modules[0].W_query.weight.data());
  train_step(modules[0], opt, input(4));
  EXPECT_FALSE(bit_equal(modules[0].W_query.weight.data(), before));
  EXPECT_TRUE(modules[0].W_query.weight.same_as(w_query));
}

TEST(ModuleCore, ParameterRefsOutliveTheirModule) {
  ParameterRef kept;
  std::unique_ptr<SGD> opt;
  {
    manual_seed(4);
    MultiHeadAttention m(6, 4, 8, 0.0, 2);
    kept = m.out_proj.weight;
    opt = std::make_unique<SGD>(m.named_parameters(), SGDOptions{.lr = 0.1});
    m.forward(input(5));
    m.backward(Tensor::full({2, 5, 4}, 1.0f));
  }
  const Tensor before = Tensor::from_view(kept.data());
  opt->step();  // the module is gone; its parameters are not
  EXPECT_FALSE(bit_equal(kept.data(), before));
  EXPECT_TRUE(kept.has_grad());
}

TEST(ModuleCore, CopiesAreIndependentAndKeepTheSavedForward) {
  manual_seed(6);
  SelfAttention_Linear4 a(6, 4, true);
  const Tensor x = input(7, {5, 6});
  const Tensor y = a.forward(x);
  SelfAttention_Linear4 b = a;
  EXPECT_FALSE(b.W_query.weight.same_as(a.W_query.weight));
  EXPECT_TRUE(bit_equal(b.attn_weights(), a.attn_weights()));
  EXPECT_TRUE(bit_equal(b.values(), a.values()));
  EXPECT_TRUE(
      bit_equal(b.backward(Tensor::full({5, 4}, 1.0f)), a.backward(Tensor::full({5, 4}, 1.0f))));
  b.W_value.weight.data().at({0, 0}) += 1.0f;
  EXPECT_TRUE(bit_equal(a.forward(x), y));
  MultiHeadAttentionWrapper w(6, 4, 8, 0.0, 2);
  MultiHeadAttentionWrapper w2 = w;
  w2.heads[1].W_key.weight.data().at({0, 0}) += 1.0f;
  EXPECT_FALSE(bit_equal(w2.heads[1].W_key.weight.data(), w.heads[1].W_key.weight.data()));
}

TEST(ModuleCore, LoadCopiesIntoTheExistingStorageAllOrNothing) {
  for (const std::string& name : module_names()) {
    SCOPED_TRACE(name);
    Generator g1(8), g2(9);
    const std::unique_ptr<Module> m = make_module(spec(name), &g1);
    const std::unique_ptr<Module> other = make_module(spec(name), &g2);
    std::vector<TensorView> views;  // the parameters' storage before the load
    for (auto& [key, p] : m->named_parameters()) views.push_back(p.data());
    const StateDict before = m->state_dict();
    // A bad last entry: nothing may change.
    StateDict bad = other->state_dict();
    const std::string last = bad.keys().back();
    bad.insert_or_assign(last, Tensor({1}));
    EXPECT_THROW(m->load_state_dict(bad), ArgumentError);
    for (const auto& [key, t] : m->state_dict()) EXPECT_TRUE(bit_equal(t, before.at(key))) << key;
    // A good one: the same storage now holds the other module's values.
    const LoadResult r = m->load_state_dict(other->state_dict());
    EXPECT_TRUE(r.missing_keys.empty() && r.unexpected_keys.empty());
    const NamedParameters loaded = m->named_parameters();
    for (size_t i = 0; i < views.size(); ++i) {
      EXPECT_EQ(loaded[i].second.data().data(), views[i].data()) << loaded[i].first;
      EXPECT_TRUE(bit_equal(views[i], other->state_dict().at(loaded[i].first)));
    }
  }
}

TEST(ModuleCore, NonStrictLoadReportsMissingAndUnexpectedKeys) {
  manual_seed(10);
  CausalAttention m(6, 4, 8, 0.0);
  StateDict sd = m.state_dict();
  StateDict partial;
  for (const auto& [key, t] : sd) {
    if (key != "W_key.weight" && key != "mask") partial.insert(key, t);
  }
  partial.insert("extra", Tensor({2}));
  const LoadResult r = m.load_state_dict(partial, /*strict=*/false);
  EXPECT_EQ(r.missing_keys, (std::vector<std::string>{"mask", "W_key.weight"}));
  EXPECT_EQ(r.unexpected_keys, (std::vector<std::string>{"extra"}));
}

TEST(ModuleCore, NamedParametersOfAConstModuleAndFixedShapes) {
  manual_seed(11);
  const SelfAttention_Params m(6, 4);
  const NamedParameters params = m.named_parameters();  // a const module lists them too
  ASSERT_EQ(params.size(), 3u);
  EXPECT_EQ(params[0].first, "W_query");
  EXPECT_EQ(params[0].second.shape(), (Shape{6, 4}));
  // Values go in with copy_from, whose shape must match; there is no way to reshape one.
  ParameterRef w = params[0].second;
  EXPECT_THROW(w.copy_from(Tensor({4, 6})), ArgumentError);
  w.copy_from(Tensor::full({6, 4}, 0.25f));
  EXPECT_EQ(m.W_query.data().at({5, 3}), 0.25f);
  EXPECT_THROW(ParameterRef().data(), StateError);
}

TEST(ModuleCore, StridedInputsEqualTheirContiguousCopies) {
  for (const std::string& name : module_names()) {
    SCOPED_TRACE(name);
    Generator g(12);
    const std::unique_ptr<Module> m = make_module(spec(name), &g);
    // x (2, 5, 6) as every other row of a (2, 10, 6) buffer; dy likewise.
    const Tensor buffer = input(13, {2, 10, 6});
    const ConstTensorView x(buffer.data(), {2, 5, 6}, {60, 12, 1});
    const Tensor y_strided = m->forward(x);
    const Tensor dy_buffer = input(14, {2, 5, 2 * y_strided.size(2)});
    const ConstTensorView dy(dy_buffer.data(), y_strided.shape(),
                             {5 * 2 * y_strided.size(2), 2 * y_strided.size(2), 1});
    const Tensor dx_strided = m->backward(dy);
    m->zero_grad();
    EXPECT_TRUE(bit_equal(m->forward(Tensor::from_view(x)), y_strided));
    EXPECT_TRUE(bit_equal(m->backward(Tensor::from_view(dy)), dx_strided));
  }
}

TEST(ModuleCore, Linear4AdvancesOnlyTheGeneratorItWasBuiltWith) {
  Generator own(20);
  SelfAttention_Linear5 m(6, 4, false, &own);
  manual_seed(21);
  const Tensor expected_next = Generator(21).rand({3});
  Generator reference_own = own;
  m.forward(input(22, {5, 6}));
  EXPECT_TRUE(bit_equal(rand({3}), expected_next)) << "the default generator moved";
  reference_own.discard(5 * 4 + 5 * 5);  // Linear(d_out, N) and Linear(N, N): N = 5
  EXPECT_TRUE(bit_equal(own.rand({3}), reference_own.rand({3})));
}

TEST(ModuleCore, AFailedForwardLeavesTheModuleAsItWas) {
  manual_seed(23);
  MultiHeadAttention m(6, 4, 8, 0.0, 2);
  m.eval();
  const Tensor x = input(24, {1, 3, 6});
  m.forward(x, {.use_cache = true});
  ASSERT_EQ(m.cache_size(), 3);
  // A mask of the wrong shape: the cache keeps its three tokens, backward stays forbidden.
  AttentionForwardOptions bad{.attn_mask = AttentionMask::additive(Tensor({2, 2})),
                              .use_cache = true};
  EXPECT_THROW(m.forward(input(25, {1, 1, 6}), bad), ArgumentError);
  EXPECT_EQ(m.cache_size(), 3);
  EXPECT_THROW(m.backward(Tensor({1, 3, 4})), StateError);
}

TEST(ModuleCore, ABiasReplacedWithAnotherShapeIsAnErrorNotAnOverflow) {
  manual_seed(26);
  SelfAttention_Linear m(6, 4, true);
  m.W_key.bias.emplace(Tensor({7}));  // the optional can be re-emplaced; the shape is checked
  EXPECT_THROW(m.forward(input(27, {5, 6})), ArgumentError);
  m.W_key.bias.reset();  // one projection without a bias, the others with
  EXPECT_THROW(m.forward(input(27, {5, 6})), ArgumentError);
  // A failed forward leaves the last one as it was: its backward still runs.
  MultiHeadAttention mha(6, 4, 8, 0.0, 2);
  const Tensor x = input(28);
  const Tensor y = mha.forward(x);
  mha.out_proj.bias.emplace(Tensor({3}));
  EXPECT_THROW(mha.forward(input(29, {1, 3, 6})), ArgumentError);
  mha.out_proj.bias.emplace(Tensor({4}));  // fits again (zeros: a changed weight, same shapes)
  EXPECT_EQ(mha.backward(Tensor::full(y.shape(), 1.0f)).shape(), x.shape());
}

TEST(ModuleCore, AWrapperLoadMakesItsHeadsForwardsStaleToo) {
  manual_seed(29);
  MultiHeadAttentionWrapper w(6, 4, 8, 0.0, 2);
  w.forward(input(30));
  w.load_state_dict(w.state_dict());
  EXPECT_THROW(w.backward(Tensor({2, 5, 8})), StateError);
  EXPECT_THROW(w.heads[1].backward(Tensor({2, 5, 4})), StateError);
}

}  // namespace
}  // namespace llm_utils
