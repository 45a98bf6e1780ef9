// oneDNN as a peer: its softmax primitive over the benchmark's own buffers, single-threaded.
// Included only when the build found oneDNN (SMAX_BENCH_HAVE_DNNL).
#pragma once

#include <oneapi/dnnl/dnnl.hpp>

#include <string>
#include <unordered_map>

// oneDNN built with OpenMP threading (Debian's is) starts a team as wide as the machine; the
// sweep is single-threaded, so the team is cut to one thread. The build links the OpenMP runtime
// (not -fopenmp, so the rest of the binary is compiled as smax's users compile it) and says so.
#if defined(SMAX_BENCH_DNNL_OMP)
#include <omp.h>
#endif

namespace smax_bench::dnnl_peer {

/// Limits oneDNN to the calling thread; returns the threads it may use afterwards (0: unknown,
/// oneDNN's threading is not OpenMP or its runtime was not linked).
inline int single_thread() {
#if defined(SMAX_BENCH_DNNL_OMP)
  omp_set_num_threads(1);
  return omp_get_max_threads();
#else
  return 0;
#endif
}

/// "2.6.3 (cpu runtime omp)", for the benchmark's context.
inline std::string version() {
  const dnnl_version_t* v = dnnl_version();
  const char* runtime = v->cpu_runtime == DNNL_RUNTIME_OMP   ? "omp"
                        : v->cpu_runtime == DNNL_RUNTIME_TBB ? "tbb"
                        : v->cpu_runtime == DNNL_RUNTIME_SEQ ? "seq"
                                                             : "other";
  return std::to_string(v->major) + "." + std::to_string(v->minor) + "." +
         std::to_string(v->patch) + " (cpu runtime " + runtime + ")";
}

/// Softmax or log-softmax forward (prop_kind::forward_inference: no workspace is kept for a
/// backward pass, as in serving) of an N x K f32 tensor along axis 1 (K), in row-major (tag ab)
/// or column-major (tag ba) memory, reading x and writing y in place of the caller's buffers.
/// Built once, outside the timed loop.
class softmax {
 public:
  softmax(bool log, dnnl::memory::dim n, dnnl::memory::dim k, bool row_major, const float* x,
          float* y) {
    using tag = dnnl::memory::format_tag;
    const dnnl::memory::desc md({n, k}, dnnl::memory::data_type::f32,
                                row_major ? tag::ab : tag::ba);
    const auto alg = log ? dnnl::algorithm::softmax_log : dnnl::algorithm::softmax_accurate;
    const auto prop = dnnl::prop_kind::forward_inference;
#if DNNL_VERSION_MAJOR >= 3
    // oneDNN 3.x folded softmax_v2 back into softmax_forward and dropped the op descriptors.
    const dnnl::softmax_forward::primitive_desc pd(engine_, prop, alg, md, md, 1);
    primitive_ = dnnl::softmax_forward(pd);
#else
    // oneDNN 2.x (Debian 12: 2.6): softmax_forward knows only the accurate algorithm; softmax_v2
    // takes the algorithm and separate source and destination descriptors.
    const dnnl::softmax_v2_forward::primitive_desc pd(
        dnnl::softmax_v2_forward::desc(prop, alg, md, md, 1), engine_);
    primitive_ = dnnl::softmax_v2_forward(pd);
#endif
    impl_ = pd.impl_info_str();
    args_ = {{DNNL_ARG_SRC, dnnl::memory(md, engine_, const_cast<float*>(x))},
             {DNNL_ARG_DST, dnnl::memory(md, engine_, y)}};
  }

  void operator()() {
    primitive_.execute(stream_, args_);
    stream_.wait();
  }

  /// The implementation oneDNN dispatched to, e.g. "jit:avx2" or "ref:any".
  const std::string& impl() const noexcept { return impl_; }

 private:
  dnnl::engine engine_{dnnl::engine::kind::cpu, 0};
  dnnl::stream stream_{engine_};
  dnnl::primitive primitive_;
  std::unordered_map<int, dnnl::memory> args_;
  std::string impl_;
};

}  // namespace smax_bench::dnnl_peer
