#include "pictures.hpp"

#include <filesystem>

#include "llm_utils/error.hpp"
#include "plot/font.hpp"
#include "plot/png.hpp"

namespace selfattn {

void write_attention_heatmap(const std::string& path, llm_utils::ConstTensorView weights,
                             const plot::HeatmapOptions& options) {
  const plot::Font font = plot::Font::load_default();
  plot::write_png(path, plot::render_heatmap(font, weights, options));
}

void write_line_plot(const std::string& path, const std::vector<double>& values,
                     const plot::LinePlotOptions& options) {
  const plot::Font font = plot::Font::load_default();
  plot::write_png(path, plot::render_line_plot(font, values, options));
}

std::vector<std::string> split_tokens(const std::string& list) {
  std::vector<std::string> out;
  size_t start = 0;
  while (true) {
    const size_t comma = list.find(',', start);
    std::string token = list.substr(start, comma == std::string::npos ? comma : comma - start);
    const size_t a = token.find_first_not_of(" \t"), b = token.find_last_not_of(" \t");
    out.push_back(a == std::string::npos ? std::string() : token.substr(a, b - a + 1));
    if (comma == std::string::npos) break;
    start = comma + 1;
  }
  return out;
}

void check_output_folder(const std::string& path, const std::string& flag) {
  if (path.empty()) return;
  const std::filesystem::path parent = std::filesystem::path(path).parent_path();
  std::error_code ec;
  if (!parent.empty() && !std::filesystem::is_directory(parent, ec)) {
    throw llm_utils::IoError(flag + " '" + path + "': folder '" + parent.string() +
                             "' does not exist");
  }
}

}  // namespace selfattn
