#include "plot/heatmap.hpp"

#include <algorithm>
#include <cmath>
#include <cstdio>
#include <stdexcept>

#include "plot/colormap.hpp"
#include "plot/ticks.hpp"

namespace selfattn::plot {
namespace {

constexpr double kTitlePx = 19, kLabelPx = 15, kAxisPx = 15, kTickPx = 13;
constexpr int64_t kMargin = 16;
constexpr Rgb kInk{30, 30, 30};
constexpr Rgb kFrame{90, 90, 90};
constexpr size_t kMaxLabelChars = 16;

std::string shorten(const std::string& s) {
  const std::vector<char32_t> cps = decode_utf8(s);
  if (cps.size() <= kMaxLabelChars) return s;
  // Cut at a code-point boundary: walk the bytes of the first kMaxLabelChars - 1 code points.
  size_t bytes = 0, seen = 0;
  while (bytes < s.size() && seen < kMaxLabelChars - 1) {
    ++bytes;
    while (bytes < s.size() && (static_cast<unsigned char>(s[bytes]) >> 6) == 2) ++bytes;
    ++seen;
  }
  return s.substr(0, bytes) + "\u2026";
}

std::vector<std::string> labels_or_indices(const std::vector<std::string>& given, int64_t n,
                                           const char* what) {
  if (given.empty()) {
    std::vector<std::string> out;
    for (int64_t i = 0; i < n; ++i) out.push_back(std::to_string(i));
    return out;
  }
  if (static_cast<int64_t>(given.size()) != n) {
    throw std::invalid_argument(std::to_string(given.size()) + " " + what + " labels for " +
                                std::to_string(n) + " " + what + "s");
  }
  std::vector<std::string> out;
  for (const std::string& s : given) out.push_back(shorten(s));
  return out;
}

// The value range of the colour scale: given ends, else the finite min and max; a constant
// matrix gets a unit-wide range so it still has a scale to read.
void value_range(llm_utils::ConstTensorView m, const HeatmapOptions& o, double* lo, double* hi) {
  double mn = INFINITY, mx = -INFINITY;
  for (int64_t i = 0; i < m.numel(); ++i) {
    const double v = m.data()[i];
    if (std::isfinite(v)) {
      mn = std::min(mn, v);
      mx = std::max(mx, v);
    }
  }
  if (mn > mx) mn = 0, mx = 1;  // nothing finite
  if (mx - mn <= 1e-12 * std::max(1.0, std::fabs(mx))) {
    mn = std::min(mn, 0.0);
    mx = std::max(mx, mn + 1.0);
  }
  *lo = o.vmin.value_or(mn);
  *hi = o.vmax.value_or(mx);
  if (!(*hi > *lo)) {
    throw std::invalid_argument("colour scale: vmin (" + format_number(*lo) +
                                ") must be below vmax (" + format_number(*hi) + ")");
  }
}

// How a cell's value is printed, or "" when it would not fit the cell.
std::string cell_text(const Font& font, double v, double px, int64_t cell, bool unit_range) {
  if (std::isnan(v)) return "nan";
  for (int decimals : {3, 2}) {
    char buf[32];
    std::snprintf(buf, sizeof buf, "%.*f", decimals, v);
    const std::string s = unit_range ? std::string(buf) : format_number(v, decimals);
    if (font.text_width(s, px) + 6 <= cell) return s;
  }
  return "";
}

// Means of k x k blocks of m (the last block of a row or column may be smaller); NaN stays NaN.
std::vector<float> block_means(llm_utils::ConstTensorView m, int64_t k, int64_t* rows,
                               int64_t* cols) {
  const int64_t r = m.size(0), c = m.size(1);
  *rows = (r + k - 1) / k;
  *cols = (c + k - 1) / k;
  std::vector<double> sum(static_cast<size_t>(*rows * *cols), 0.0);
  std::vector<int64_t> count(sum.size(), 0);
  for (int64_t i = 0; i < r; ++i) {
    for (int64_t j = 0; j < c; ++j) {
      const size_t b = static_cast<size_t>((i / k) * *cols + j / k);
      sum[b] += m.data()[i * c + j];
      ++count[b];
    }
  }
  std::vector<float> out(sum.size());
  for (size_t b = 0; b < out.size(); ++b) out[b] = static_cast<float>(sum[b] / count[b]);
  return out;
}

// The labels of the blocks: each block's first token.
std::vector<std::string> block_labels(const std::vector<std::string>& labels, int64_t k) {
  std::vector<std::string> out;
  for (size_t i = 0; i < labels.size(); i += static_cast<size_t>(k)) out.push_back(labels[i]);
  return out;
}

}  // namespace

Canvas render_heatmap(const Font& font, llm_utils::ConstTensorView m, const HeatmapOptions& o,
                      HeatmapLayout* layout) {
  if (m.dim() != 2 || m.numel() == 0) {
    throw std::invalid_argument("heatmap needs a non-empty 2-D matrix");
  }
  std::vector<std::string> rlab = labels_or_indices(o.row_labels, m.size(0), "row");
  std::vector<std::string> clab = labels_or_indices(o.col_labels, m.size(1), "column");
  const int64_t block = (std::max(m.size(0), m.size(1)) + kMaxHeatmapCells - 1) / kMaxHeatmapCells;
  std::vector<float> pooled;
  std::string x_title = o.x_title, y_title = o.y_title;
  if (block > 1) {
    int64_t r = 0, c = 0;
    pooled = block_means(m, block, &r, &c);
    m = llm_utils::ConstTensorView(pooled.data(), {r, c});
    rlab = block_labels(rlab, block);
    clab = block_labels(clab, block);
    const std::string note = " (mean of blocks of " + std::to_string(block) + ")";
    x_title += note;
    y_title += note;
  }
  const int64_t rows = m.size(0), cols = m.size(1);
  double lo = 0, hi = 1;
  value_range(m, o, &lo, &hi);

  // Cells as large as fit a ~600 px grid, at most 80 px so small matrices do not look bloated,
  // but the grid at least ~240 px so that one or two tokens still make a readable picture.
  const int64_t n = std::max(rows, cols);
  const int64_t cell = std::max<int64_t>({std::min<int64_t>(600 / n, 80), (240 + n - 1) / n, 2});
  const int64_t lh_label = font.line_height(kLabelPx);
  int64_t row_label_w = 0, col_label_w = 0;
  for (const auto& s : rlab) row_label_w = std::max(row_label_w, font.text_width(s, kLabelPx));
  for (const auto& s : clab) col_label_w = std::max(col_label_w, font.text_width(s, kLabelPx));
  // Label every k-th row/column when cells are shorter than a line of text.
  const int64_t stride = std::max<int64_t>(1, (lh_label + 2 + cell - 1) / cell);
  const bool vertical_cols = col_label_w + 8 > cell * stride;

  const int64_t grid_w = cols * cell, grid_h = rows * cell;
  const int64_t area_h = std::max<int64_t>(grid_h, 200);  // room for a readable colour bar
  const int64_t lh_title = o.title.empty() ? 0 : font.line_height(kTitlePx);
  const int64_t lh_axis = font.line_height(kAxisPx);
  const int64_t grid_x = kMargin + lh_axis + 10 + row_label_w + 10;
  const int64_t grid_y = kMargin + lh_title + (o.title.empty() ? 0 : 14);
  const int64_t col_labels_h = vertical_cols ? col_label_w : lh_label;

  const Ticks ticks = linear_ticks(lo, hi, 6);
  int64_t tick_w = 0;
  for (const auto& s : ticks.labels) tick_w = std::max(tick_w, font.text_width(s, kTickPx));
  const int64_t bar_x = grid_x + grid_w + 28, bar_w = 22;
  const int64_t bar_title_x = bar_x + bar_w + 6 + 4 + tick_w + 10;
  const int64_t width =
      std::max(bar_title_x + lh_axis + kMargin, font.text_width(o.title, kTitlePx) + 2 * kMargin);
  const int64_t height =
      std::max(grid_y + area_h, grid_y + grid_h + 8 + col_labels_h + 10 + lh_axis) + kMargin;

  Canvas c(width, height, kWhite);
  if (!o.title.empty()) font.draw(c, o.title, kTitlePx, kInk, width / 2, kMargin, HAlign::center);

  // The cells, with values printed in black or white, whichever reads better on the colour.
  const bool show_values = o.cell_values == CellValues::always ||
                           (o.cell_values == CellValues::automatic && rows <= 16 && cols <= 16);
  const double value_px = std::clamp(cell * 0.24, 9.0, 15.0);
  const bool unit_range = lo >= -1e-6 && hi <= 1 + 1e-6;
  for (int64_t i = 0; i < rows; ++i) {
    for (int64_t j = 0; j < cols; ++j) {
      const double v = m.data()[i * cols + j];
      const Rgb colour = std::isnan(v) ? kNanColour : viridis((v - lo) / (hi - lo));
      const int64_t x = grid_x + j * cell, y = grid_y + i * cell;
      c.fill_rect(x, y, cell, cell, colour);
      if (!show_values || cell < 14) continue;
      const std::string s = cell_text(font, v, value_px, cell, unit_range);
      const Rgb ink = luminance(colour) > 0.35 ? kBlack : kWhite;
      font.draw(c, s, value_px, ink, x + cell / 2, y + cell / 2, HAlign::center, VAlign::middle);
    }
  }
  c.stroke_rect(grid_x - 1, grid_y - 1, grid_w + 2, grid_h + 2, kFrame);

  // Token labels with small ticks: rows on the left, columns below.
  for (int64_t i = 0; i < rows; i += stride) {
    const int64_t yc = grid_y + i * cell + cell / 2;
    c.fill_rect(grid_x - 5, yc, 4, 1, kFrame);
    font.draw(c, rlab[static_cast<size_t>(i)], kLabelPx, kInk, grid_x - 8, yc, HAlign::right,
              VAlign::middle);
  }
  for (int64_t j = 0; j < cols; j += stride) {
    const int64_t xc = grid_x + j * cell + cell / 2;
    c.fill_rect(xc, grid_y + grid_h + 1, 1, 4, kFrame);
    // Vertical labels read upwards and end at the axis, as matplotlib's rotation=90.
    font.draw(c, clab[static_cast<size_t>(j)], kLabelPx, kInk, xc, grid_y + grid_h + 7,
              HAlign::center, VAlign::top, vertical_cols);
  }

  // Axis titles.
  font.draw(c, x_title, kAxisPx, kInk, grid_x + grid_w / 2, grid_y + grid_h + 8 + col_labels_h + 8,
            HAlign::center, VAlign::top);
  font.draw(c, y_title, kAxisPx, kInk, kMargin, grid_y + grid_h / 2, HAlign::left, VAlign::middle,
            true);

  // Colour bar: value hi at the top, lo at the bottom, ticks with values on its right.
  const int64_t bar_y = grid_y, bar_h = area_h;
  for (int64_t y = 0; y < bar_h; ++y) {
    const double t = 1.0 - (static_cast<double>(y) + 0.5) / static_cast<double>(bar_h);
    c.fill_rect(bar_x, bar_y + y, bar_w, 1, viridis(t));
  }
  c.stroke_rect(bar_x - 1, bar_y - 1, bar_w + 2, bar_h + 2, kFrame);
  for (size_t k = 0; k < ticks.values.size(); ++k) {
    const double t = (ticks.values[k] - lo) / (hi - lo);
    const int64_t y = bar_y + static_cast<int64_t>(std::lround((1.0 - t) * (bar_h - 1)));
    c.fill_rect(bar_x + bar_w + 1, y, 5, 1, kFrame);
    font.draw(c, ticks.labels[k], kTickPx, kInk, bar_x + bar_w + 10, y, HAlign::left,
              VAlign::middle);
  }
  if (!o.bar_title.empty()) {
    font.draw(c, o.bar_title, kAxisPx, kInk, bar_title_x, bar_y + bar_h / 2, HAlign::left,
              VAlign::middle, true);
  }
  if (layout != nullptr) *layout = {grid_x, grid_y, cell, bar_x, bar_y, bar_w, bar_h, block};
  return c;
}

}  // namespace selfattn::plot
