#pragma once
// PNG output through libpng.

#include <string>

#include "plot/canvas.hpp"

namespace selfattn::plot {

/// The bytes of an 8-bit RGB PNG of the canvas. Throws std::runtime_error if libpng fails.
std::string encode_png(const Canvas& canvas);

/// Writes the PNG atomically: to a temporary file in the same folder, then renamed over `path`,
/// so a failed write never leaves a half-written picture. Throws std::runtime_error naming the
/// path and the reason.
void write_png(const std::string& path, const Canvas& canvas);

}  // namespace selfattn::plot
