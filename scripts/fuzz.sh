#!/usr/bin/env bash
# Builds the libFuzzer targets (tests/fuzz) with clang and runs each for FUZZ_SECONDS
# (default 60), growing the corpus under tests/fuzz/corpus.
set -euo pipefail
cd "$(dirname "$0")/.."
seconds=${FUZZ_SECONDS:-60}
cmake -S tests/fuzz -B build-fuzz -G Ninja -DCMAKE_CXX_COMPILER=clang++ \
  -DFUZZ_SECONDS="$seconds" >/dev/null
cmake --build build-fuzz
ctest --test-dir build-fuzz --output-on-failure
