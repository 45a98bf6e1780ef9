#!/usr/bin/env bash
# clang-tidy on include/ (the committed .clang-tidy): one translation unit that includes every
# public header and instantiates each public function for float and double, in the baseline and
# the -march=native build. Exits non-zero on any finding. Usage: bash scripts/tidy.sh
set -euo pipefail
cd "$(dirname "$0")/.."
source scripts/deps.sh
smax_require_packages clang-tidy libeigen3-dev libxsimd-dev xtl-dev

# The two ISA builds side by side (one core each); each prints its findings, and either failing
# fails the script.
pids=()
for flags in "" "-march=native"; do
  echo "smax: clang-tidy include/ ${flags:-(baseline ISA)}"
  clang-tidy --quiet tools/tidy_all.cpp -- -std=c++17 -O2 ${flags} -Iinclude -I/usr/include/eigen3 &
  pids+=($!)
done
status=0
for pid in "${pids[@]}"; do wait "$pid" || status=1; done
exit "$status"
