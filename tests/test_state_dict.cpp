// State dicts under PyTorch's names: round trips, files PyTorch users write (after a forward,
// with the original's derived keys), and all-or-nothing loading.

#include <gtest/gtest.h>

#include <filesystem>

#include "test_util.hpp"

namespace llm_utils {
namespace {

const char* const kClasses[] = {"SelfAttention_Params", "SelfAttention_Linear",
                                "SelfAttention_Linear4", "SelfAttention_Linear5"};

std::unique_ptr<SelfAttentionBase> fresh(const std::string& cls, uint64_t seed) {
  manual_seed(seed);
  return make_self_attention(cls, 3, 2, cls != "SelfAttention_Params");
}

TEST(StateDict, KeysInPyTorchOrder) {
  EXPECT_EQ(fresh("SelfAttention_Params", 0)->state_dict().keys(),
            (std::vector<std::string>{"W_query", "W_key", "W_value"}));
  EXPECT_EQ(fresh("SelfAttention_Linear", 0)->state_dict().keys(),
            (std::vector<std::string>{"W_query.weight", "W_query.bias", "W_key.weight",
                                      "W_key.bias", "W_value.weight", "W_value.bias"}));
  manual_seed(0);
  SelfAttention_Linear no_bias(3, 2);
  EXPECT_EQ(no_bias.state_dict().keys(),
            (std::vector<std::string>{"W_query.weight", "W_key.weight", "W_value.weight"}));
}

TEST(StateDict, DerivedKeysAfterForwardAsTheOriginalHasThem) {
  auto m = fresh("SelfAttention_Linear5", 0);
  m->forward(Tensor({4, 3}, {1, 2, 3, 4, 5, 6, 7, 8, 9, 1, 2, 3}));
  EXPECT_EQ(
      m->state_dict(true).keys(),
      (std::vector<std::string>{"W_query.weight", "W_query.bias", "W_key.weight", "W_key.bias",
                                "W_value.weight", "W_value.bias", "attnQueries2ScoresL.weight",
                                "attnValues2ContextL.weight", "model.weight"}));
  EXPECT_EQ(m->state_dict(true).at("model.weight").shape(), (Shape{4, 4}));
  EXPECT_EQ(m->state_dict(true).at("attnQueries2ScoresL.weight").shape(), (Shape{4, 2}));
  m->forward(Tensor({2, 4, 3}));
  EXPECT_THROW(m->state_dict(true), ArgumentError);
}

TEST(StateDict, RoundTripThroughSafetensors) {
  const auto dir = std::filesystem::temp_directory_path() / "llm_utils_sd_roundtrip";
  std::filesystem::create_directories(dir);
  for (const char* cls : kClasses) {
    auto a = fresh(cls, 1);
    auto b = fresh(cls, 2);
    const std::string path = (dir / (std::string(cls) + ".safetensors")).string();
    io::save_safetensors(path, a->state_dict());
    b->load_state_dict(io::load_safetensors(path));
    for (const auto& [name, t] : a->state_dict()) {
      EXPECT_TRUE(testing::bit_equal(b->state_dict().at(name), t)) << cls << " " << name;
    }
  }
  std::filesystem::remove_all(dir);
}

TEST(StateDict, LoadsWhatPyTorchUsersWriteAfterAForward) {
  for (const char* cls : kClasses) {
    auto m = fresh(cls, 5);
    const StateDict sd = io::load_safetensors(
        testing::golden_path(std::string("state_dicts/") + cls + ".safetensors"));
    m->load_state_dict(sd);
    const testing::Golden io =
        testing::load_golden(std::string("state_dicts/") + cls + ".output.safetensors");
    EXPECT_TRUE(testing::parity(m->forward(io["x"]), io["out"])) << cls;
  }
}

TEST(StateDict, MissingUnknownAndMisshapenKeysNameTheKeyAndChangeNothing) {
  auto m = fresh("SelfAttention_Linear", 3);
  const StateDict before = m->state_dict();
  const auto expect_unchanged = [&] {
    for (const auto& [name, t] : before) {
      EXPECT_TRUE(testing::bit_equal(m->state_dict().at(name), t)) << name;
    }
  };

  StateDict missing;
  for (const auto& [name, t] : fresh("SelfAttention_Linear", 4)->state_dict()) {
    if (name != "W_key.bias") missing.insert(name, t);
  }
  try {
    m->load_state_dict(missing);
    FAIL() << "expected an error";
  } catch (const ArgumentError& e) {
    EXPECT_NE(std::string(e.what()).find("missing key 'W_key.bias'"), std::string::npos)
        << e.what();
  }
  expect_unchanged();

  StateDict unknown = fresh("SelfAttention_Linear", 4)->state_dict();
  unknown.insert("W_other.weight", Tensor({2, 3}));
  try {
    m->load_state_dict(unknown);
    FAIL() << "expected an error";
  } catch (const ArgumentError& e) {
    EXPECT_NE(std::string(e.what()).find("unexpected key 'W_other.weight'"), std::string::npos);
  }
  expect_unchanged();
  m->load_state_dict(unknown, /*strict=*/false);  // non-strict ignores it

  m = fresh("SelfAttention_Linear", 3);
  StateDict misshapen;
  for (const auto& [name, t] : fresh("SelfAttention_Linear", 4)->state_dict()) {
    misshapen.insert(name, name == "W_value.weight" ? Tensor({3, 2}) : t);
  }
  try {
    m->load_state_dict(misshapen);
    FAIL() << "expected an error";
  } catch (const ArgumentError& e) {
    EXPECT_NE(std::string(e.what()).find("'W_value.weight' has shape [3, 2], expected [2, 3]"),
              std::string::npos)
        << e.what();
  }
  expect_unchanged();
}

TEST(StateDict, DerivedKeysAreOnlyAcceptedWhereTheOriginalHasThem) {
  StateDict with_derived = fresh("SelfAttention_Linear", 4)->state_dict();
  with_derived.insert("attnValues2ContextL.weight", Tensor({6, 6}));
  EXPECT_THROW(fresh("SelfAttention_Linear", 3)->load_state_dict(with_derived), ArgumentError);
  EXPECT_NO_THROW(fresh("SelfAttention_Linear4", 3)->load_state_dict(with_derived));
  with_derived.insert("attnQueries2ScoresL.weight", Tensor({6, 2}));
  EXPECT_THROW(fresh("SelfAttention_Linear4", 3)->load_state_dict(with_derived), ArgumentError);
  EXPECT_NO_THROW(fresh("SelfAttention_Linear5", 3)->load_state_dict(with_derived));
}

TEST(StateDict, BackwardAfterLoadNeedsANewForward) {
  auto m = fresh("SelfAttention_Linear", 3);
  Tensor x({2, 3}, {1, 2, 3, 4, 5, 6});
  Tensor y = m->forward(x);
  m->load_state_dict(fresh("SelfAttention_Linear", 4)->state_dict());
  EXPECT_THROW(m->backward(y), StateError);
  m->forward(x);
  EXPECT_NO_THROW(m->backward(y));
}

}  // namespace
}  // namespace llm_utils
