#pragma once
// Viridis, matplotlib's default colormap: perceptually uniform (equal steps in value look like
// equal steps in colour), readable in greyscale and by colour-blind readers, dark for low values.

#include "plot/canvas.hpp"

namespace selfattn::plot {

/// t in [0, 1] (clamped) -> colour. NaN gives kNanColour.
Rgb viridis(double t);

/// Where a value is NaN (e.g. attention of a NaN input): a neutral grey outside the colormap.
inline constexpr Rgb kNanColour{160, 160, 160};

/// Relative luminance in [0, 1], to pick black or white text over a colour.
double luminance(Rgb c);

}  // namespace selfattn::plot
