#pragma once
// Text on a Canvas with a TrueType font (stb_truetype), anti-aliased, horizontal or rotated a
// quarter turn counter-clockwise (for vertical axis titles and tall column labels).

#include <memory>
#include <string>
#include <string_view>
#include <vector>

#include "plot/canvas.hpp"

namespace selfattn::plot {

/// Where (x, y) sits on the text's box, before rotation is taken into account: for vertical text
/// the box is the rotated one, so `left` is the side where the text's baseline is.
enum class HAlign { left, center, right };
enum class VAlign { top, middle, bottom };

class Font {
 public:
  /// Loads a .ttf file; throws std::runtime_error naming the path when it cannot be read or is
  /// not a font.
  explicit Font(const std::string& path);
  ~Font();
  Font(Font&&) noexcept;
  Font& operator=(Font&&) noexcept;

  /// The font the CLI draws with: $SELFATTN_FONT when set, else DejaVu Sans from Debian's
  /// fonts-dejavu-core. Throws with a message that says what to install when neither exists.
  static Font load_default();

  /// Width and height in pixels of `text` (UTF-8) at pixel height `px`, unrotated.
  int64_t text_width(std::string_view text, double px) const;
  int64_t line_height(double px) const;

  /// Draws `text` so that the point (x, y) is at the given alignment of its bounding box. With
  /// `vertical`, the text reads bottom to top and the box is line_height wide.
  void draw(Canvas& canvas, std::string_view text, double px, Rgb colour, int64_t x, int64_t y,
            HAlign h = HAlign::left, VAlign v = VAlign::top, bool vertical = false) const;

  /// The unrotated coverage mask of `text` (width x line_height, row-major, 0..1).
  std::vector<float> rasterize(std::string_view text, double px, int64_t* width,
                               int64_t* height) const;

 private:
  struct Impl;
  std::unique_ptr<Impl> impl_;
};

/// Decodes UTF-8 into code points; malformed bytes become U+FFFD.
std::vector<char32_t> decode_utf8(std::string_view text);

}  // namespace selfattn::plot
