#pragma once
// The pictures the subcommands write: attention heatmaps (heatmap, demo --heatmap) and loss
// curves (train). Each renders with the default font and writes the PNG atomically.

#include <string>
#include <vector>

#include "llm_utils/tensor.hpp"
#include "plot/heatmap.hpp"
#include "plot/line_plot.hpp"

namespace selfattn {

/// `weights` is one (N, N) attention matrix.
void write_attention_heatmap(const std::string& path, llm_utils::ConstTensorView weights,
                             const plot::HeatmapOptions& options);

void write_line_plot(const std::string& path, const std::vector<double>& values,
                     const plot::LinePlotOptions& options);

/// Splits "Your,journey,starts" at commas, trimming spaces around each label.
std::vector<std::string> split_tokens(const std::string& list);

/// Throws ArgumentError now, before any work, when `path`'s folder does not exist, so that a
/// long run does not fail at the end for a typo. Empty paths pass.
void check_output_folder(const std::string& path, const std::string& flag);

}  // namespace selfattn
