#!/usr/bin/env bash
# The main job: builds the benchmarks (Release, this machine's ISA) and runs the sweep over K,
# writing bench/results/<name>.json and printing the table. Installs the Debian packages it needs
# when run as root. Usage: bash scripts/bench.sh [extra Google Benchmark flags]
set -euo pipefail
cd "$(dirname "$0")/.."
source scripts/deps.sh
smax_require_packages "${SMAX_BUILD_PACKAGES[@]}" "${SMAX_BENCH_PACKAGES[@]}"

cmake --workflow --preset bench
mkdir -p bench/results
out=bench/results/sweep.json
./build/bench/bench/smax_bench --benchmark_out="$out" --benchmark_out_format=json "$@"
/usr/bin/python3 bench/table.py "$out"
