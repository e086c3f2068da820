#include "plot/canvas.hpp"

#include <algorithm>
#include <cmath>
#include <stdexcept>
#include <string>

namespace selfattn::plot {

Canvas::Canvas(int64_t width, int64_t height, Rgb background) : width_(width), height_(height) {
  // The cap keeps a mistaken size from allocating gigabytes; pictures here are < 2000 px.
  if (width <= 0 || height <= 0 || width > 16384 || height > 16384) {
    throw std::invalid_argument("canvas size " + std::to_string(width) + "x" +
                                std::to_string(height) + " is outside 1..16384");
  }
  pixels_.resize(static_cast<size_t>(width * height * 3));
  for (size_t i = 0; i < pixels_.size(); i += 3) {
    pixels_[i] = background.r;
    pixels_[i + 1] = background.g;
    pixels_[i + 2] = background.b;
  }
}

Rgb Canvas::at(int64_t x, int64_t y) const {
  if (!inside(x, y)) throw std::out_of_range("pixel outside the canvas");
  const size_t i = static_cast<size_t>((y * width_ + x) * 3);
  return {pixels_[i], pixels_[i + 1], pixels_[i + 2]};
}

void Canvas::set(int64_t x, int64_t y, Rgb c) {
  if (!inside(x, y)) return;
  const size_t i = static_cast<size_t>((y * width_ + x) * 3);
  pixels_[i] = c.r;
  pixels_[i + 1] = c.g;
  pixels_[i + 2] = c.b;
}

void Canvas::blend(int64_t x, int64_t y, Rgb c, float alpha) {
  if (!inside(x, y) || !(alpha > 0.0f)) return;
  alpha = std::min(alpha, 1.0f);
  const size_t i = static_cast<size_t>((y * width_ + x) * 3);
  const auto mix = [alpha](uint8_t old, uint8_t add) {
    return static_cast<uint8_t>(std::lround(old + (add - old) * alpha));
  };
  pixels_[i] = mix(pixels_[i], c.r);
  pixels_[i + 1] = mix(pixels_[i + 1], c.g);
  pixels_[i + 2] = mix(pixels_[i + 2], c.b);
}

void Canvas::fill_rect(int64_t x, int64_t y, int64_t w, int64_t h, Rgb c) {
  const int64_t x0 = std::max<int64_t>(x, 0), x1 = std::min(x + w, width_);
  const int64_t y0 = std::max<int64_t>(y, 0), y1 = std::min(y + h, height_);
  for (int64_t yy = y0; yy < y1; ++yy) {
    for (int64_t xx = x0; xx < x1; ++xx) set(xx, yy, c);
  }
}

void Canvas::stroke_rect(int64_t x, int64_t y, int64_t w, int64_t h, Rgb c, int64_t thickness) {
  fill_rect(x, y, w, thickness, c);
  fill_rect(x, y + h - thickness, w, thickness, c);
  fill_rect(x, y, thickness, h, c);
  fill_rect(x + w - thickness, y, thickness, h, c);
}

namespace {

// Distance from pixel centre p to the segment ab.
double segment_distance(Point p, Point a, Point b) {
  const double dx = b.x - a.x, dy = b.y - a.y;
  const double len2 = dx * dx + dy * dy;
  double t = len2 > 0 ? ((p.x - a.x) * dx + (p.y - a.y) * dy) / len2 : 0.0;
  t = std::clamp(t, 0.0, 1.0);
  const double ex = a.x + t * dx - p.x, ey = a.y + t * dy - p.y;
  return std::sqrt(ex * ex + ey * ey);
}

}  // namespace

void Canvas::polyline(const std::vector<Point>& points, Rgb c, double width) {
  if (points.empty()) return;
  std::vector<Point> pts = points;
  if (pts.size() == 1) pts.push_back(pts.front());  // a single point draws a dot
  const double reach = width / 2 + 1;
  // Coverage per pixel, the maximum over segments, so overlapping segments do not add up.
  std::vector<float> cover(static_cast<size_t>(width_ * height_), 0.0f);
  for (size_t s = 0; s + 1 < pts.size(); ++s) {
    const Point a = pts[s], b = pts[s + 1];
    if (!std::isfinite(a.x) || !std::isfinite(a.y) || !std::isfinite(b.x) || !std::isfinite(b.y)) {
      continue;
    }
    const int64_t x0 =
        std::max<int64_t>(0, static_cast<int64_t>(std::floor(std::min(a.x, b.x) - reach)));
    const int64_t x1 =
        std::min<int64_t>(width_ - 1, static_cast<int64_t>(std::ceil(std::max(a.x, b.x) + reach)));
    const int64_t y0 =
        std::max<int64_t>(0, static_cast<int64_t>(std::floor(std::min(a.y, b.y) - reach)));
    const int64_t y1 =
        std::min<int64_t>(height_ - 1, static_cast<int64_t>(std::ceil(std::max(a.y, b.y) + reach)));
    for (int64_t y = y0; y <= y1; ++y) {
      for (int64_t x = x0; x <= x1; ++x) {
        const double d = segment_distance({x + 0.5, y + 0.5}, a, b);
        const float cov = static_cast<float>(std::clamp(width / 2 + 0.5 - d, 0.0, 1.0));
        float& slot = cover[static_cast<size_t>(y * width_ + x)];
        slot = std::max(slot, cov);
      }
    }
  }
  for (int64_t y = 0; y < height_; ++y) {
    for (int64_t x = 0; x < width_; ++x) blend(x, y, c, cover[static_cast<size_t>(y * width_ + x)]);
  }
}

}  // namespace selfattn::plot
