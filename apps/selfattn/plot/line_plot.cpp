#include "plot/line_plot.hpp"

#include <algorithm>
#include <cmath>
#include <stdexcept>

#include "plot/ticks.hpp"

namespace selfattn::plot {
namespace {

constexpr double kTitlePx = 19, kAxisPx = 15, kTickPx = 13, kLegendPx = 13;
constexpr int64_t kMargin = 16;
constexpr Rgb kInk{30, 30, 30};
constexpr Rgb kFrame{90, 90, 90};
constexpr Rgb kGrid{226, 226, 226};
constexpr Rgb kRaw{158, 202, 225};  // light blue: every step, noisy
constexpr Rgb kSmooth{8, 81, 156};  // dark blue: the trend

// Mean over a window centred on each point, clipped at the ends (so it neither lags behind
// the data as a trailing mean does nor ends on a single noisy point); non-finite points are
// skipped.
std::vector<double> running_mean(const std::vector<double>& y, int64_t window) {
  const auto n = static_cast<int64_t>(y.size());
  std::vector<double> out(y.size(), NAN);
  for (int64_t i = 0; i < n; ++i) {
    double sum = 0;
    int64_t count = 0;
    for (int64_t k = std::max<int64_t>(0, i - window / 2); k <= std::min(n - 1, i + window / 2);
         ++k) {
      const double v = y[static_cast<size_t>(k)];
      if (std::isfinite(v)) sum += v, ++count;
    }
    if (count > 0) out[static_cast<size_t>(i)] = sum / static_cast<double>(count);
  }
  return out;
}

}  // namespace

Canvas render_line_plot(const Font& font, const std::vector<double>& y, const LinePlotOptions& o) {
  const auto plottable = [&o](double v) { return std::isfinite(v) && (!o.log_y || v > 0); };
  double ymin = INFINITY, ymax = -INFINITY;
  for (double v : y) {
    if (plottable(v)) ymin = std::min(ymin, v), ymax = std::max(ymax, v);
  }
  if (ymin > ymax) throw std::invalid_argument("line plot: no finite (positive) value to plot");
  const auto tr = [&o](double v) { return o.log_y ? std::log10(v) : v; };
  double lo = tr(ymin), hi = tr(ymax);
  const double pad =
      hi > lo ? 0.05 * (hi - lo) : (o.log_y ? 0.3 : 0.5 * std::max(1.0, std::fabs(hi)));
  lo -= pad, hi += pad;
  const Ticks yt =
      o.log_y ? log_ticks(std::pow(10.0, lo), std::pow(10.0, hi)) : linear_ticks(lo, hi, 6);

  const double n = static_cast<double>(y.size());
  const double x_lo = 1, x_hi = std::max(n, 2.0);
  const Ticks xt = linear_ticks(x_lo, x_hi, 8);

  const int64_t lh_title = o.title.empty() ? 0 : font.line_height(kTitlePx);
  const int64_t lh_axis = font.line_height(kAxisPx), lh_tick = font.line_height(kTickPx);
  int64_t tick_w = 0;
  for (const auto& s : yt.labels) tick_w = std::max(tick_w, font.text_width(s, kTickPx));
  const int64_t width = std::max(o.width, font.text_width(o.title, kTitlePx) + 2 * kMargin);
  const int64_t px = kMargin + lh_axis + 10 + tick_w + 8;
  const int64_t py = kMargin + lh_title + (o.title.empty() ? 0 : 14);
  const int64_t pw = width - px - kMargin - 12;
  const int64_t ph = o.height - py - (8 + lh_tick + 10 + lh_axis + kMargin);
  if (pw < 50 || ph < 50) throw std::invalid_argument("line plot: picture too small");

  const auto map_x = [&](double x) { return px + (x - x_lo) / (x_hi - x_lo) * (pw - 1); };
  const auto map_y = [&](double v) { return py + (hi - tr(v)) / (hi - lo) * (ph - 1); };

  Canvas c(width, o.height, kWhite);
  if (!o.title.empty()) font.draw(c, o.title, kTitlePx, kInk, width / 2, kMargin, HAlign::center);

  // Grid and tick labels first, so the curves draw over them.
  for (size_t k = 0; k < yt.values.size(); ++k) {
    const auto yy = static_cast<int64_t>(std::lround(map_y(yt.values[k])));
    c.fill_rect(px, yy, pw, 1, kGrid);
    c.fill_rect(px - 5, yy, 5, 1, kFrame);
    font.draw(c, yt.labels[k], kTickPx, kInk, px - 8, yy, HAlign::right, VAlign::middle);
  }
  if (o.log_y) {
    // Unlabelled minor ticks at 2..9 x 10^e, so the scale reads as logarithmic at a glance.
    for (int e = static_cast<int>(std::floor(lo)); e <= static_cast<int>(std::ceil(hi)); ++e) {
      for (int m = 2; m <= 9; ++m) {
        const double v = m * std::pow(10.0, e);
        if (std::log10(v) < lo || std::log10(v) > hi) continue;
        c.fill_rect(px - 4, static_cast<int64_t>(std::lround(map_y(v))), 4, 1, kFrame);
      }
    }
  }
  for (size_t k = 0; k < xt.values.size(); ++k) {
    const auto xx = static_cast<int64_t>(std::lround(map_x(xt.values[k])));
    c.fill_rect(xx, py, 1, ph, kGrid);
    c.fill_rect(xx, py + ph, 1, 5, kFrame);
    font.draw(c, xt.labels[k], kTickPx, kInk, xx, py + ph + 8, HAlign::center, VAlign::top);
  }
  c.stroke_rect(px - 1, py - 1, pw + 2, ph + 2, kFrame);
  font.draw(c, o.x_title, kAxisPx, kInk, px + pw / 2, py + ph + 8 + lh_tick + 10, HAlign::center);
  font.draw(c, o.y_title, kAxisPx, kInk, kMargin, py + ph / 2, HAlign::left, VAlign::middle, true);

  // The curves, split where a value cannot be plotted.
  const int64_t window =
      o.smooth_window > 0 ? o.smooth_window : std::clamp<int64_t>(y.size() / 20, 1, 100);
  const auto draw_series = [&](const std::vector<double>& s, Rgb colour, double line_width) {
    std::vector<Point> run;
    for (size_t i = 0; i <= s.size(); ++i) {
      if (i < s.size() && plottable(s[i])) {
        run.push_back({map_x(static_cast<double>(i + 1)), map_y(s[i])});
        continue;
      }
      c.polyline(run, colour, line_width);
      run.clear();
    }
  };
  const bool smooth = window > 1;
  draw_series(y, smooth ? kRaw : kSmooth, smooth ? 1.2 : 2.0);
  std::string smooth_label;
  if (smooth) {
    draw_series(running_mean(y, window), kSmooth, 2.2);
    smooth_label = "running mean over " + std::to_string(window) + " steps";
  }

  // Legend in the top-right corner of the plot area.
  const std::vector<std::pair<std::string, Rgb>> entries =
      smooth ? std::vector<std::pair<std::string, Rgb>>{{o.series_label, kRaw},
                                                        {smooth_label, kSmooth}}
             : std::vector<std::pair<std::string, Rgb>>{{o.series_label, kSmooth}};
  int64_t text_w = 0;
  for (const auto& e : entries) text_w = std::max(text_w, font.text_width(e.first, kLegendPx));
  const int64_t lh = font.line_height(kLegendPx) + 4;
  const int64_t lw = 10 + 28 + 8 + text_w + 10,
                lhgt = 8 + lh * static_cast<int64_t>(entries.size()) + 4;
  const int64_t lx = px + pw - lw - 10, ly = py + 10;
  c.fill_rect(lx, ly, lw, lhgt, kWhite);
  c.stroke_rect(lx, ly, lw, lhgt, kGrid);
  for (size_t k = 0; k < entries.size(); ++k) {
    const double yc = static_cast<double>(ly + 8 + static_cast<int64_t>(k) * lh + lh / 2);
    c.polyline({{static_cast<double>(lx + 10), yc}, {static_cast<double>(lx + 38), yc}},
               entries[k].second, 2.4);
    font.draw(c, entries[k].first, kLegendPx, kInk, lx + 46, static_cast<int64_t>(yc), HAlign::left,
              VAlign::middle);
  }
  return c;
}

}  // namespace selfattn::plot
