// The CLI's picture code (apps/selfattn/plot): colours, layout, text, ticks, and PNGs that an
// independent decoder (stb_image) reads back pixel for pixel.

#include <gtest/gtest.h>
#include <stb_image.h>
#include <unistd.h>

#include <cmath>
#include <cstdlib>
#include <filesystem>
#include <fstream>
#include <iterator>
#include <string>
#include <vector>

#include "plot/canvas.hpp"
#include "plot/colormap.hpp"
#include "plot/font.hpp"
#include "plot/heatmap.hpp"
#include "plot/line_plot.hpp"
#include "plot/png.hpp"
#include "plot/ticks.hpp"

namespace plot = selfattn::plot;

namespace {

struct Decoded {
  int width = 0, height = 0;
  std::vector<uint8_t> rgb;
};

Decoded decode(const std::string& png) {
  Decoded d;
  int channels = 0;
  unsigned char* px =
      stbi_load_from_memory(reinterpret_cast<const unsigned char*>(png.data()),
                            static_cast<int>(png.size()), &d.width, &d.height, &channels, 3);
  if (px == nullptr) return d;
  d.rgb.assign(px, px + static_cast<size_t>(d.width) * d.height * 3);
  stbi_image_free(px);
  return d;
}

int colour_distance(plot::Rgb a, plot::Rgb b) {
  return std::abs(a.r - b.r) + std::abs(a.g - b.g) + std::abs(a.b - b.b);
}

// Tests that draw text need the font the CLI uses (fonts-dejavu-core, a build dependency).
plot::Font test_font() {
  return plot::Font::load_default();
}

}  // namespace

TEST(Colormap, ViridisEndsAndMiddleAreMatplotlibs) {
  EXPECT_EQ(plot::viridis(0.0), (plot::Rgb{68, 1, 84}));
  EXPECT_EQ(plot::viridis(0.5), (plot::Rgb{33, 145, 140}));
  EXPECT_EQ(plot::viridis(1.0), (plot::Rgb{253, 231, 37}));
  EXPECT_EQ(plot::viridis(-3.0), plot::viridis(0.0));  // clamped
  EXPECT_EQ(plot::viridis(7.0), plot::viridis(1.0));
  EXPECT_EQ(plot::viridis(NAN), plot::kNanColour);
}

TEST(Colormap, ViridisGetsBrighterAllTheWay) {
  // What makes it readable: larger values are always lighter, also in greyscale.
  double previous = -1;
  for (int i = 0; i <= 100; ++i) {
    const double l = plot::luminance(plot::viridis(i / 100.0));
    EXPECT_GT(l, previous) << "at t = " << i / 100.0;
    previous = l;
  }
}

TEST(Canvas, FillsClipsAndBlends) {
  plot::Canvas c(10, 5, plot::kWhite);
  EXPECT_EQ(c.width(), 10);
  EXPECT_EQ(c.height(), 5);
  EXPECT_EQ(c.pixels().size(), 10u * 5 * 3);
  c.fill_rect(8, 3, 10, 10, plot::Rgb{255, 0, 0});  // runs off the edge: clipped
  EXPECT_EQ(c.at(9, 4), (plot::Rgb{255, 0, 0}));
  EXPECT_EQ(c.at(7, 4), plot::kWhite);
  c.blend(0, 0, plot::kBlack, 0.5f);
  EXPECT_EQ(c.at(0, 0), (plot::Rgb{128, 128, 128}));
  EXPECT_THROW(c.at(10, 0), std::out_of_range);
  EXPECT_THROW(plot::Canvas(0, 5), std::invalid_argument);
}

TEST(Canvas, PolylineCoversItsPathOnly) {
  plot::Canvas c(40, 20, plot::kWhite);
  c.polyline({{2, 10}, {20, 10}, {38, 10}}, plot::kBlack, 2.0);
  EXPECT_EQ(c.at(20, 9), plot::kBlack);  // on the line (pixel centres 9.5 and 10.5)
  EXPECT_EQ(c.at(30, 10), plot::kBlack);
  EXPECT_EQ(c.at(20, 3), plot::kWhite);
  // The joint at x = 20 is no darker or wider than the rest of the line.
  EXPECT_EQ(c.at(20, 7), c.at(30, 7));
}

