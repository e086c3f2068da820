#include "plot/colormap.hpp"

#include <algorithm>
#include <array>
#include <cmath>

namespace selfattn::plot {
namespace {

// matplotlib's viridis (CC0, van der Walt & Smith) at 19 evenly spaced points, 8-bit sRGB.
// Linear interpolation between them stays within a couple of levels of the 256-entry table.
constexpr std::array<Rgb, 19> kViridis = {{
    {68, 1, 84},    {72, 22, 104},  {72, 40, 120},  {68, 57, 131},  {62, 74, 137},
    {55, 90, 140},  {49, 104, 142}, {43, 117, 142}, {38, 130, 142}, {33, 145, 140},
    {31, 158, 137}, {37, 171, 130}, {53, 183, 121}, {78, 195, 107}, {108, 205, 90},
    {142, 214, 69}, {181, 222, 43}, {218, 227, 25}, {253, 231, 37},
}};

}  // namespace

Rgb viridis(double t) {
  if (std::isnan(t)) return kNanColour;
  t = std::clamp(t, 0.0, 1.0);
  const double pos = t * static_cast<double>(kViridis.size() - 1);
  const size_t i = std::min(static_cast<size_t>(pos), kViridis.size() - 2);
  const double f = pos - static_cast<double>(i);
  const Rgb a = kViridis[i], b = kViridis[i + 1];
  const auto lerp = [f](uint8_t x, uint8_t y) {
    return static_cast<uint8_t>(std::lround(x + (y - x) * f));
  };
  return {lerp(a.r, b.r), lerp(a.g, b.g), lerp(a.b, b.b)};
}

double luminance(Rgb c) {
  const auto lin = [](uint8_t v) {
    const double s = v / 255.0;
    return s <= 0.04045 ? s / 12.92 : std::pow((s + 0.055) / 1.055, 2.4);
  };
  return 0.2126 * lin(c.r) + 0.7152 * lin(c.g) + 0.0722 * lin(c.b);
}

}  // namespace selfattn::plot
