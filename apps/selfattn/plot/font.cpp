#include "plot/font.hpp"

#include <stb_truetype.h>

#include <algorithm>
#include <cmath>
#include <cstdlib>
#include <fstream>
#include <iterator>
#include <stdexcept>

namespace selfattn::plot {

struct Font::Impl {
  std::vector<unsigned char> data;  // stbtt_fontinfo points into this; it must not move
  stbtt_fontinfo info{};
  int ascent = 0, descent = 0, line_gap = 0;
};

Font::Font(const std::string& path) : impl_(std::make_unique<Impl>()) {
  std::ifstream in(path, std::ios::binary);
  if (!in) throw std::runtime_error("cannot read font '" + path + "'");
  impl_->data.assign(std::istreambuf_iterator<char>(in), std::istreambuf_iterator<char>());
  const int offset = stbtt_GetFontOffsetForIndex(impl_->data.data(), 0);
  if (impl_->data.size() < 12 || offset < 0 ||
      !stbtt_InitFont(&impl_->info, impl_->data.data(), offset)) {
    throw std::runtime_error("'" + path + "' is not a TrueType font");
  }
  stbtt_GetFontVMetrics(&impl_->info, &impl_->ascent, &impl_->descent, &impl_->line_gap);
}

Font::~Font() = default;
Font::Font(Font&&) noexcept = default;
Font& Font::operator=(Font&&) noexcept = default;

Font Font::load_default() {
  if (const char* env = std::getenv("SELFATTN_FONT"); env != nullptr && *env != '\0') {
    return Font(env);
  }
  const char* candidates[] = {"/usr/share/fonts/truetype/dejavu/DejaVuSans.ttf",
                              "/usr/local/share/fonts/DejaVuSans.ttf"};
  for (const char* path : candidates) {
    if (std::ifstream(path).good()) return Font(path);
  }
  throw std::runtime_error(
      "no font to draw labels with: install Debian's fonts-dejavu-core (looked for "
      "/usr/share/fonts/truetype/dejavu/DejaVuSans.ttf) or set SELFATTN_FONT=/path/to/font.ttf");
}

std::vector<char32_t> decode_utf8(std::string_view text) {
  std::vector<char32_t> out;
  for (size_t i = 0; i < text.size();) {
    const auto b0 = static_cast<unsigned char>(text[i]);
    int len = b0 < 0x80 ? 1 : (b0 >> 5) == 6 ? 2 : (b0 >> 4) == 14 ? 3 : (b0 >> 3) == 30 ? 4 : 0;
    char32_t cp = len == 1 ? b0 : len == 2 ? (b0 & 0x1F) : len == 3 ? (b0 & 0x0F) : (b0 & 0x07);
    bool ok = len > 0 && i + static_cast<size_t>(len) <= text.size();
    for (int k = 1; ok && k < len; ++k) {
      const auto b = static_cast<unsigned char>(text[i + static_cast<size_t>(k)]);
      ok = (b >> 6) == 2;
      cp = (cp << 6) | (b & 0x3F);
    }
    if (!ok) {
      out.push_back(0xFFFD);
      ++i;
      continue;
    }
    out.push_back(cp);
    i += static_cast<size_t>(len);
  }
  return out;
}

int64_t Font::line_height(double px) const {
  const float scale = stbtt_ScaleForPixelHeight(&impl_->info, static_cast<float>(px));
  return static_cast<int64_t>(std::ceil((impl_->ascent - impl_->descent) * scale));
}

int64_t Font::text_width(std::string_view text, double px) const {
  const float scale = stbtt_ScaleForPixelHeight(&impl_->info, static_cast<float>(px));
  const std::vector<char32_t> cps = decode_utf8(text);
  double x = 0;
  for (size_t i = 0; i < cps.size(); ++i) {
    int advance = 0, lsb = 0;
    stbtt_GetCodepointHMetrics(&impl_->info, static_cast<int>(cps[i]), &advance, &lsb);
    x += advance * scale;
    if (i + 1 < cps.size()) {
      x += scale * stbtt_GetCodepointKernAdvance(&impl_->info, static_cast<int>(cps[i]),
                                                 static_cast<int>(cps[i + 1]));
    }
  }
  return static_cast<int64_t>(std::ceil(x));
}

std::vector<float> Font::rasterize(std::string_view text, double px, int64_t* width,
                                   int64_t* height) const {
  const float scale = stbtt_ScaleForPixelHeight(&impl_->info, static_cast<float>(px));
  const int64_t w = std::max<int64_t>(1, text_width(text, px) + 2);
  const int64_t h = std::max<int64_t>(1, line_height(px));
  const int baseline = static_cast<int>(std::lround(impl_->ascent * scale));
  std::vector<float> mask(static_cast<size_t>(w * h), 0.0f);
  std::vector<unsigned char> glyph;
  const std::vector<char32_t> cps = decode_utf8(text);
  double pen = 0;
  for (size_t i = 0; i < cps.size(); ++i) {
    const int cp = static_cast<int>(cps[i]);
    int advance = 0, lsb = 0;
    stbtt_GetCodepointHMetrics(&impl_->info, cp, &advance, &lsb);
    const float shift = static_cast<float>(pen - std::floor(pen));
    int x0 = 0, y0 = 0, x1 = 0, y1 = 0;
    stbtt_GetCodepointBitmapBoxSubpixel(&impl_->info, cp, scale, scale, shift, 0, &x0, &y0, &x1,
                                        &y1);
    const int gw = x1 - x0, gh = y1 - y0;
    if (gw > 0 && gh > 0) {
      glyph.assign(static_cast<size_t>(gw * gh), 0);
      stbtt_MakeCodepointBitmapSubpixel(&impl_->info, glyph.data(), gw, gh, gw, scale, scale, shift,
                                        0, cp);
      const int64_t ox = static_cast<int64_t>(std::floor(pen)) + x0, oy = baseline + y0;
      for (int gy = 0; gy < gh; ++gy) {
        for (int gx = 0; gx < gw; ++gx) {
          const int64_t mx = ox + gx, my = oy + gy;
          if (mx < 0 || my < 0 || mx >= w || my >= h) continue;
          float& m = mask[static_cast<size_t>(my * w + mx)];
          // Max, not sum: neighbouring glyph boxes may overlap by a pixel.
          m = std::max(m, glyph[static_cast<size_t>(gy * gw + gx)] / 255.0f);
        }
      }
    }
    pen += advance * scale;
    if (i + 1 < cps.size()) {
      pen += scale * stbtt_GetCodepointKernAdvance(&impl_->info, cp, static_cast<int>(cps[i + 1]));
    }
  }
  *width = w;
  *height = h;
  return mask;
}

void Font::draw(Canvas& canvas, std::string_view text, double px, Rgb colour, int64_t x, int64_t y,
                HAlign h, VAlign v, bool vertical) const {
  int64_t w = 0, hgt = 0;
  const std::vector<float> mask = rasterize(text, px, &w, &hgt);
  // Size of the box on the canvas: a vertical text's box is the mask turned a quarter.
  const int64_t bw = vertical ? hgt : w, bh = vertical ? w : hgt;
  const int64_t left = h == HAlign::left ? x : h == HAlign::center ? x - bw / 2 : x - bw;
  const int64_t top = v == VAlign::top ? y : v == VAlign::middle ? y - bh / 2 : y - bh;
  for (int64_t my = 0; my < hgt; ++my) {
    for (int64_t mx = 0; mx < w; ++mx) {
      const float a = mask[static_cast<size_t>(my * w + mx)];
      if (a <= 0.0f) continue;
      // Counter-clockwise quarter turn: the text's start ends up at the bottom.
      const int64_t cx = vertical ? left + my : left + mx;
      const int64_t cy = vertical ? top + (w - 1 - mx) : top + my;
      canvas.blend(cx, cy, colour, a);
    }
  }
}

}  // namespace selfattn::plot
