// Every class x bias on/off x 2-D/3-D x shape against what PyTorch computed on the original code
// (tests/golden/make_golden.py): initial weights bit for bit, outputs, attention weights,
// values, every gradient (None where PyTorch's is None), derived layers, and the state of the
// default generator after forward.

#include <gtest/gtest.h>

#include <filesystem>
#include <sstream>

#include "test_util.hpp"

namespace llm_utils {
namespace {

using testing::bit_equal;
using testing::Golden;
using testing::parity;

std::vector<std::string> parity_cases() {
  std::vector<std::string> names;
  for (const auto& entry : std::filesystem::directory_iterator(testing::golden_path("parity"))) {
    if (entry.path().extension() == ".safetensors") names.push_back(entry.path().stem().string());
  }
  std::sort(names.begin(), names.end());
  return names;
}

std::vector<std::string> split_commas(const std::string& s) {
  std::vector<std::string> out;
  std::stringstream in(s);
  for (std::string item; std::getline(in, item, ',');) {
    if (!item.empty()) out.push_back(item);
  }
  return out;
}

class Parity : public ::testing::TestWithParam<std::string> {
 protected:
  void SetUp() override {
    golden_ = testing::load_golden("parity/" + GetParam() + ".safetensors");
    manual_seed(static_cast<uint64_t>(golden_.meta_int("seed")));
    module_ = make_self_attention(golden_.meta.at("class"), golden_.meta_int("d_in"),
                                  golden_.meta_int("d_out"), golden_.meta_int("qkv_bias") != 0);
  }
  Golden golden_;
  std::unique_ptr<SelfAttentionBase> module_;
};

TEST_P(Parity, InitialWeightsAreBitIdentical) {
  for (auto& [name, p] : module_->named_parameters()) {
    EXPECT_TRUE(bit_equal(p->data, golden_["init." + name])) << name;
  }
}

TEST_P(Parity, ForwardMatches) {
  Tensor out = module_->forward(golden_["x"]);
  EXPECT_TRUE(parity(out, golden_["out"])) << "out";
  EXPECT_TRUE(parity(module_->attn_weights(), golden_["attn_weights"])) << "attn_weights";
  EXPECT_TRUE(parity(module_->values(), golden_["values"])) << "values";
  EXPECT_TRUE(parity(module_->context_vec(), golden_["out"])) << "context_vec";
}

TEST_P(Parity, ForwardLeavesTheDefaultGeneratorWherePyTorchDoes) {
  module_->forward(golden_["x"]);
  EXPECT_TRUE(bit_equal(rand({4}), golden_["next_rand"]));
}

TEST_P(Parity, GradientsMatchAutograd) {
  module_->forward(golden_["x"]);
  Tensor dx = module_->backward(golden_["grad_out"]);
  const auto grad_close = [](ConstTensorView actual, ConstTensorView expected) {
    // Gradients sum over the sequence: allow 1e-5 of the largest reference magnitude.
    return testing::all_close(actual, expected, 1e-5,
                              1e-5 * std::max(1.0, testing::max_abs(expected)));
  };
  EXPECT_TRUE(grad_close(dx, golden_["grad_x"])) << "grad_x";
  const std::vector<std::string> none = split_commas(golden_.meta.at("none_grads"));
  for (auto& [name, p] : module_->named_parameters()) {
    const bool expect_none = std::find(none.begin(), none.end(), name) != none.end();
    ASSERT_EQ(p->has_grad(), !expect_none) << name;
    if (!expect_none) EXPECT_TRUE(grad_close(p->grad(), golden_["grad." + name])) << name;
  }
}

TEST_P(Parity, DerivedLayersMatchTheOriginalsStateDict) {
  module_->forward(golden_["x"]);
  if (golden_["x"].dim() == 3) {
    // One derived layer per batch element: check each against the batch's attention weights.
    if (auto* l4 = dynamic_cast<SelfAttention_Linear4*>(module_.get())) {
      for (int64_t b = 0; b < golden_["x"].size(0); ++b) {
        EXPECT_TRUE(
            parity(l4->attnValues2ContextL(b).weight.data, golden_["attn_weights"].select(b)));
      }
    }
    return;
  }
  StateDict sd = module_->state_dict(/*include_derived=*/true);
  size_t derived = 0;
  for (const auto& [key, t] : golden_.tensors) {
    if (key.rfind("derived.", 0) != 0) continue;
    ++derived;
    const std::string name = key.substr(8);
    ASSERT_TRUE(sd.contains(name)) << name;
    EXPECT_TRUE(parity(sd.at(name), t)) << name;
  }
  EXPECT_EQ(sd.size(), module_->named_parameters().size() + derived);
}

INSTANTIATE_TEST_SUITE_P(Golden, Parity, ::testing::ValuesIn(parity_cases()),
                         [](const auto& info) { return info.param; });

TEST(ParityFixtures, AllCasesArePresent) {
  // 7 class/bias configurations x 6 shapes x 2 ranks; guards against a silently empty folder.
  EXPECT_EQ(parity_cases().size(), 84u);
}

}  // namespace
}  // namespace llm_utils
