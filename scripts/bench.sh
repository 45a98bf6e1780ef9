#!/usr/bin/env bash
# The main job: builds the benchmarks (Release, this machine's ISA) and runs the sweep over K,
# writing bench/results/sweep.json (one thread) and bench/results/threads.json (1 and 2 threads,
# when OpenMP is available) and printing their tables. Installs the Debian packages it needs
# when run as root. Usage: bash scripts/bench.sh [extra Google Benchmark flags, for both runs]
set -euo pipefail
cd "$(dirname "$0")/.."
source scripts/deps.sh
smax_require_packages "${SMAX_BUILD_PACKAGES[@]}" "${SMAX_BENCH_PACKAGES[@]}"

cmake --workflow --preset bench
mkdir -p bench/results
out=bench/results/sweep.json
./build/bench/bench/smax_bench --benchmark_out="$out" --benchmark_out_format=json "$@"
threads=build/bench/bench/smax_bench_threads
if [ -x "$threads" ]; then
  "$threads" --benchmark_out=bench/results/threads.json --benchmark_out_format=json "$@"
fi
/usr/bin/python3 bench/table.py "$out" --summary
/usr/bin/python3 bench/table.py "$out" --variants
if [ -f bench/results/threads.json ] && [ -x "$threads" ]; then
  /usr/bin/python3 bench/table.py bench/results/threads.json --threads
fi
