#!/usr/bin/env bash
# The whole GPU check of the CUDA path, as one command for a session that is lent a GPU machine
# (the `device` tool: 15 minutes of device time in all, so one prepared run):
#
#   bash bench/cuda/device_check.sh        (from the repository root, $OUT set by the tool)
#
# 0. where the host CPU has AMX-BF16, builds and runs tests/amx/amx_hardware_check.cpp (g++
#    alone): the AMX tile code against its error bound, its order and speed;
# 1. builds tests/cuda/test_cuda_kernels.cu with nvcc alone (the library's other dependencies
#    need not be there) and runs it: the kernels against a double reference;
# 2. runs bench/cuda/compare_sdpa.py: parity with float32 math and PyTorch's SDPA, then the
#    TFLOP/s table beside SDPA's flash backend, within BUDGET_S seconds.
# Everything it prints is also under $OUT (log.txt, amx_check.txt, cuda_parity.txt, cuda_bench.md,
# .json).
set -uo pipefail
OUT=${OUT:-/tmp/llm_utils_cuda_out}
BUDGET_S=${BUDGET_S:-240}
mkdir -p "$OUT"
exec > >(tee "$OUT/log.txt") 2>&1
nvidia-smi -L
nvcc --version | tail -1
status=0
# The host's CPU first (seconds): where it has AMX-BF16, the AMX tile code is checked on it
# (tests/amx/amx_hardware_check.cpp; this project has had no other machine with AMX).
echo "== amx_hardware_check"
if grep -qw amx_bf16 /proc/cpuinfo; then
  if g++ -std=c++20 -O2 -mamx-tile -mamx-bf16 -Isrc -Iinclude -Itests \
       tests/amx/amx_hardware_check.cpp -o /tmp/amx_hardware_check; then
    /tmp/amx_hardware_check | tee "$OUT/amx_check.txt" || status=1
  else
    echo "build of amx_hardware_check failed"
    status=1
  fi
else
  echo "no AMX-BF16 on this host ($(grep -m1 'model name' /proc/cpuinfo))"
fi
echo "== test_cuda_kernels"
if nvcc -std=c++17 -O3 -gencode=arch=compute_90,code=sm_90 -Isrc src/cuda/forward.cu \
     src/cuda/backward.cu tests/cuda/test_cuda_kernels.cu -o /tmp/test_cuda_kernels; then
  /tmp/test_cuda_kernels || status=1
else
  echo "build of test_cuda_kernels failed"
  status=1
fi
echo "== compare_sdpa"
PYTHONUNBUFFERED=1 python3 bench/cuda/compare_sdpa.py --out "$OUT" --budget-s "$BUDGET_S" || status=1
echo "device_check status: $status"
exit $status