TEST(Ticks, LinearTicksAreRoundAndInside) {
  const plot::Ticks t = plot::linear_ticks(0.0, 1.0, 5);
  ASSERT_EQ(t.values.size(), 6u);
  EXPECT_EQ(t.labels.front(), "0.0");
  EXPECT_EQ(t.labels[1], "0.2");
  EXPECT_EQ(t.labels.back(), "1.0");
  const plot::Ticks narrow = plot::linear_ticks(0.148, 0.204, 6);
  EXPECT_EQ(narrow.labels.front(), "0.15");
  EXPECT_EQ(narrow.labels.back(), "0.20");
  for (double v : narrow.values) EXPECT_TRUE(v >= 0.148 && v <= 0.204) << v;
}

TEST(Ticks, LogTicksLabelDecadesAndNarrowRanges) {
  const plot::Ticks t = plot::log_ticks(2e-6, 0.5);
  std::vector<std::string> expected = {"1e-5", "1e-4", "0.001", "0.01", "0.1"};
  EXPECT_EQ(t.labels, expected);
  // Less than a decade with no power of ten inside: still at least two labels.
  EXPECT_GE(plot::log_ticks(0.012, 0.018).values.size(), 2u);
  EXPECT_EQ(plot::format_number(2.5e3), "2.5e3");
  EXPECT_EQ(plot::format_number(1e-5), "1e-5");
  EXPECT_EQ(plot::format_number(0.25), "0.25");
}

TEST(Png, DecodesToTheSamePixels) {
  plot::Canvas c(7, 3, plot::kWhite);
  c.set(0, 0, plot::Rgb{1, 2, 3});
  c.set(6, 2, plot::Rgb{250, 128, 7});
  const std::string png = plot::encode_png(c);
  ASSERT_GE(png.size(), 8u);
  EXPECT_EQ(png.substr(1, 3), "PNG");
  const Decoded d = decode(png);
  ASSERT_EQ(d.width, 7);
  ASSERT_EQ(d.height, 3);
  EXPECT_EQ(d.rgb, c.pixels());
}

TEST(Png, WriteIsAtomicAndNamesThePathOnFailure) {
  const auto dir =
      std::filesystem::temp_directory_path() / ("test_plot_" + std::to_string(::getpid()));
  std::filesystem::create_directories(dir);
  const std::string path = (dir / "pic.png").string();
  plot::write_png(path, plot::Canvas(4, 4));
  std::ifstream in(path, std::ios::binary);
  const std::string bytes((std::istreambuf_iterator<char>(in)), std::istreambuf_iterator<char>());
  EXPECT_EQ(decode(bytes).width, 4);
  size_t files = 0;
  for (const auto& e : std::filesystem::directory_iterator(dir)) files += e.is_regular_file();
  EXPECT_EQ(files, 1u) << "a temporary file was left behind";
  try {
    plot::write_png((dir / "missing" / "pic.png").string(), plot::Canvas(4, 4));
    FAIL() << "expected an exception";
  } catch (const std::runtime_error& e) {
    EXPECT_NE(std::string(e.what()).find("missing/pic.png"), std::string::npos) << e.what();
  }
  std::filesystem::remove_all(dir);
}

