#pragma once
// A labelled heatmap of a matrix, drawn the way people read attention weights: row i is the
// query token, column j the key token it attends to, colour the weight, a colour bar with values.

#include <optional>
#include <string>
#include <vector>

#include "llm_utils/tensor.hpp"
#include "plot/canvas.hpp"
#include "plot/font.hpp"

namespace selfattn::plot {

enum class CellValues { automatic, always, never };

struct HeatmapOptions {
  std::string title;
  std::string x_title = "key token";
  std::string y_title = "query token";
  std::string bar_title = "attention weight";
  /// Labels of the rows and columns; empty: 0..N-1. Otherwise exactly one per row / column.
  std::vector<std::string> row_labels;
  std::vector<std::string> col_labels;
  /// Ends of the colour scale; default: the smallest and largest finite value.
  std::optional<double> vmin, vmax;
  /// automatic: print each cell's value when the matrix is at most 16 x 16.
  CellValues cell_values = CellValues::automatic;
};

/// Where render_heatmap put things, in pixels: cell (i, j) covers
/// [grid_x + j * cell, + cell) x [grid_y + i * cell, + cell); the bar runs from vmax at bar_y to
/// vmin at bar_y + bar_h - 1.
struct HeatmapLayout {
  int64_t grid_x = 0, grid_y = 0, cell = 0;
  int64_t bar_x = 0, bar_y = 0, bar_w = 0, bar_h = 0;
  /// 1, or k when the matrix had more than kMaxHeatmapCells rows or columns and each cell shows
  /// the mean of a k x k block of tokens.
  int64_t block = 1;
};

/// Matrices larger than this are drawn as means of k x k blocks, so that the picture stays
/// around 1000 pixels wide whatever the sequence length.
inline constexpr int64_t kMaxHeatmapCells = 400;

/// Renders a 2-D (rows, cols) matrix. Throws std::invalid_argument on another rank, an empty
/// matrix, a label count that does not match, or vmin >= vmax. Block means (see HeatmapLayout)
/// are labelled with their first token, and the axis titles say so.
Canvas render_heatmap(const Font& font, llm_utils::ConstTensorView matrix,
                      const HeatmapOptions& options, HeatmapLayout* layout = nullptr);

}  // namespace selfattn::plot
