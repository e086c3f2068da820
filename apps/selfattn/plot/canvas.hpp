#pragma once
// An RGB raster the CLI draws its pictures on: filled rectangles, anti-aliased polylines and
// alpha-blended coverage masks (text). Everything outside the canvas is clipped, so callers can
// draw near the edges without checks.

#include <cstdint>
#include <vector>

namespace selfattn::plot {

struct Rgb {
  uint8_t r = 0, g = 0, b = 0;
  friend bool operator==(const Rgb&, const Rgb&) = default;
};

inline constexpr Rgb kWhite{255, 255, 255};
inline constexpr Rgb kBlack{0, 0, 0};

struct Point {
  double x = 0, y = 0;
};

class Canvas {
 public:
  /// Throws std::invalid_argument unless 0 < width, height <= 16384.
  Canvas(int64_t width, int64_t height, Rgb background = kWhite);

  int64_t width() const { return width_; }
  int64_t height() const { return height_; }
  /// Row-major RGB bytes, 3 per pixel.
  const std::vector<uint8_t>& pixels() const { return pixels_; }

  /// Throws std::out_of_range outside the canvas (tests read pixels; drawing clips instead).
  Rgb at(int64_t x, int64_t y) const;
  void set(int64_t x, int64_t y, Rgb c);
  /// Mixes `c` into the pixel with weight alpha in [0, 1].
  void blend(int64_t x, int64_t y, Rgb c, float alpha);

  void fill_rect(int64_t x, int64_t y, int64_t w, int64_t h, Rgb c);
  /// A `thickness`-pixel frame drawn inside the rectangle.
  void stroke_rect(int64_t x, int64_t y, int64_t w, int64_t h, Rgb c, int64_t thickness = 1);
  /// An anti-aliased polyline of the given width. Joints are not darkened: the coverage of all
  /// segments is merged before it is blended once.
  void polyline(const std::vector<Point>& points, Rgb c, double width);

 private:
  bool inside(int64_t x, int64_t y) const { return x >= 0 && y >= 0 && x < width_ && y < height_; }
  int64_t width_, height_;
  std::vector<uint8_t> pixels_;
};

}  // namespace selfattn::plot
