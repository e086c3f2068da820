#pragma once
/// \file cuda.hpp
/// The CUDA path (docs/cuda.md): `Backend::cuda` runs the attention kernels on an NVIDIA GPU,
/// per call (AttentionOptions::backend), per module (Module::set_backend), from Python
/// (`set_backend("cuda")`) and the CLI (`--backend cuda`). The library's tensors live in host
/// memory: a call copies its inputs to the device, runs the FlashAttention-2 kernels there and
/// copies the results back (float32 on SIMT kernels; bfloat16 on tensor cores for head dims 64
/// and 128). It takes the causal mask, additive masks, grouped-query heads and strided
/// layouts; the modern variants (window, softcap, ALiBi, sinks, packed or paged sequences) stay
/// on the CPU backends. The CUDA code is built only when CMake finds a CUDA compiler.
///
/// Example:
/// \code
///   if (llm_utils::cuda_device_count() > 0) mha.set_backend(llm_utils::Backend::cuda);
/// \endcode

#include <string>

namespace llm_utils {

/// Whether this build has the CUDA kernels (CMake found a CUDA compiler).
bool cuda_built();

/// CUDA devices this process can use: 0 in a build without CUDA, without a driver or without
/// a device.
int cuda_device_count();

/// "NVIDIA H200 (compute capability 9.0, 139.8 GiB)": device `device` as the driver names it.
/// ArgumentError when there is no such device (or no CUDA at all).
std::string cuda_device_description(int device = 0);

}  // namespace llm_utils
