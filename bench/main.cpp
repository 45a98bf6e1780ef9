// smax_bench's entry point: Google Benchmark's main, plus the context that makes a results file
// readable later (the instruction set smax and Eigen were compiled for, oneDNN's version and
// threads) and a non-zero exit status when an implementation disagreed with its reference (so
// that the CTest smoke run fails on it; Google Benchmark itself exits 0 after skipped runs).
#include "common.hpp"

#include <smax/smax.hpp>

#ifdef SMAX_BENCH_HAVE_DNNL
#include "dnnl_peer.hpp"
#endif
#ifdef SMAX_BENCH_HAVE_TORCH
#include "torch_peer.hpp"
#endif

#include <string>

int main(int argc, char** argv) {
  benchmark::Initialize(&argc, argv);
  if (benchmark::ReportUnrecognizedArguments(argc, argv)) return 1;

  using arch = smax::detail::best_arch;
  benchmark::AddCustomContext("smax_arch", arch::name());
  benchmark::AddCustomContext(
      "smax_float_lanes", std::to_string(smax::detail::lanes<smax::detail::vec_t<float, arch>>));
  benchmark::AddCustomContext("eigen_simd", Eigen::SimdInstructionSetsInUse());
  benchmark::AddCustomContext("compiler", __VERSION__);
#ifdef SMAX_BENCH_HAVE_DNNL
  const int threads = smax_bench::dnnl_peer::single_thread();
  benchmark::AddCustomContext("dnnl_version", smax_bench::dnnl_peer::version());
  benchmark::AddCustomContext("dnnl_threads", threads > 0 ? std::to_string(threads) : "unknown");
#else
  benchmark::AddCustomContext("dnnl_version", "not built");
#endif
#ifdef SMAX_BENCH_HAVE_TORCH
  const int torch_threads = smax_bench::torch_peer::single_thread();
  benchmark::AddCustomContext("torch_version", smax_bench::torch_peer::version());
  benchmark::AddCustomContext("torch_threads", std::to_string(torch_threads));
#else
  benchmark::AddCustomContext("torch_version", "not built");
#endif

  benchmark::RunSpecifiedBenchmarks();
  benchmark::Shutdown();
  return smax_bench::failures() == 0 ? 0 : 1;
}
