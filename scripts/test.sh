#!/usr/bin/env bash
# Builds and runs every smax test on Debian 12: the unit tests (baseline ISA and -march=native),
# the benchmark smoke run, the examples, and the shared contract against the installed package.
# Installs the Debian packages it needs when run as root. Usage: bash scripts/test.sh
set -euo pipefail
cd "$(dirname "$0")/.."
source scripts/deps.sh
smax_require_packages "${SMAX_BUILD_PACKAGES[@]}" "${SMAX_EXAMPLE_PACKAGES[@]}"

# The shared contract lives beside the repository (../shared/contract).
if [ -z "${SMAX_CONTRACT_DIR:-}" ]; then
  for candidate in ../shared/contract /work/shared/contract; do
    if [ -f "$candidate/CMakeLists.txt" ]; then
      SMAX_CONTRACT_DIR=$(cd "$candidate" && pwd)
      break
    fi
  done
fi
if [ -z "${SMAX_CONTRACT_DIR:-}" ]; then
  echo "smax: the shared contract was not found; set SMAX_CONTRACT_DIR" >&2
  exit 1
fi
export SMAX_CONTRACT_DIR

cmake --workflow --preset test
