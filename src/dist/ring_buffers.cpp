// KvBlock (ring_buffers.hpp).

#include "dist/ring_buffers.hpp"

#include "dist/view_ops.hpp"

namespace llm_utils::dist::detail {

Shape with_rows(Shape shape, int64_t dim, int64_t rows) {
  shape[static_cast<size_t>(dim)] = rows;
  return shape;
}

KvBlock KvBlock::empty(const SequenceProblem& p, int owner, bool with_k) {
  KvBlock b;
  b.k_shape_ = with_k ? p.kv_shape_of(owner, p.d) : Shape{0};
  b.v_shape_ = p.kv_shape_of(owner, p.dv);
  b.k_numel_ = shape_numel(b.k_shape_);
  b.storage_ = Tensor({b.k_numel_ + shape_numel(b.v_shape_)});
  return b;
}

KvBlock KvBlock::packed(const SequenceProblem& p, int owner, ConstTensorView k, ConstTensorView v) {
  KvBlock b = empty(p, owner);
  copy_into(k, b.k());
  copy_into(v, b.v());
  return b;
}

}  // namespace llm_utils::dist::detail
