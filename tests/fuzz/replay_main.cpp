// The replay driver: the fuzz targets without libFuzzer. Runs LLVMFuzzerTestOneInput on every
// file named on the command line and on every file of every directory named there (sorted, so
// that a log reads the same on every machine), which is how CI replays the seed corpus and how a
// finding is reproduced with an ordinary compiler and debugger. A finding traps (see
// fuzz_common.hpp), so the driver only returns normally when every input passed.
#include "fuzz_common.hpp"

#include <algorithm>
#include <cstdint>
#include <cstdio>
#include <filesystem>
#include <fstream>
#include <iterator>
#include <string>
#include <vector>

extern "C" int LLVMFuzzerTestOneInput(const std::uint8_t* data, std::size_t size);

int main(int argc, char** argv) {
  namespace fs = std::filesystem;
  std::vector<fs::path> files;
  for (int a = 1; a < argc; ++a) {
    const fs::path p(argv[a]);
    if (fs::is_directory(p)) {
      for (const auto& e : fs::directory_iterator(p))
        if (e.is_regular_file()) files.push_back(e.path());
    } else if (fs::is_regular_file(p)) {
      files.push_back(p);
    } else {
      std::fprintf(stderr, "replay: %s is neither a file nor a directory\n", argv[a]);
      return 2;
    }
  }
  std::sort(files.begin(), files.end());
  if (files.empty()) {
    // An empty corpus would pass without testing anything: a mistake in the test's setup.
    std::fprintf(stderr, "replay: no input files (usage: %s <file or directory>...)\n", argv[0]);
    return 2;
  }
  for (const auto& f : files) {
    std::ifstream in(f, std::ios::binary);
    const std::vector<char> bytes((std::istreambuf_iterator<char>(in)),
                                  std::istreambuf_iterator<char>());
    std::printf("replay: %s (%zu bytes)\n", f.string().c_str(), bytes.size());
    std::fflush(stdout);
    LLVMFuzzerTestOneInput(reinterpret_cast<const std::uint8_t*>(bytes.data()), bytes.size());
  }
  for (const auto& s : smax_fuzz::skip_counters())
    std::printf("replay: skipped the known finding '%s' %lld times (SMAX_FUZZ_STRICT=1: no skips)\n",
                s.name, s.count);
  const auto& o = smax_fuzz::outcomes();
  std::printf("replay: %zu inputs passed: %lld calls checked against the reference, %lld threw "
              "as required, %lld outside the checked domain\n",
              files.size(), o.checked, o.threw, o.unchecked);
  return 0;
}