TEST(Font, MeasuresAndDrawsInsideItsBox) {
  const plot::Font font = test_font();
  const int64_t w = font.text_width("journey", 15), h = font.line_height(15);
  EXPECT_GT(w, 30);
  EXPECT_LT(w, 80);
  EXPECT_GE(h, 15);
  EXPECT_GT(font.text_width("journey!", 15), w);
  plot::Canvas c(200, 100, plot::kWhite);
  font.draw(c, "journey", 15, plot::kBlack, 100, 50, plot::HAlign::center, plot::VAlign::middle);
  int64_t x0 = 200, x1 = -1, y0 = 100, y1 = -1;
  for (int64_t y = 0; y < 100; ++y) {
    for (int64_t x = 0; x < 200; ++x) {
      if (c.at(x, y).r < 128)
        x0 = std::min(x0, x), x1 = std::max(x1, x), y0 = std::min(y0, y), y1 = std::max(y1, y);
    }
  }
  ASSERT_GE(x1, 0) << "nothing was drawn";
  EXPECT_NEAR((x0 + x1) / 2.0, 100, 4);
  EXPECT_NEAR((y0 + y1) / 2.0, 50, 5);
  EXPECT_LE(x1 - x0 + 1, w + 2);
  EXPECT_LE(y1 - y0 + 1, h);
  // Turned a quarter: the box is tall and narrow.
  plot::Canvas v(100, 200, plot::kWhite);
  font.draw(v, "journey", 15, plot::kBlack, 50, 100, plot::HAlign::center, plot::VAlign::middle,
            /*vertical=*/true);
  int64_t vx0 = 100, vx1 = -1, vy0 = 200, vy1 = -1;
  for (int64_t y = 0; y < 200; ++y) {
    for (int64_t x = 0; x < 100; ++x) {
      if (v.at(x, y).r < 128)
        vx0 = std::min(vx0, x), vx1 = std::max(vx1, x), vy0 = std::min(vy0, y),
        vy1 = std::max(vy1, y);
    }
  }
  EXPECT_GT(vy1 - vy0, 2 * (vx1 - vx0));
}

TEST(Font, MissingFontIsAClearError) {
  EXPECT_THROW(plot::Font("/nonexistent/font.ttf"), std::runtime_error);
  const char* old = std::getenv("SELFATTN_FONT");
  ::setenv("SELFATTN_FONT", "/nonexistent/font.ttf", 1);
  try {
    plot::Font::load_default();
    FAIL() << "expected an exception";
  } catch (const std::runtime_error& e) {
    EXPECT_NE(std::string(e.what()).find("/nonexistent/font.ttf"), std::string::npos);
  }
  if (old != nullptr)
    ::setenv("SELFATTN_FONT", old, 1);
  else
    ::unsetenv("SELFATTN_FONT");
}

TEST(Heatmap, CellsAndColourBarShowTheValues) {
  const plot::Font font = test_font();
  // 3 x 3 with known values: 0 at (0, 0), 1 at (2, 2), 0.5 at (1, 1).
  const std::vector<float> values = {0.0f, 0.2f, 0.3f, 0.4f, 0.5f, 0.6f, 0.7f, 0.8f, 1.0f};
  llm_utils::ConstTensorView m(values.data(), {3, 3});
  plot::HeatmapOptions o;
  o.title = "test";
  o.row_labels = o.col_labels = {"a", "b", "c"};
  o.cell_values = plot::CellValues::never;
  plot::HeatmapLayout at;
  const plot::Canvas c = plot::render_heatmap(font, m, o, &at);
  EXPECT_EQ(at.cell, 80);
  EXPECT_GT(c.width(), at.grid_x + 3 * at.cell + at.bar_w);
  EXPECT_GT(c.height(), at.grid_y + 3 * at.cell);
  const auto centre = [&](int64_t i, int64_t j) {
    return c.at(at.grid_x + j * at.cell + at.cell / 2, at.grid_y + i * at.cell + at.cell / 2);
  };
  EXPECT_EQ(centre(0, 0), plot::viridis(0.0));
  EXPECT_EQ(centre(1, 1), plot::viridis(0.5));
  EXPECT_EQ(centre(2, 2), plot::viridis(1.0));
  // The bar: brightest at the top, darkest at the bottom.
  EXPECT_LE(colour_distance(c.at(at.bar_x + 5, at.bar_y), plot::viridis(1.0)), 12);
  EXPECT_LE(colour_distance(c.at(at.bar_x + 5, at.bar_y + at.bar_h - 1), plot::viridis(0.0)), 12);
  EXPECT_EQ(c.at(0, 0), plot::kWhite);
  // And it survives PNG.
  const Decoded d = decode(plot::encode_png(c));
  EXPECT_EQ(d.width, c.width());
  EXPECT_EQ(d.rgb, c.pixels());
}

