#!/usr/bin/env bash
# Installs what is missing, builds Release, and runs every suite through ctest: unit,
# integration (real turnpike and turnpike-sim processes), and the official OpenAI and
# Anthropic SDKs. Exit 0 only if all pass; the last lines are ctest's summary.
set -euo pipefail
cd "$(dirname "$0")/.."

scripts/deps.sh
cmake --preset release -DTURNPIKE_TESTS=ON -DTURNPIKE_BENCH=ON
cmake --build --preset release
# Every parser of outside input under libFuzzer (clang, ASan, UBSan), briefly.
FUZZ_SECONDS=${FUZZ_SECONDS:-10} scripts/fuzz.sh
# The SDK versions are pinned by tests/clients/package-lock.json.
(cd tests/clients && npm ci --no-audit --no-fund --loglevel=error)
ctest --test-dir build --output-on-failure --timeout 300
