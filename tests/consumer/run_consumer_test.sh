#!/usr/bin/env bash
# Installs the built library into a scratch prefix, builds tests/consumer against it with
# find_package(llm_utils CONFIG), runs it and checks the book's first context vector.
set -euo pipefail
build_dir=$1
source_dir=$(cd "$(dirname "$0")" && pwd)
scratch=$(mktemp -d)
trap 'rm -rf "$scratch"' EXIT
cmake --install "$build_dir" --prefix "$scratch/prefix" >/dev/null
cmake -S "$source_dir" -B "$scratch/build" -DCMAKE_PREFIX_PATH="$scratch/prefix" \
  -DCMAKE_BUILD_TYPE=Release >/dev/null
cmake --build "$scratch/build" >/dev/null
out=$("$scratch/build/consumer")
echo "consumer printed: $out"
[ "$out" = "-0.0739 0.0713" ] || { echo "expected -0.0739 0.0713" >&2; exit 1; }
