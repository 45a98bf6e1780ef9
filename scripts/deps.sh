# Sourced by the scripts beside it: installs missing Debian 12 packages (as root), or says which
# are missing (otherwise). Usage: smax_require_packages pkg...
smax_require_packages() {
  local missing=()
  local pkg
  for pkg in "$@"; do
    if ! dpkg-query -W -f='${Status}' "$pkg" 2>/dev/null | grep -q "install ok installed"; then
      missing+=("$pkg")
    fi
  done
  [ ${#missing[@]} -eq 0 ] && return 0
  if [ "$(id -u)" -ne 0 ]; then
    echo "smax: missing Debian packages: ${missing[*]}" >&2
    echo "      run as root, or: sudo apt-get install -y ${missing[*]}" >&2
    return 1
  fi
  echo "smax: installing ${missing[*]}" >&2
  export DEBIAN_FRONTEND=noninteractive
  apt-get update -qq
  apt-get install -y -qq --no-install-recommends "${missing[@]}"
}

# What building smax's tests, benchmarks and examples needs (the library alone needs only
# libeigen3-dev and libxsimd-dev).
SMAX_BUILD_PACKAGES=(cmake make g++ libeigen3-dev libxsimd-dev xtl-dev catch2 libbenchmark-dev)
# The benchmark's peers (oneDNN, whose CMake config needs the OpenCL development files; PyTorch's
# CPU operators, libtorch) and plots.
SMAX_BENCH_PACKAGES=(libdnnl-dev ocl-icd-opencl-dev opencl-headers libtorch-dev python3
                     python3-matplotlib)
# The examples' data and libraries: Fashion-MNIST (zlib), vocabulary-parallel MPI.
SMAX_EXAMPLE_PACKAGES=(zlib1g-dev dataset-fashion-mnist libopenmpi-dev openmpi-bin)
# The sanitizer and second-compiler builds: clang-14, its sanitizer runtimes, libFuzzer, LLVM's
# OpenMP runtime (ThreadSanitizer understands it), clang-tidy.
SMAX_CLANG_PACKAGES=(clang-14 libclang-rt-14-dev libfuzzer-14-dev libomp-14-dev clang-tidy)
