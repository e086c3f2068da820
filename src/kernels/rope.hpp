#pragma once
// RoPE on rows of a packed projection (the modules' qkv, B*N rows of (H + 2G) * hd floats): the
// rotation of llm_utils/rope.hpp applied to `heads` consecutive head vectors of each row.

#include <cstdint>

#include "llm_utils/bfloat16.hpp"
#include "llm_utils/rope.hpp"

namespace llm_utils::detail {

/// Rotates, in place, the `heads` head vectors (hd = table.head_dim() floats each, side by
/// side) that start each of `rows` rows; row r starts at data + r * row_stride and sits at
/// position positions[r] (every position inside the table: the caller checked). `inverse`: the
/// rotation by minus the angles (the backward).
void rope_rows(float* data, int64_t rows, int64_t row_stride, int64_t heads,
               const int64_t* positions, const RopeTable& table, bool inverse);
/// The same on bfloat16 rows: each element widened, rotated in float32 and rounded once.
void rope_rows(bfloat16* data, int64_t rows, int64_t row_stride, int64_t heads,
               const int64_t* positions, const RopeTable& table, bool inverse);

}  // namespace llm_utils::detail
