#pragma once
// The one type the GEMM wrappers of the blas and kernels layers share.

namespace llm_utils::detail {

/// Whether a GEMM operand is read as stored (no) or transposed (yes).
enum class Trans : bool { no = false, yes = true };

}  // namespace llm_utils::detail