TEST(Heatmap, PrintsValuesInContrastingInk) {
  const plot::Font font = test_font();
  const std::vector<float> values = {0.0f, 1.0f};
  llm_utils::ConstTensorView m(values.data(), {1, 2});
  plot::HeatmapLayout at;
  const plot::Canvas c = plot::render_heatmap(font, m, {}, &at);
  // Text inside the dark cell is light and inside the bright cell dark.
  bool light_on_dark = false, dark_on_bright = false;
  for (int64_t y = at.grid_y; y < at.grid_y + at.cell; ++y) {
    for (int64_t x = 0; x < at.cell; ++x) {
      light_on_dark |= plot::luminance(c.at(at.grid_x + x, y)) > 0.8;
      dark_on_bright |= plot::luminance(c.at(at.grid_x + at.cell + x, y)) < 0.05;
    }
  }
  EXPECT_TRUE(light_on_dark);
  EXPECT_TRUE(dark_on_bright);
}

TEST(Heatmap, RejectsBadInput) {
  const plot::Font font = test_font();
  const std::vector<float> values(4, 0.25f);
  plot::HeatmapOptions o;
  o.row_labels = {"only one"};
  EXPECT_THROW(plot::render_heatmap(font, llm_utils::ConstTensorView(values.data(), {2, 2}), o),
               std::invalid_argument);
  EXPECT_THROW(plot::render_heatmap(font, llm_utils::ConstTensorView(values.data(), {4}), {}),
               std::invalid_argument);
  plot::HeatmapOptions inverted;
  inverted.vmin = 1.0;
  inverted.vmax = 0.0;
  EXPECT_THROW(
      plot::render_heatmap(font, llm_utils::ConstTensorView(values.data(), {2, 2}), inverted),
      std::invalid_argument);
  // A constant matrix (one token: weight 1) still gets a scale.
  EXPECT_NO_THROW(
      plot::render_heatmap(font, llm_utils::ConstTensorView(values.data(), {1, 1}), {}));
}

TEST(Heatmap, LongSequencesAreDrawnAsBlockMeans) {
  const plot::Font font = test_font();
  // 1000 tokens: more than kMaxHeatmapCells, so 3 x 3 blocks (334 cells a side). The weight is
  // on the diagonal, so the first block holds 3 ones among 9 cells.
  const int64_t n = 1000;
  std::vector<float> values(static_cast<size_t>(n * n), 0.0f);
  for (int64_t i = 0; i < n; ++i) values[static_cast<size_t>(i * n + i)] = 1.0f;
  plot::HeatmapLayout at;
  const plot::Canvas c =
      plot::render_heatmap(font, llm_utils::ConstTensorView(values.data(), {n, n}), {}, &at);
  EXPECT_EQ(at.block, 3);
  EXPECT_LT(c.width(), 1400);
  EXPECT_LT(c.height(), 1400);
  const auto centre = [&](int64_t i, int64_t j) {
    return c.at(at.grid_x + j * at.cell + at.cell / 2, at.grid_y + i * at.cell + at.cell / 2);
  };
  EXPECT_EQ(centre(0, 0), plot::viridis(static_cast<float>(3.0 / 9.0)));
  EXPECT_EQ(centre(0, 1), plot::viridis(0.0));
  // The last block holds token 999 alone: mean 1, the top of the scale.
  EXPECT_EQ(centre(333, 333), plot::viridis(1.0));
}

TEST(LinePlot, DrawsTheCurveAtTheRequestedSize) {
  const plot::Font font = test_font();
  std::vector<double> loss;
  for (int i = 0; i < 200; ++i) loss.push_back(std::exp(-i / 30.0));
  plot::LinePlotOptions o;
  o.title = "loss";
  const plot::Canvas c = plot::render_line_plot(font, loss, o);
  EXPECT_EQ(c.width(), 820);
  EXPECT_EQ(c.height(), 500);
  int64_t curve = 0;
  for (int64_t y = 0; y < c.height(); ++y) {
    for (int64_t x = 0; x < c.width(); ++x) curve += c.at(x, y) == plot::Rgb{8, 81, 156};
  }
  EXPECT_GT(curve, 300);  // a 2 px line across most of the width
  EXPECT_EQ(decode(plot::encode_png(c)).height, 500);
  // Zero or negative losses cannot go on a log axis: left out, or an error if nothing is left.
  loss[5] = 0.0;
  EXPECT_NO_THROW(plot::render_line_plot(font, loss, o));
  EXPECT_THROW(plot::render_line_plot(font, {0.0, -1.0}, o), std::invalid_argument);
}
