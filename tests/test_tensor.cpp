#include <gtest/gtest.h>

#include "llm_utils/error.hpp"
#include "llm_utils/tensor.hpp"

namespace llm_utils {
namespace {

TEST(Tensor, ZerosOfAnyRank) {
  Tensor t({2, 3, 4});
  EXPECT_EQ(t.dim(), 3);
  EXPECT_EQ(t.numel(), 24);
  EXPECT_EQ(t.size(-1), 4);
  EXPECT_EQ(t.size(0), 2);
  for (float v : t) EXPECT_EQ(v, 0.0f);
  EXPECT_EQ(reinterpret_cast<uintptr_t>(t.data()) % 64, 0u);
}

TEST(Tensor, FromValuesAndAccess) {
  Tensor t({2, 3}, {1, 2, 3, 4, 5, 6});
  EXPECT_EQ(t.at({1, 2}), 6.0f);
  t.at({0, 1}) = 9.0f;
  EXPECT_EQ(t[1], 9.0f);
  EXPECT_THROW(t.at({2, 0}), ArgumentError);
  EXPECT_THROW(t.at({0}), ArgumentError);
  EXPECT_THROW(Tensor({2, 2}, {1, 2, 3}), ArgumentError);
}

TEST(Tensor, ScalarAndEmpty) {
  Tensor scalar(Shape{}, {3.5f});
  EXPECT_EQ(scalar.numel(), 1);
  EXPECT_EQ(scalar.dim(), 0);
  Tensor empty({0, 5});
  EXPECT_EQ(empty.numel(), 0);
  EXPECT_TRUE(empty.empty());
  Tensor copy = empty;
  EXPECT_EQ(copy.shape(), (Shape{0, 5}));
}

TEST(Tensor, BatchSliceViews) {
  Tensor t({2, 2, 3}, {0, 1, 2, 3, 4, 5, 6, 7, 8, 9, 10, 11});
  TensorView second = t.select(1);
  EXPECT_EQ(second.shape(), (Shape{2, 3}));
  EXPECT_EQ(second.data()[0], 6.0f);
  second.data()[0] = -1.0f;  // views alias the owner
  EXPECT_EQ(t.at({1, 0, 0}), -1.0f);
  ConstTensorView row = second.select(1);
  EXPECT_EQ(row.shape(), (Shape{3}));
  EXPECT_EQ(row.data()[2], 11.0f);
  EXPECT_THROW(t.select(2), ArgumentError);
  EXPECT_THROW(t.select(-1), ArgumentError);
}

TEST(Tensor, CopyIsDeepMoveIsCheap) {
  Tensor a({3}, {1, 2, 3});
  Tensor b = a;
  b[0] = 7.0f;
  EXPECT_EQ(a[0], 1.0f);
  const float* p = a.data();
  Tensor c = std::move(a);
  EXPECT_EQ(c.data(), p);
}

TEST(Tensor, Reshape) {
  Tensor a({2, 3}, {1, 2, 3, 4, 5, 6});
  Tensor b = a.reshape({3, 2});
  EXPECT_EQ(b.at({2, 1}), 6.0f);
  EXPECT_THROW(a.reshape({4, 2}), ArgumentError);
}

TEST(Tensor, ShapeOverflowIsAnError) {
  EXPECT_THROW(shape_numel({int64_t{1} << 40, int64_t{1} << 40}), ArgumentError);
  EXPECT_THROW(shape_numel({-1, 3}), ArgumentError);
  EXPECT_THROW(Tensor({int64_t{1} << 62, 4}), ArgumentError);
  // Just below int64's limit: rounding the byte count up must not wrap to a tiny buffer.
  EXPECT_THROW(Tensor({int64_t{4611686018427387903}}), ArgumentError);
}

TEST(Tensor, ShapeToString) {
  EXPECT_EQ(shape_to_string({6, 4}), "[6, 4]");
  EXPECT_EQ(shape_to_string({}), "[]");
}

TEST(TensorView, ContiguousViewsComputeTheirStrides) {
  Tensor t({2, 3, 4});
  const ConstTensorView v = t.view();
  EXPECT_EQ(v.strides(), (Shape{12, 4, 1}));
  EXPECT_EQ(v.stride(-2), 4);
  EXPECT_TRUE(v.is_contiguous());
  EXPECT_TRUE(v.explicit_strides().empty());
}

TEST(TensorView, StridedViewsReadTheirElements) {
  // A (3, 4) matrix with rows 6 floats apart; its transpose; a narrowed block.
  Tensor buf({3, 6}, {0, 1, 2, 3, 90, 91, 10, 11, 12, 13, 92, 93, 20, 21, 22, 23, 94, 95});
  const ConstTensorView m(buf.data(), {3, 4}, {6, 1});
  EXPECT_FALSE(m.is_contiguous());
  EXPECT_EQ(Tensor::from_view(m).to_vector(),
            (std::vector<float>{0, 1, 2, 3, 10, 11, 12, 13, 20, 21, 22, 23}));
  const ConstTensorView t = m.transpose(0, 1);
  EXPECT_EQ(t.shape(), (Shape{4, 3}));
  EXPECT_EQ(t.strides(), (Shape{1, 6}));
  EXPECT_EQ(Tensor::from_view(t).to_vector(),
            (std::vector<float>{0, 10, 20, 1, 11, 21, 2, 12, 22, 3, 13, 23}));
  const ConstTensorView block = m.narrow(0, 1, 2).narrow(1, 2, 2);
  EXPECT_EQ(Tensor::from_view(block).to_vector(), (std::vector<float>{12, 13, 22, 23}));
  EXPECT_EQ(Tensor::from_view(m.select(2)).to_vector(), (std::vector<float>{20, 21, 22, 23}));
  // Stride 0 repeats a row, as expand does.
  const ConstTensorView expanded(buf.data(), {2, 3}, {0, 1});
  EXPECT_EQ(Tensor::from_view(expanded).to_vector(), (std::vector<float>{0, 1, 2, 0, 1, 2}));
  Tensor storage;
  EXPECT_EQ(contiguous(m, storage).shape(), (Shape{3, 4}));
  EXPECT_EQ(storage.numel(), 12);
  EXPECT_EQ(contiguous(buf.view(), storage).data(), buf.data());  // no copy when contiguous
}

TEST(TensorView, ContiguityIgnoresSizeOneAndEmptyDimensions) {
  float x[6] = {};
  EXPECT_TRUE(ConstTensorView(x, {1, 6}, {99, 1}).is_contiguous());
  EXPECT_TRUE(ConstTensorView(x, {2, 0, 3}, {7, 5, 3}).is_contiguous());
  EXPECT_FALSE(ConstTensorView(x, {2, 3}, {1, 2}).is_contiguous());
}

TEST(TensorView, BadStridesAndRangesAreErrors) {
  float x[6] = {};
  EXPECT_THROW(ConstTensorView(x, {2, 3}, {3}), ArgumentError);
  EXPECT_THROW(ConstTensorView(x, {2, 3}, {3, -1}), ArgumentError);
  const ConstTensorView v(x, {2, 3});
  EXPECT_THROW(v.narrow(1, 2, 2), ArgumentError);
  EXPECT_THROW(v.narrow(2, 0, 1), ArgumentError);
  EXPECT_THROW(v.transpose(0, 2), ArgumentError);
  EXPECT_THROW(v.stride(2), ArgumentError);
}

}  // namespace
}  // namespace llm_utils
