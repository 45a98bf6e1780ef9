#!/usr/bin/env bash
# Builds and runs every smax test on Debian 12: the unit tests (baseline ISA and -march=native),
# the fuzz corpus replay, the benchmark smoke run, the examples, and the shared contract against
# the installed package. Installs the Debian packages it needs when run as root.
#
#   bash scripts/test.sh             the test workflow preset (what the README and CI run)
#   bash scripts/test.sh sanitize    clang-14 with AddressSanitizer + UndefinedBehaviorSanitizer
#   bash scripts/test.sh sanitize-ci the same on the suites CI runs (fast to build), and the replay
#   bash scripts/test.sh tsan        clang-14 with ThreadSanitizer: std::thread and OpenMP tests
#   bash scripts/test.sh large       sizes beyond 2^31 elements (about 17 GiB of memory)
set -euo pipefail
cd "$(dirname "$0")/.."
source scripts/deps.sh
preset=${1:-test}
case "$preset" in
  test) smax_require_packages "${SMAX_BUILD_PACKAGES[@]}" "${SMAX_EXAMPLE_PACKAGES[@]}" ;;
  sanitize | sanitize-ci | tsan) smax_require_packages "${SMAX_BUILD_PACKAGES[@]}" "${SMAX_CLANG_PACKAGES[@]}" ;;
  large) smax_require_packages "${SMAX_BUILD_PACKAGES[@]}" ;;
  *) echo "usage: bash scripts/test.sh [test|sanitize|sanitize-ci|tsan|large]" >&2; exit 2 ;;
esac

# The shared contract lives beside the repository (../shared/contract).
if [ -z "${SMAX_CONTRACT_DIR:-}" ]; then
  for candidate in ../shared/contract /work/shared/contract; do
    if [ -f "$candidate/CMakeLists.txt" ]; then
      SMAX_CONTRACT_DIR=$(cd "$candidate" && pwd)
      break
    fi
  done
fi
if [ "$preset" = test ] && [ -z "${SMAX_CONTRACT_DIR:-}" ]; then
  echo "smax: the shared contract was not found; set SMAX_CONTRACT_DIR" >&2
  exit 1
fi
export SMAX_CONTRACT_DIR=${SMAX_CONTRACT_DIR:-}

cmake --workflow --preset "$preset"
